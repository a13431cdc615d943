//! openraft state machine adapter around the pure [`crate::state::apply`], with durable snapshots.
//!
//! The state lives in memory; `apply` does not write to disk. Durability comes from snapshots plus
//! the log: a snapshot (built, or installed from the leader) is written to `snapshot` atomically
//! (tmp, fsync, rename, fsync dir) before it becomes the current snapshot, and openraft purges log
//! entries only up to the current snapshot. On open the state is loaded from that file; openraft
//! then re-applies committed entries after it (the log store persists the committed id).
//!
//! File `snapshot`: magic `STRSNP01`, one frame with the [`SnapshotMeta`], one frame with the
//! snapshot data. The data is exactly what travels to followers: a JSON [`SnapshotPayload`].

use std::io;
use std::io::Cursor;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use futures::Stream;
use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use parking_lot::Mutex;
use serde::Deserialize;
use serde::Serialize;

use super::file_util;
use super::file_util::Frame;
use super::LogId;
use super::Response;
use super::Snapshot;
use super::SnapshotMeta;
use super::StoredMembership;
use super::TypeConfig;
use crate::state::apply;
use crate::state::MetadataState;
use crate::state::Outcome;

const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8; 8] = b"STRSNP01";
const SNAPSHOT_FORMAT: u32 = 1;

/// Snapshot data as sent to followers and stored on disk.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotPayload {
    /// Format version of this payload.
    pub format: u32,
    /// The metadata at the snapshot's last log id.
    pub state: MetadataState,
}

/// The state machine store. Cheap to clone; clones share the state (the clone is the builder).
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
    /// Index of the last applied log entry (0 before any); changes after every applied batch.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

struct Inner {
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: MetadataState,
    /// Current snapshot: its meta and data bytes (also on disk).
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

impl StateMachineStore {
    /// Open the state machine in `dir`, loading the last durable snapshot if there is one.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        file_util::prepare_dir(&dir)?;
        let mut inner = Inner {
            dir,
            last_applied: None,
            membership: StoredMembership::default(),
            state: MetadataState::default(),
            snapshot: None,
        };
        if let Some(bytes) = file_util::read_optional(&inner.dir, SNAPSHOT_FILE)? {
            let (meta, data) = decode_snapshot_file(&bytes)?;
            inner.load(&meta, data)?;
        }
        let index = inner.last_applied.map_or(0, |l| l.index);
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            applied: Arc::new(tokio::sync::watch::Sender::new(index)),
        })
    }

    /// Watch the index of the last applied entry: it changes after each applied batch and each
    /// installed snapshot, after the state reflects it.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn publish_applied(&self) {
        let index = self.inner.lock().last_applied.map_or(0, |l| l.index);
        self.applied.send_replace(index);
    }

    /// Read the current metadata.
    pub fn read<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        f(&self.inner.lock().state)
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.lock().last_applied
    }
}

impl Inner {
    /// Make `(meta, data)` the current snapshot and state. The caller has made it durable.
    fn load(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
        let payload: SnapshotPayload = file_util::decode_json(&data, "snapshot data")?;
        if payload.format != SNAPSHOT_FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data format={} unsupported (expected {SNAPSHOT_FORMAT})",
                    payload.format
                ),
            ));
        }
        self.state = payload.state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let mut buf = SNAPSHOT_MAGIC.to_vec();
        file_util::encode_frame(&mut buf, meta)?;
        let len = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "snapshot larger than 4 GiB")
        })?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        buf.extend_from_slice(data);
        file_util::atomic_write(&self.dir, SNAPSHOT_FILE, &buf)
    }
}

fn decode_snapshot_file(bytes: &[u8]) -> io::Result<(SnapshotMeta, Vec<u8>)> {
    let invalid =
        |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file: {m}"));
    let body = bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or_else(|| invalid("bad magic or format version"))?;
    let Frame::Valid(meta, meta_len) = file_util::decode_frame(body) else {
        return Err(invalid("corrupt meta frame"));
    };
    let meta: SnapshotMeta = file_util::decode_json(meta, "snapshot meta")?;
    // The data frame may exceed the generic frame limit, so it is checked here.
    let rest = &body[meta_len..];
    if rest.len() < file_util::FRAME_HEADER_LEN {
        return Err(invalid("missing data frame"));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let data = &rest[file_util::FRAME_HEADER_LEN..];
    if data.len() != len || crc32c::crc32c(data) != crc {
        return Err(invalid("corrupt data frame"));
    }
    Ok((meta, data.to_vec()))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let mut inner = self.inner.lock();
        let payload = SnapshotPayload {
            format: SNAPSHOT_FORMAT,
            state: inner.state.clone(),
        };
        let data = serde_json::to_vec(&payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
        };
        inner.persist_snapshot(&meta, &data)?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response: Response = {
                let mut inner = self.inner.lock();
                inner.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => Ok(Outcome::Done),
                    EntryPayload::Normal(command) => {
                        let out = apply(&mut inner.state, command);
                        if let Err(e) = &out {
                            tracing::debug!(log_id = %entry.log_id, error = %e, "metadata command rejected");
                        }
                        out
                    }
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(Outcome::Done)
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        self.publish_applied();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let mut inner = self.inner.lock();
        // Decode before persisting so an undecodable snapshot never replaces a good one.
        let _: SnapshotPayload = file_util::decode_json(&data, "installed snapshot data")?;
        inner.persist_snapshot(meta, &data)?;
        inner.load(meta, data)?;
        drop(inner);
        self.publish_applied();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let inner = self.inner.lock();
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Cursor::new(data.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;
    use uuid::Uuid;

    use super::*;
    use crate::state::Command;

    type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    #[tokio::test]
    async fn snapshot_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = StateMachineStore::open(dir.path()).expect("open");
        let register = Entry::new_normal(
            log_id(1, 1),
            Command::RegisterBroker {
                broker_id: 1,
                incarnation_id: Uuid::from_u128(1),
                listeners: vec![],
                rack: None,
                now_ms: 0,
            },
        );
        let bad = Entry::new_normal(
            log_id(1, 2),
            Command::DeleteTopic {
                topic_id: Uuid::from_u128(5),
                remote_cleanup: false,
            },
        );
        let create = Entry::new_normal(
            log_id(1, 3),
            Command::CreateTopic {
                name: "t".into(),
                topic_id: Uuid::from_u128(5),
                partitions: vec![crate::state::PartitionAssignment { replicas: vec![1] }],
                configs: BTreeMap::new(),
            },
        );
        let items = [register, bad, create].into_iter().map(|e| Ok((e, None)));
        sm.apply(futures::stream::iter(items)).await.expect("apply");
        assert!(sm.read(|s| s.topic_by_name("t").is_some()));
        assert_eq!(sm.last_applied(), Some(log_id(1, 3)));

        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        drop(sm);
        let mut reopened = StateMachineStore::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.applied_state().await.expect("state").0,
            Some(log_id(1, 3))
        );
        assert!(reopened.read(|s| s.topic_by_name("t").is_some()));
        let current = reopened
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("some");
        assert_eq!(current.meta, built.meta);
        assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());
    }
}
