//! openraft's type configuration for partition groups, and the payload of a partition's Raft
//! entries (RFC 0006).
//!
//! Leader ids are standard Raft's (one leader per term), so a log id is exactly (term, index),
//! which is what the partition log's entry index stores. Nodes carry no data: brokers find each
//! other's replication endpoints in the cluster metadata.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

openraft::declare_raft_types!(
    /// openraft type configuration of a partition's Raft group.
    pub PartitionRaftConfig:
        D = Record,
        R = (),
        NodeId = u64,
        Node = openraft::EmptyNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A partition's Raft node.
pub type PartitionRaft = openraft::Raft<PartitionRaftConfig, super::state_machine::StateMachine>;
/// A log id (term, index).
pub type LogId = openraft::alias::LogIdOf<PartitionRaftConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<PartitionRaftConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<PartitionRaftConfig>;
/// A membership as stored with its log id.
pub type StoredMembership = openraft::alias::StoredMembershipOf<PartitionRaftConfig>;
/// A membership.
pub type Membership = openraft::Membership<u64, openraft::EmptyNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<PartitionRaftConfig>;
/// A snapshot with its data.
pub type Snapshot = openraft::alias::SnapshotOf<PartitionRaftConfig, super::snapshot::SnapshotData>;

/// The committed leader id of a term.
pub fn committed_leader(term: u64) -> openraft::alias::CommittedLeaderIdOf<PartitionRaftConfig> {
    openraft::vote::leader_id_std::CommittedLeaderId::new(term)
}

/// The log id (term, index).
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(committed_leader(term), index)
}

/// A tiering entry id as an openraft log id.
pub fn to_log_id(id: tiering::EntryId) -> LogId {
    log_id(id.term, id.index)
}

/// An openraft log id as a tiering entry id.
pub fn to_entry_id(id: &LogId) -> tiering::EntryId {
    tiering::EntryId {
        term: id.leader_id.term,
        index: id.index,
    }
}

/// Names one partition's group on the wire and in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic_id, self.partition)
    }
}

/// The application payload of a partition's Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A produce batch proposed by this node as leader, not yet stamped with offsets. Only ever
    /// appended by the node that proposed it; `id` finds the waiting request.
    Proposal {
        /// Finds the produce request waiting for the append outcome.
        id: u64,
        /// The leader's clock at the proposal (LogAppendTime, segment age).
        now_ms: i64,
        /// The batch.
        #[serde(with = "serde_bytes_compat")]
        batch: Bytes,
    },
    /// A batch as the leader stored it (offsets and epoch stamped), replicated to followers.
    Batch {
        /// The stored bytes.
        #[serde(with = "serde_bytes_compat")]
        batch: Bytes,
        /// The leader rolled its segment before this batch.
        first_in_segment: bool,
    },
    /// A proposal the leader refused or found duplicate: no bytes.
    Skip,
    /// A control entry of Strata's (offload progress, log start, ...).
    Control(Control),
    /// What the state machine reads back for a data or skip entry: only the Kafka offset after it.
    Applied {
        /// Kafka offset after the entry.
        next_offset: i64,
    },
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Proposal { id, batch, .. } => {
                write!(f, "proposal id={id} bytes={}", batch.len())
            }
            Record::Batch { batch, .. } => write!(f, "batch bytes={}", batch.len()),
            Record::Skip => f.write_str("skip"),
            Record::Control(c) => write!(f, "control {c:?}"),
            Record::Applied { next_offset } => write!(f, "applied next_offset={next_offset}"),
        }
    }
}

/// Control entries: facts every replica must agree on, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Control {
    /// The remote tier holds everything below `next_offset` (the leader uploaded it and recorded
    /// it in the manifest).
    Offloaded {
        /// End of the offloaded log.
        next_offset: i64,
    },
    /// The log start moved to `offset` (DeleteRecords).
    LogStart {
        /// New log start.
        offset: i64,
    },
}

/// The payload of a marker entry in the partition log (versioned JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum MarkerPayload {
    /// openraft's blank entry (a leader's first entry of its term).
    Blank,
    /// A membership change.
    Membership(Membership),
    /// A Strata control entry.
    Control(Control),
}

impl MarkerPayload {
    /// The stored encoding: a version byte, then JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        // Serialising these plain enums cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Decodes a stored marker.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((1, json)) => {
                serde_json::from_slice(json).map_err(|e| format!("marker payload: {e}"))
            }
            Some((v, _)) => Err(format!("marker payload version {v} unsupported")),
            None => Err("empty marker payload".into()),
        }
    }
}

/// `Bytes` as a serde byte string (openraft serialises entries only where Strata does not use its
/// own wire encoding; kept for completeness).
mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(d).map(Bytes::from)
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_payloads_round_trip_and_are_versioned() {
        for m in [
            MarkerPayload::Blank,
            MarkerPayload::Control(Control::Offloaded { next_offset: 42 }),
            MarkerPayload::Membership(Membership::new_with_defaults(
                vec![[1u64, 2, 3].into()],
                [1u64, 2, 3, 4],
            )),
        ] {
            assert_eq!(MarkerPayload::decode(&m.encode()), Ok(m));
        }
        assert!(MarkerPayload::decode(b"\x02{}").is_err());
        assert!(MarkerPayload::decode(b"").is_err());
    }
}
