//! The metadata state machine: cluster metadata as plain data and the one function that changes it.
//!
//! [`apply`] is pure: no I/O, no clock, no randomness. Everything that varies (timestamps, topic ids,
//! incarnation ids, replica assignments) arrives inside the [`Command`], decided by the proposer
//! before the command enters the Raft log, so that every replica that applies the same log reaches
//! the same [`MetadataState`]. All maps are `BTreeMap`, so serialisation (snapshots) is
//! deterministic too.
//!
//! A command either applies completely or is rejected with a [`CommandError`] and leaves the state
//! untouched: each handler validates everything before its first mutation. A rejected command is
//! still a committed log entry; the rejection is its outcome, identical on every replica.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;
use uuid::Uuid;

/// A broker id, as Kafka spells it (`int32`; `-1` means "none" in leader fields).
pub type BrokerId = i32;

/// Leader value of a partition that has no eligible leader.
pub const NO_LEADER: BrokerId = -1;

/// Largest number of producer ids one `AllocateProducerIds` may take (Kafka hands out 1,000).
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1_000_000;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Default broker session timeout: a live registration with a different incarnation blocks a new
/// one for this long after its last heartbeat.
pub const DEFAULT_BROKER_SESSION_TIMEOUT_MS: i64 = 9_000;

/// One endpoint a broker listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Listener name, e.g. `PLAINTEXT`.
    pub name: String,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Broker id.
    pub id: BrokerId,
    /// Identifies one process lifetime of the broker; a restart registers with a new one.
    pub incarnation_id: Uuid,
    /// Advertised listeners.
    pub listeners: Vec<Listener>,
    /// Rack (or zone) for rack-aware placement.
    pub rack: Option<String>,
    /// Broker epoch: assigned at each registration, never reused in the cluster.
    pub epoch: i64,
    /// A fenced broker leads nothing and gets no new replicas.
    pub fenced: bool,
    /// Timestamp (from the proposer's clock) of the last registration or heartbeat.
    pub last_heartbeat_ms: i64,
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    /// Replica set; the first replica is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// Current leader, or [`NO_LEADER`].
    pub leader: BrokerId,
    /// The leader epoch: the Raft term of the partition's group when its leader reported.
    pub leader_epoch: i32,
    /// In-sync replicas as the leader last reported them (the leader included).
    #[serde(default)]
    pub isr: Vec<BrokerId>,
    /// The reassignment in progress, if any. While it lasts `replicas` lists every broker that
    /// may hold the partition's data (the target first); a broker leaves `replicas` only when the
    /// partition's leader reports that the group's voters are the target
    /// ([`Command::CompleteReassignment`]).
    #[serde(default)]
    pub reassignment: Option<Reassignment>,
}

/// A partition reassignment (AlterPartitionReassignments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// The replica set before the reassignment began (what cancelling returns to).
    pub original: Vec<BrokerId>,
    /// The replica set being moved to.
    pub target: Vec<BrokerId>,
}

impl PartitionMetadata {
    /// The replica set the partition is moving to (its replicas when nothing moves).
    pub fn target(&self) -> &[BrokerId] {
        self.reassignment
            .as_ref()
            .map_or(&self.replicas, |r| &r.target)
    }

    /// Replicas a reassignment adds (Kafka's `adding_replicas`: in the target, not in the
    /// original set).
    pub fn adding(&self) -> Vec<BrokerId> {
        self.reassignment.as_ref().map_or_else(Vec::new, |r| {
            r.target
                .iter()
                .copied()
                .filter(|b| !r.original.contains(b))
                .collect()
        })
    }

    /// Replicas a reassignment removes (Kafka's `removing_replicas`: hosting the partition, not
    /// in the target).
    pub fn removing(&self) -> Vec<BrokerId> {
        let target = self.target();
        self.replicas
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect()
    }
}

/// A topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Topic id (never reused, unlike names).
    pub topic_id: Uuid,
    /// Partitions by index, dense from 0.
    pub partitions: BTreeMap<i32, PartitionMetadata>,
    /// Topic-level config overrides, by Kafka name.
    pub configs: BTreeMap<String, String>,
}

/// A block of producer ids handed to one broker: `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    /// Broker the block was given to.
    pub broker_id: BrokerId,
    /// First id of the block.
    pub start: i64,
    /// Number of ids in the block.
    pub len: u32,
}

/// The whole replicated cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics by id.
    pub topics: BTreeMap<Uuid, TopicMetadata>,
    /// Topic ids by name (index over `topics`).
    pub topic_ids: BTreeMap<String, Uuid>,
    /// Cluster-wide broker config defaults (Kafka's "default broker" resource).
    pub cluster_configs: BTreeMap<String, String>,
    /// Per-broker config overrides.
    pub broker_configs: BTreeMap<BrokerId, BTreeMap<String, String>>,
    /// Next broker epoch to hand out.
    pub next_broker_epoch: i64,
    /// Next producer id to hand out.
    pub next_producer_id: i64,
    /// The most recently allocated producer-id block.
    pub last_producer_id_block: Option<ProducerIdBlock>,
    /// Session timeout used to reject duplicate registrations of a live broker.
    pub broker_session_timeout_ms: i64,
    /// Cluster id reported to clients; set once by [`Command::InitCluster`].
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Deleted topics whose objects in the object store are still to be removed.
    #[serde(default)]
    pub pending_remote_deletions: BTreeSet<Uuid>,
    /// Bumped by every applied command except broker heartbeats (which only move a broker's
    /// `last_heartbeat_ms`): a reader that saw the same generation needs to look at nothing else.
    /// Heartbeats are most of the log at idle, and brokers rebuild their view of thousands of
    /// partitions only when this moves.
    #[serde(default)]
    pub generation: u64,
}

impl Default for MetadataState {
    fn default() -> Self {
        Self {
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            topic_ids: BTreeMap::new(),
            cluster_configs: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
            next_broker_epoch: 1,
            next_producer_id: 0,
            last_producer_id_block: None,
            broker_session_timeout_ms: DEFAULT_BROKER_SESSION_TIMEOUT_MS,
            cluster_id: None,
            pending_remote_deletions: BTreeSet::new(),
            generation: 0,
        }
    }
}

impl MetadataState {
    /// The topic named `name`, if any.
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicMetadata> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }

    /// Unfenced brokers, by ascending id.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Every partition's replica set, over all topics (input to placement balancing).
    pub fn all_replica_sets(&self) -> Vec<Vec<BrokerId>> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.values().map(|p| p.replicas.clone()))
            .collect()
    }

    #[cfg(test)]
    fn is_unfenced(&self, id: BrokerId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }
}

/// The replica set of one new partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Replicas; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
}

/// One partition in a [`Command::ReportLeadership`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipReport {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// Raft term of the partition's group (its Kafka leader epoch).
    pub leader_epoch: i32,
    /// In-sync replicas, the reporter included.
    pub isr: Vec<BrokerId>,
}

/// Metadata carried over into a new cluster: from a single-node broker's `metadata.json` (the
/// format before the quorum) or from the copy a cluster keeps in the object store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImport {
    /// Topics with their ids, replica sets and config overrides.
    pub topics: Vec<ImportedTopic>,
    /// Cluster-wide broker config defaults.
    pub cluster_configs: BTreeMap<String, String>,
    /// Per-broker config overrides.
    pub broker_configs: BTreeMap<BrokerId, BTreeMap<String, String>>,
    /// Producer ids below this may have been handed out.
    pub next_producer_id: i64,
    /// Deleted topics whose objects are still to be removed.
    pub pending_remote_deletions: BTreeSet<Uuid>,
}

/// One imported topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedTopic {
    /// Topic name.
    pub name: String,
    /// Its id, kept (object store keys and partition directories are named by it).
    pub topic_id: Uuid,
    /// Replica sets, partition index = position.
    pub partitions: Vec<PartitionAssignment>,
    /// Topic config overrides.
    pub configs: BTreeMap<String, String>,
}

/// A change to the metadata, as stored in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set the cluster id (and import earlier metadata) if the cluster has none yet; a no-op that
    /// reports the existing id otherwise, so every broker may propose it at start-up.
    InitCluster {
        /// Cluster id to use if none is set.
        cluster_id: String,
        /// Metadata to import along with it.
        import: Option<ClusterImport>,
    },
    /// The objects of a deleted topic are gone from the object store.
    FinishTopicDeletion {
        /// Topic id.
        topic_id: Uuid,
    },
    /// A broker (re)starts: assigns a fresh broker epoch and unfences it.
    RegisterBroker {
        /// Broker id.
        broker_id: BrokerId,
        /// Identifies this process lifetime.
        incarnation_id: Uuid,
        /// Advertised listeners.
        listeners: Vec<Listener>,
        /// Rack, if any.
        rack: Option<String>,
        /// Proposer's clock.
        now_ms: i64,
    },
    /// A broker is alive.
    BrokerHeartbeat {
        /// Broker id.
        broker_id: BrokerId,
        /// Epoch from its registration.
        broker_epoch: i64,
        /// Proposer's clock.
        now_ms: i64,
    },
    /// Fence a broker (session expired or controlled shutdown): its leaderships move away.
    FenceBroker {
        /// Broker id.
        broker_id: BrokerId,
        /// Epoch being fenced; a newer registration is not fenced by a stale decision.
        broker_epoch: i64,
    },
    /// Unfence a registered broker; it takes leadership of leaderless partitions it replicates.
    UnfenceBroker {
        /// Broker id.
        broker_id: BrokerId,
        /// Epoch from its registration.
        broker_epoch: i64,
    },
    /// Create a topic with explicit replica assignments (placement ran at the proposer).
    CreateTopic {
        /// Topic name.
        name: String,
        /// New topic id.
        topic_id: Uuid,
        /// One assignment per partition, partition index = position.
        partitions: Vec<PartitionAssignment>,
        /// Topic config overrides.
        configs: BTreeMap<String, String>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Topic id.
        topic_id: Uuid,
        /// Whether its objects in the object store are still to be removed.
        remote_cleanup: bool,
    },
    /// Add partitions to a topic.
    CreatePartitions {
        /// Topic id.
        topic_id: Uuid,
        /// Assignments of the new partitions, numbered after the existing ones.
        assignments: Vec<PartitionAssignment>,
    },
    /// Set and delete topic config overrides.
    AlterTopicConfigs {
        /// Topic id.
        topic_id: Uuid,
        /// Keys to set.
        set: BTreeMap<String, String>,
        /// Keys to remove.
        delete: Vec<String>,
    },
    /// Set and delete broker configs; `broker_id: None` is the cluster-wide default.
    AlterBrokerConfigs {
        /// Broker id, or `None` for the cluster default.
        broker_id: Option<BrokerId>,
        /// Keys to set.
        set: BTreeMap<String, String>,
        /// Keys to remove.
        delete: Vec<String>,
    },
    /// A broker leads these partitions (their Raft groups elected it and it made them ready):
    /// records it as leader with the Raft term as the leader epoch, and the ISR it sees. A report
    /// older than the recorded epoch, from a fenced or stale broker, or for a partition the broker
    /// does not replicate, is ignored for that partition.
    ReportLeadership {
        /// Reporting broker.
        broker_id: BrokerId,
        /// Its current epoch.
        broker_epoch: i64,
        /// The partitions.
        partitions: Vec<LeadershipReport>,
    },
    /// Start, replace or cancel partition reassignments. Each change is applied or refused on its
    /// own ([`Outcome::Reassignments`] lists the refusals by position). Starting sets the target
    /// and makes `replicas` the target followed by the other brokers hosting the partition;
    /// replacing keeps the original set; cancelling makes the original set the target again (the
    /// brokers that were being added are then removed by the partition's leader, as any
    /// reassignment).
    AlterReassignments {
        /// The changes.
        changes: Vec<ReassignmentChange>,
    },
    /// The leader of a partition's Raft group made its voters the reassignment's target:
    /// `replicas` becomes the target and the reassignment ends. Ignored (not an error) when it
    /// no longer matches the reassignment in progress.
    CompleteReassignment {
        /// Reporting broker (the group's leader).
        broker_id: BrokerId,
        /// Its current epoch.
        broker_epoch: i64,
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// The leader's Raft term.
        leader_epoch: i32,
        /// The group's voters.
        voters: Vec<BrokerId>,
    },
    /// Hand a block of producer ids to a broker.
    AllocateProducerIds {
        /// Requesting broker.
        broker_id: BrokerId,
        /// Its current epoch.
        broker_epoch: i64,
        /// Number of ids wanted.
        count: u32,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::InitCluster { cluster_id, import } => write!(
                f,
                "init_cluster cluster_id={cluster_id} imported_topics={}",
                import.as_ref().map_or(0, |i| i.topics.len())
            ),
            Command::FinishTopicDeletion { topic_id } => {
                write!(f, "finish_topic_deletion topic_id={topic_id}")
            }
            Command::RegisterBroker { broker_id, .. } => {
                write!(f, "register_broker broker_id={broker_id}")
            }
            Command::BrokerHeartbeat {
                broker_id,
                broker_epoch,
                ..
            } => {
                write!(
                    f,
                    "broker_heartbeat broker_id={broker_id} epoch={broker_epoch}"
                )
            }
            Command::FenceBroker {
                broker_id,
                broker_epoch,
            } => {
                write!(f, "fence_broker broker_id={broker_id} epoch={broker_epoch}")
            }
            Command::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                write!(
                    f,
                    "unfence_broker broker_id={broker_id} epoch={broker_epoch}"
                )
            }
            Command::CreateTopic {
                name,
                topic_id,
                partitions,
                ..
            } => write!(
                f,
                "create_topic name={name} topic_id={topic_id} partitions={}",
                partitions.len()
            ),
            Command::DeleteTopic { topic_id, .. } => {
                write!(f, "delete_topic topic_id={topic_id}")
            }
            Command::CreatePartitions {
                topic_id,
                assignments,
            } => write!(
                f,
                "create_partitions topic_id={topic_id} new={}",
                assignments.len()
            ),
            Command::AlterTopicConfigs { topic_id, .. } => {
                write!(f, "alter_topic_configs topic_id={topic_id}")
            }
            Command::AlterBrokerConfigs { broker_id, .. } => {
                write!(f, "alter_broker_configs broker_id={broker_id:?}")
            }
            Command::ReportLeadership {
                broker_id,
                partitions,
                ..
            } => write!(
                f,
                "report_leadership broker_id={broker_id} partitions={}",
                partitions.len()
            ),
            Command::AlterReassignments { changes } => {
                write!(f, "alter_reassignments partitions={}", changes.len())
            }
            Command::CompleteReassignment {
                broker_id,
                topic_id,
                partition,
                voters,
                ..
            } => write!(
                f,
                "complete_reassignment broker_id={broker_id} topic_id={topic_id} partition={partition} voters={voters:?}"
            ),
            Command::AllocateProducerIds {
                broker_id, count, ..
            } => {
                write!(
                    f,
                    "allocate_producer_ids broker_id={broker_id} count={count}"
                )
            }
        }
    }
}

/// One partition's change in a [`Command::AlterReassignments`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentChange {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
    /// The new replica set, or `None` to cancel the reassignment in progress.
    pub target: Option<Vec<BrokerId>>,
}

/// What an applied command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Nothing to report (also the outcome of blank and membership log entries).
    Done,
    /// The cluster id in effect after `InitCluster`.
    ClusterInitialized {
        /// The cluster id.
        cluster_id: String,
        /// Whether this command set it (and imported its metadata).
        newly: bool,
    },
    /// A broker registered.
    BrokerRegistered {
        /// Its new epoch.
        broker_epoch: i64,
    },
    /// A heartbeat was accepted.
    HeartbeatAccepted {
        /// Whether the broker is currently fenced.
        fenced: bool,
    },
    /// Leadership moved on this many partitions (fence/unfence).
    LeadersMoved {
        /// Number of partitions whose leader changed.
        partitions: u32,
    },
    /// A topic was created.
    TopicCreated {
        /// Its id.
        topic_id: Uuid,
    },
    /// Producer ids were allocated.
    ProducerIds(ProducerIdBlock),
    /// Reassignment changes were applied; one entry per change, `Some` where it was refused.
    Reassignments {
        /// Refusals by position in the command.
        errors: Vec<Option<CommandError>>,
    },
}

/// Why a command was rejected. Each variant corresponds to a Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// TOPIC_ALREADY_EXISTS.
    #[error("topic name={0} already exists")]
    TopicAlreadyExists(String),
    /// TOPIC_ALREADY_EXISTS (id collision; practically impossible with random ids).
    #[error("topic_id={0} already exists")]
    TopicIdAlreadyExists(Uuid),
    /// UNKNOWN_TOPIC_ID.
    #[error("unknown topic_id={0}")]
    UnknownTopicId(Uuid),
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("unknown partition topic_id={topic_id} partition={partition}")]
    UnknownPartition {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
    },
    /// INVALID_TOPIC_EXCEPTION.
    #[error("invalid topic name={name:?}: {reason}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// BROKER_ID_NOT_REGISTERED.
    #[error("unknown broker_id={0}")]
    UnknownBroker(BrokerId),
    /// STALE_BROKER_EPOCH.
    #[error("stale broker epoch broker_id={broker_id} epoch={epoch} current={current}")]
    StaleBrokerEpoch {
        /// Broker id.
        broker_id: BrokerId,
        /// Epoch in the command.
        epoch: i64,
        /// Registered epoch.
        current: i64,
    },
    /// INVALID_REQUEST: broker ids are non-negative.
    #[error("invalid broker_id={0}")]
    InvalidBrokerId(BrokerId),
    /// DUPLICATE_BROKER_REGISTRATION.
    #[error("broker_id={0} is registered by a live incarnation")]
    DuplicateBrokerRegistration(BrokerId),
    /// INVALID_PARTITIONS.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICA_ASSIGNMENT.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_REQUEST for config changes.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// INVALID_REQUEST for producer-id allocation.
    #[error("invalid producer id request: {0}")]
    InvalidProducerIdRequest(String),
    /// NO_REASSIGNMENT_IN_PROGRESS.
    #[error("no reassignment in progress for topic_id={topic_id} partition={partition}")]
    NoReassignmentInProgress {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
    },
}

impl CommandError {
    /// Whether retrying the same command later can succeed without changing it.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CommandError::DuplicateBrokerRegistration(_))
    }

    /// Whether the command came from a broker incarnation the cluster has moved past.
    pub fn is_fenced(&self) -> bool {
        matches!(self, CommandError::StaleBrokerEpoch { .. })
    }
}

/// Apply `command` to `state`. Pure and deterministic; on `Err` the state is unchanged.
pub fn apply(state: &mut MetadataState, command: Command) -> Result<Outcome, CommandError> {
    let heartbeat = matches!(command, Command::BrokerHeartbeat { .. });
    let outcome = apply_command(state, command)?;
    if !heartbeat {
        state.generation += 1;
    }
    Ok(outcome)
}

fn apply_command(state: &mut MetadataState, command: Command) -> Result<Outcome, CommandError> {
    match command {
        Command::InitCluster { cluster_id, import } => init_cluster(state, cluster_id, import),
        Command::FinishTopicDeletion { topic_id } => {
            state.pending_remote_deletions.remove(&topic_id);
            Ok(Outcome::Done)
        }
        Command::RegisterBroker {
            broker_id,
            incarnation_id,
            listeners,
            rack,
            now_ms,
        } => register_broker(state, broker_id, incarnation_id, listeners, rack, now_ms),
        Command::BrokerHeartbeat {
            broker_id,
            broker_epoch,
            now_ms,
        } => {
            let broker = current_broker(state, broker_id, broker_epoch)?;
            let fenced = broker.fenced;
            if let Some(b) = state.brokers.get_mut(&broker_id) {
                b.last_heartbeat_ms = b.last_heartbeat_ms.max(now_ms);
            }
            Ok(Outcome::HeartbeatAccepted { fenced })
        }
        Command::FenceBroker {
            broker_id,
            broker_epoch,
        } => {
            current_broker(state, broker_id, broker_epoch)?;
            Ok(Outcome::LeadersMoved {
                partitions: fence(state, broker_id),
            })
        }
        Command::UnfenceBroker {
            broker_id,
            broker_epoch,
        } => {
            current_broker(state, broker_id, broker_epoch)?;
            Ok(Outcome::LeadersMoved {
                partitions: unfence(state, broker_id),
            })
        }
        Command::CreateTopic {
            name,
            topic_id,
            partitions,
            configs,
        } => {
            validate_topic_name(&name)?;
            if state.topic_ids.contains_key(&name) {
                return Err(CommandError::TopicAlreadyExists(name));
            }
            if let Some(other) = colliding_topic(state, &name) {
                return Err(CommandError::InvalidTopicName {
                    reason: format!("collides with existing topic {other:?} ('.' and '_' collide)"),
                    name,
                });
            }
            if state.topics.contains_key(&topic_id) {
                return Err(CommandError::TopicIdAlreadyExists(topic_id));
            }
            if partitions.is_empty() {
                return Err(CommandError::InvalidPartitions(
                    "a topic needs at least one partition".into(),
                ));
            }
            validate_assignments(state, &partitions, None, 0)?;
            let partitions = partitions
                .into_iter()
                .enumerate()
                .map(|(i, a)| (partition_index(i), new_partition(a.replicas)))
                .collect();
            state.topic_ids.insert(name.clone(), topic_id);
            state.topics.insert(
                topic_id,
                TopicMetadata {
                    name,
                    topic_id,
                    partitions,
                    configs,
                },
            );
            Ok(Outcome::TopicCreated { topic_id })
        }
        Command::DeleteTopic {
            topic_id,
            remote_cleanup,
        } => {
            let topic = state
                .topics
                .remove(&topic_id)
                .ok_or(CommandError::UnknownTopicId(topic_id))?;
            state.topic_ids.remove(&topic.name);
            if remote_cleanup {
                state.pending_remote_deletions.insert(topic_id);
            }
            Ok(Outcome::Done)
        }
        Command::CreatePartitions {
            topic_id,
            assignments,
        } => {
            let topic = state
                .topics
                .get(&topic_id)
                .ok_or(CommandError::UnknownTopicId(topic_id))?;
            if assignments.is_empty() {
                return Err(CommandError::InvalidPartitions(
                    "no new partitions given".into(),
                ));
            }
            let rf = topic.partitions.values().next().map(|p| p.target().len());
            validate_assignments(state, &assignments, rf, topic.partitions.len())?;
            let first = topic.partitions.len();
            let new: Vec<(i32, PartitionMetadata)> = assignments
                .into_iter()
                .enumerate()
                .map(|(i, a)| (partition_index(first + i), new_partition(a.replicas)))
                .collect();
            if let Some(topic) = state.topics.get_mut(&topic_id) {
                topic.partitions.extend(new);
            }
            Ok(Outcome::Done)
        }
        Command::AlterTopicConfigs {
            topic_id,
            set,
            delete,
        } => {
            validate_config_keys(&set, &delete)?;
            let topic = state
                .topics
                .get_mut(&topic_id)
                .ok_or(CommandError::UnknownTopicId(topic_id))?;
            alter_configs(&mut topic.configs, set, delete);
            Ok(Outcome::Done)
        }
        Command::AlterBrokerConfigs {
            broker_id,
            set,
            delete,
        } => {
            validate_config_keys(&set, &delete)?;
            let configs = match broker_id {
                None => &mut state.cluster_configs,
                Some(id) if id < 0 => {
                    return Err(CommandError::InvalidBrokerId(id));
                }
                Some(id) => state.broker_configs.entry(id).or_default(),
            };
            alter_configs(configs, set, delete);
            if let Some(id) = broker_id {
                if state
                    .broker_configs
                    .get(&id)
                    .is_some_and(BTreeMap::is_empty)
                {
                    state.broker_configs.remove(&id);
                }
            }
            Ok(Outcome::Done)
        }
        Command::ReportLeadership {
            broker_id,
            broker_epoch,
            partitions,
        } => {
            let broker = current_broker(state, broker_id, broker_epoch)?;
            if broker.fenced {
                return Ok(Outcome::LeadersMoved { partitions: 0 });
            }
            let mut moved = 0;
            for r in partitions {
                let Some(p) = state
                    .topics
                    .get_mut(&r.topic_id)
                    .and_then(|t| t.partitions.get_mut(&r.partition))
                else {
                    continue;
                };
                if !p.replicas.contains(&broker_id) || r.leader_epoch < p.leader_epoch {
                    continue;
                }
                if r.leader_epoch == p.leader_epoch
                    && p.leader != broker_id
                    && p.leader != NO_LEADER
                {
                    // Another broker already reported this term: a stale report.
                    continue;
                }
                if p.leader != broker_id || p.leader_epoch != r.leader_epoch {
                    moved += 1;
                }
                p.leader = broker_id;
                p.leader_epoch = r.leader_epoch;
                p.isr = r
                    .isr
                    .into_iter()
                    .filter(|b| p.replicas.contains(b))
                    .collect();
            }
            Ok(Outcome::LeadersMoved { partitions: moved })
        }
        Command::AlterReassignments { changes } => {
            let errors = changes
                .into_iter()
                .map(|c| alter_reassignment(state, c).err())
                .collect();
            Ok(Outcome::Reassignments { errors })
        }
        Command::CompleteReassignment {
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            voters,
        } => {
            current_broker(state, broker_id, broker_epoch)?;
            let p = state
                .topics
                .get_mut(&topic_id)
                .and_then(|t| t.partitions.get_mut(&partition))
                .ok_or(CommandError::UnknownPartition {
                    topic_id,
                    partition,
                })?;
            let Some(r) = &p.reassignment else {
                return Ok(Outcome::Done);
            };
            let same = |a: &[BrokerId], b: &[BrokerId]| {
                a.len() == b.len() && a.iter().all(|x| b.contains(x))
            };
            if leader_epoch < p.leader_epoch || !same(&r.target, &voters) {
                return Ok(Outcome::Done);
            }
            p.replicas = r.target.clone();
            p.reassignment = None;
            p.isr.retain(|b| voters.contains(b));
            if !p.replicas.contains(&p.leader) {
                p.leader = NO_LEADER;
            }
            Ok(Outcome::Done)
        }
        Command::AllocateProducerIds {
            broker_id,
            broker_epoch,
            count,
        } => {
            current_broker(state, broker_id, broker_epoch)?;
            if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
                return Err(CommandError::InvalidProducerIdRequest(format!(
                    "count={count} must be in 1..={MAX_PRODUCER_ID_BLOCK}"
                )));
            }
            let start = state.next_producer_id;
            let next = start.checked_add(i64::from(count)).ok_or_else(|| {
                CommandError::InvalidProducerIdRequest("producer id space exhausted".into())
            })?;
            let block = ProducerIdBlock {
                broker_id,
                start,
                len: count,
            };
            state.next_producer_id = next;
            state.last_producer_id_block = Some(block);
            Ok(Outcome::ProducerIds(block))
        }
    }
}

fn init_cluster(
    state: &mut MetadataState,
    cluster_id: String,
    import: Option<ClusterImport>,
) -> Result<Outcome, CommandError> {
    if let Some(existing) = &state.cluster_id {
        return Ok(Outcome::ClusterInitialized {
            cluster_id: existing.clone(),
            newly: false,
        });
    }
    if cluster_id.is_empty() {
        return Err(CommandError::InvalidConfig("empty cluster id".into()));
    }
    let Some(import) = import else {
        state.cluster_id = Some(cluster_id.clone());
        return Ok(Outcome::ClusterInitialized {
            cluster_id,
            newly: true,
        });
    };
    // Validate everything on a copy, then swap it in: the command applies completely or not at all.
    let mut next = state.clone();
    for t in import.topics {
        let out = apply(
            &mut next,
            Command::CreateTopic {
                name: t.name,
                topic_id: t.topic_id,
                partitions: t.partitions,
                configs: t.configs,
            },
        );
        out?;
    }
    next.cluster_configs = import.cluster_configs;
    next.broker_configs = import.broker_configs;
    next.next_producer_id = next.next_producer_id.max(import.next_producer_id);
    next.pending_remote_deletions
        .extend(import.pending_remote_deletions);
    next.cluster_id = Some(cluster_id.clone());
    *state = next;
    Ok(Outcome::ClusterInitialized {
        cluster_id,
        newly: true,
    })
}

fn register_broker(
    state: &mut MetadataState,
    broker_id: BrokerId,
    incarnation_id: Uuid,
    listeners: Vec<Listener>,
    rack: Option<String>,
    now_ms: i64,
) -> Result<Outcome, CommandError> {
    if broker_id < 0 {
        return Err(CommandError::InvalidBrokerId(broker_id));
    }
    if let Some(existing) = state.brokers.get(&broker_id) {
        let alive =
            now_ms.saturating_sub(existing.last_heartbeat_ms) < state.broker_session_timeout_ms;
        if existing.incarnation_id != incarnation_id && !existing.fenced && alive {
            return Err(CommandError::DuplicateBrokerRegistration(broker_id));
        }
    }
    let epoch = state.next_broker_epoch;
    state.next_broker_epoch += 1;
    state.brokers.insert(
        broker_id,
        BrokerRegistration {
            id: broker_id,
            incarnation_id,
            listeners,
            rack,
            epoch,
            fenced: false,
            last_heartbeat_ms: now_ms,
        },
    );
    unfence(state, broker_id);
    Ok(Outcome::BrokerRegistered {
        broker_epoch: epoch,
    })
}

/// The registration of `broker_id` if `epoch` is its current epoch.
fn current_broker(
    state: &MetadataState,
    broker_id: BrokerId,
    epoch: i64,
) -> Result<&BrokerRegistration, CommandError> {
    let broker = state
        .brokers
        .get(&broker_id)
        .ok_or(CommandError::UnknownBroker(broker_id))?;
    if broker.epoch != epoch {
        return Err(CommandError::StaleBrokerEpoch {
            broker_id,
            epoch,
            current: broker.epoch,
        });
    }
    Ok(broker)
}

/// Fence `broker_id`: the partitions it leads have no leader until a Raft leader among their live
/// replicas reports (handing them to "the first unfenced replica" would be an unclean election),
/// and it leaves every ISR. Returns the number of partitions that lost their leader.
fn fence(state: &mut MetadataState, broker_id: BrokerId) -> u32 {
    if let Some(b) = state.brokers.get_mut(&broker_id) {
        b.fenced = true;
    }
    let mut moved = 0;
    for topic in state.topics.values_mut() {
        for p in topic.partitions.values_mut() {
            p.isr.retain(|b| *b != broker_id);
            if p.leader == broker_id {
                p.leader = NO_LEADER;
                moved += 1;
            }
        }
    }
    moved
}

/// Unfence `broker_id` (its Raft groups elect leaders; nothing moves here). Returns 0.
fn unfence(state: &mut MetadataState, broker_id: BrokerId) -> u32 {
    if let Some(b) = state.brokers.get_mut(&broker_id) {
        b.fenced = false;
    }
    0
}

fn partition_index(i: usize) -> i32 {
    i32::try_from(i).expect("partition count is validated to fit in i32")
}

/// A new partition: no leader until its Raft group elects one and the leader reports.
fn new_partition(replicas: Vec<BrokerId>) -> PartitionMetadata {
    PartitionMetadata {
        replicas,
        leader: NO_LEADER,
        leader_epoch: 0,
        isr: Vec::new(),
        reassignment: None,
    }
}

/// Applies one change of [`Command::AlterReassignments`]; on `Err` the partition is unchanged.
fn alter_reassignment(
    state: &mut MetadataState,
    change: ReassignmentChange,
) -> Result<(), CommandError> {
    let ReassignmentChange {
        topic_id,
        partition,
        target,
    } = change;
    if let Some(t) = &target {
        validate_assignments(
            state,
            &[PartitionAssignment {
                replicas: t.clone(),
            }],
            None,
            0,
        )?;
    }
    let p = state
        .topics
        .get_mut(&topic_id)
        .ok_or(CommandError::UnknownTopicId(topic_id))?
        .partitions
        .get_mut(&partition)
        .ok_or(CommandError::UnknownPartition {
            topic_id,
            partition,
        })?;
    let original = match (&p.reassignment, &target) {
        (None, None) => {
            return Err(CommandError::NoReassignmentInProgress {
                topic_id,
                partition,
            })
        }
        (Some(r), _) => r.original.clone(),
        (None, Some(_)) => p.replicas.clone(),
    };
    let target = target.unwrap_or_else(|| original.clone());
    let hosts = p.replicas.clone();
    let mut replicas = target.clone();
    replicas.extend(hosts.iter().copied().filter(|b| !target.contains(b)));
    let settled = replicas.len() == target.len() && p.reassignment.is_none();
    p.replicas = replicas;
    p.reassignment = if settled {
        // Nothing to add or remove: only the preferred order changed.
        None
    } else {
        Some(Reassignment { original, target })
    };
    Ok(())
}

/// The existing topic whose name equals `name` once '.' and '_' are treated alike (Kafka refuses
/// such pairs: their metric names would collide).
fn colliding_topic<'a>(state: &'a MetadataState, name: &str) -> Option<&'a str> {
    let folded = name.replace('.', "_");
    state
        .topic_ids
        .keys()
        .find(|t| t.as_str() != name && t.replace('.', "_") == folded)
        .map(String::as_str)
}

/// Kafka's rules for a topic name: 1..=249 characters of ASCII alphanumerics, '.', '_' and '-',
/// and not `.` or `..`. [`apply`] enforces them; brokers call this to refuse a name early.
pub fn validate_topic_name(name: &str) -> Result<(), CommandError> {
    let invalid = |reason: &str| {
        Err(CommandError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
    {
        return invalid("only ASCII alphanumerics, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Check replica sets: non-empty, no duplicate broker, registered brokers, one replication factor
/// (equal to `rf` when the topic already has partitions), total partition count fits in i32.
fn validate_assignments(
    state: &MetadataState,
    assignments: &[PartitionAssignment],
    rf: Option<usize>,
    existing: usize,
) -> Result<(), CommandError> {
    if assignments.len().saturating_add(existing) > i32::MAX as usize {
        return Err(CommandError::InvalidPartitions(
            "too many partitions".into(),
        ));
    }
    let rf = rf.unwrap_or_else(|| assignments[0].replicas.len());
    for (i, a) in assignments.iter().enumerate() {
        let invalid = |what: String| {
            Err(CommandError::InvalidReplicaAssignment(format!(
                "partition {i}: {what}"
            )))
        };
        if a.replicas.is_empty() {
            return invalid("empty replica set".into());
        }
        if a.replicas.len() != rf {
            return invalid(format!("{} replicas, expected {rf}", a.replicas.len()));
        }
        for (j, r) in a.replicas.iter().enumerate() {
            if a.replicas[..j].contains(r) {
                return invalid(format!("broker {r} listed twice"));
            }
            if !state.brokers.contains_key(r) {
                return Err(CommandError::UnknownBroker(*r));
            }
        }
    }
    Ok(())
}

fn validate_config_keys(
    set: &BTreeMap<String, String>,
    delete: &[String],
) -> Result<(), CommandError> {
    if set.keys().chain(delete).any(String::is_empty) {
        return Err(CommandError::InvalidConfig("empty config name".into()));
    }
    if let Some(k) = delete.iter().find(|k| set.contains_key(*k)) {
        return Err(CommandError::InvalidConfig(format!(
            "config {k} is both set and deleted"
        )));
    }
    Ok(())
}

fn alter_configs(
    configs: &mut BTreeMap<String, String>,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
) {
    for k in delete {
        configs.remove(&k);
    }
    configs.extend(set);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn register(state: &mut MetadataState, id: BrokerId, now_ms: i64) -> i64 {
        let out = apply(
            state,
            Command::RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid::from_u128(((now_ms as u128) << 32) | id as u128),
                listeners: vec![Listener {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                }],
                rack: None,
                now_ms,
            },
        );
        match out {
            Ok(Outcome::BrokerRegistered { broker_epoch }) => broker_epoch,
            other => panic!("register {id}: {other:?}"),
        }
    }

    fn create(
        state: &mut MetadataState,
        name: &str,
        id: u128,
        sets: &[&[BrokerId]],
    ) -> Result<Outcome, CommandError> {
        apply(
            state,
            Command::CreateTopic {
                name: name.into(),
                topic_id: Uuid::from_u128(id),
                partitions: sets
                    .iter()
                    .map(|s| PartitionAssignment {
                        replicas: s.to_vec(),
                    })
                    .collect(),
                configs: BTreeMap::new(),
            },
        )
    }

    #[test]
    fn registration_bumps_epoch_and_rejects_live_duplicate() {
        let mut s = MetadataState::default();
        let e1 = register(&mut s, 1, 1_000);
        assert_eq!(e1, 1);
        // Same id, different incarnation, still within the session: rejected, state unchanged.
        let before = s.clone();
        let err = apply(
            &mut s,
            Command::RegisterBroker {
                broker_id: 1,
                incarnation_id: Uuid::from_u128(99),
                listeners: vec![],
                rack: None,
                now_ms: 2_000,
            },
        );
        assert_eq!(err, Err(CommandError::DuplicateBrokerRegistration(1)));
        assert_eq!(s, before);
        // After the session timeout the new incarnation wins with a fresh epoch.
        let e2 = register(&mut s, 1, 1_000 + DEFAULT_BROKER_SESSION_TIMEOUT_MS + 1);
        assert!(e2 > e1);
        let hb = apply(
            &mut s,
            Command::BrokerHeartbeat {
                broker_id: 1,
                broker_epoch: e1,
                now_ms: 20_000,
            },
        );
        assert!(hb.as_ref().is_err_and(CommandError::is_fenced), "{hb:?}");
        let hb = apply(
            &mut s,
            Command::BrokerHeartbeat {
                broker_id: 1,
                broker_epoch: e2,
                now_ms: 20_000,
            },
        );
        assert_eq!(hb, Ok(Outcome::HeartbeatAccepted { fenced: false }));
    }

    /// Heartbeats leave the generation alone (brokers skip rebuilding their view for them); every
    /// other applied command moves it, and a refused command changes nothing.
    #[test]
    fn generation_moves_with_everything_but_heartbeats() {
        let mut s = MetadataState::default();
        let epoch = register(&mut s, 1, 0);
        let g = s.generation;
        assert!(g > 0, "a registration moves the generation");
        let hb = apply(
            &mut s,
            Command::BrokerHeartbeat {
                broker_id: 1,
                broker_epoch: epoch,
                now_ms: 500,
            },
        );
        assert_eq!(hb, Ok(Outcome::HeartbeatAccepted { fenced: false }));
        assert_eq!(s.generation, g);
        assert_eq!(s.brokers[&1].last_heartbeat_ms, 500);
        create(&mut s, "t", 1, &[&[1]]).expect("create t");
        assert_eq!(s.generation, g + 1);
        create(&mut s, "t", 1, &[&[1]]).expect_err("exists");
        assert_eq!(s.generation, g + 1);
    }

    /// The '.'/'_' collision rule is the state machine's, so every broker enforces the same.
    #[test]
    fn colliding_topic_names_are_refused() {
        let mut s = MetadataState::default();
        register(&mut s, 1, 0);
        create(&mut s, "a.b", 1, &[&[1]]).expect("create a.b");
        let before = s.clone();
        let err = create(&mut s, "a_b", 2, &[&[1]]).expect_err("collides");
        assert!(
            matches!(&err, CommandError::InvalidTopicName { name, reason } if name == "a_b" && reason.contains("a.b")),
            "{err:?}"
        );
        assert_eq!(s, before, "a rejected command leaves the state alone");
        create(&mut s, "a-b", 3, &[&[1]]).expect("'-' does not collide");
    }

    #[test]
    fn create_and_delete_topic() {
        let mut s = MetadataState::default();
        for b in 1..=3 {
            register(&mut s, b, 0);
        }
        assert_eq!(
            create(&mut s, "t", 7, &[&[1, 2], &[2, 3]]),
            Ok(Outcome::TopicCreated {
                topic_id: Uuid::from_u128(7)
            })
        );
        let t = s.topic_by_name("t").expect("created");
        assert_eq!(t.partitions[&1].replicas, vec![2, 3]);
        assert_eq!(
            t.partitions[&1].leader, NO_LEADER,
            "leaders come from Raft reports"
        );
        assert_eq!(
            create(&mut s, "t", 8, &[&[1]]),
            Err(CommandError::TopicAlreadyExists("t".into()))
        );
        assert!(matches!(
            create(&mut s, "u", 9, &[&[1, 1]]),
            Err(CommandError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            create(&mut s, "u", 9, &[&[1, 2], &[3]]),
            Err(CommandError::InvalidReplicaAssignment(_))
        ));
        assert_eq!(
            create(&mut s, "u", 9, &[&[4]]),
            Err(CommandError::UnknownBroker(4))
        );
        assert!(matches!(
            create(&mut s, "bad name", 9, &[&[1]]),
            Err(CommandError::InvalidTopicName { .. })
        ));
        assert!(matches!(
            create(&mut s, "u", 9, &[]),
            Err(CommandError::InvalidPartitions(_))
        ));

        let id = Uuid::from_u128(7);
        let more = apply(
            &mut s,
            Command::CreatePartitions {
                topic_id: id,
                assignments: vec![PartitionAssignment {
                    replicas: vec![3, 1],
                }],
            },
        );
        assert_eq!(more, Ok(Outcome::Done));
        assert_eq!(s.topics[&id].partitions[&2].replicas, vec![3, 1]);
        assert_eq!(
            apply(
                &mut s,
                Command::DeleteTopic {
                    topic_id: id,
                    remote_cleanup: true
                }
            ),
            Ok(Outcome::Done)
        );
        assert!(s.topic_by_name("t").is_none());
        assert!(s.pending_remote_deletions.contains(&id));
        assert_eq!(
            apply(
                &mut s,
                Command::DeleteTopic {
                    topic_id: id,
                    remote_cleanup: true
                }
            ),
            Err(CommandError::UnknownTopicId(id))
        );
        assert_eq!(
            apply(&mut s, Command::FinishTopicDeletion { topic_id: id }),
            Ok(Outcome::Done)
        );
        assert!(s.pending_remote_deletions.is_empty());
    }

    #[test]
    fn init_cluster_sets_the_id_once_and_imports_atomically() {
        let mut s = MetadataState::default();
        register(&mut s, 1, 0);
        let topic = |name: &str, id: u128, replicas: Vec<BrokerId>| ImportedTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(id),
            partitions: vec![PartitionAssignment { replicas }],
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        };
        // An import naming an unknown broker is rejected whole: no id, no topics.
        let bad = ClusterImport {
            topics: vec![topic("a", 1, vec![1]), topic("b", 2, vec![7])],
            ..Default::default()
        };
        let before = s.clone();
        let out = apply(
            &mut s,
            Command::InitCluster {
                cluster_id: "c1".into(),
                import: Some(bad),
            },
        );
        assert_eq!(out, Err(CommandError::UnknownBroker(7)));
        assert_eq!(s, before);
        let good = ClusterImport {
            topics: vec![topic("a", 1, vec![1])],
            cluster_configs: BTreeMap::from([("log.retention.ms".into(), "5".into())]),
            next_producer_id: 5_000,
            pending_remote_deletions: BTreeSet::from([Uuid::from_u128(9)]),
            ..Default::default()
        };
        let out = apply(
            &mut s,
            Command::InitCluster {
                cluster_id: "c1".into(),
                import: Some(good),
            },
        );
        assert_eq!(
            out,
            Ok(Outcome::ClusterInitialized {
                cluster_id: "c1".into(),
                newly: true
            })
        );
        let a = s.topic_by_name("a").expect("imported");
        assert_eq!(a.topic_id, Uuid::from_u128(1));
        assert_eq!(a.partitions[&0].replicas, vec![1]);
        assert_eq!(s.next_producer_id, 5_000);
        assert_eq!(s.cluster_configs["log.retention.ms"], "5");
        assert!(s.pending_remote_deletions.contains(&Uuid::from_u128(9)));
        // A second init (another broker, or a restart) changes nothing and reports the id in effect.
        let again = apply(
            &mut s,
            Command::InitCluster {
                cluster_id: "c2".into(),
                import: Some(ClusterImport::default()),
            },
        );
        assert_eq!(
            again,
            Ok(Outcome::ClusterInitialized {
                cluster_id: "c1".into(),
                newly: false
            })
        );
        assert_eq!(s.cluster_id.as_deref(), Some("c1"));
    }

    fn report(
        state: &mut MetadataState,
        broker: BrokerId,
        epoch: i64,
        topic: u128,
        partition: i32,
        term: i32,
        isr: &[BrokerId],
    ) -> Result<Outcome, CommandError> {
        apply(
            state,
            Command::ReportLeadership {
                broker_id: broker,
                broker_epoch: epoch,
                partitions: vec![LeadershipReport {
                    topic_id: Uuid::from_u128(topic),
                    partition,
                    leader_epoch: term,
                    isr: isr.to_vec(),
                }],
            },
        )
    }

    fn reassign(
        state: &mut MetadataState,
        topic: u128,
        partition: i32,
        target: Option<&[BrokerId]>,
    ) -> Option<CommandError> {
        match apply(
            state,
            Command::AlterReassignments {
                changes: vec![ReassignmentChange {
                    topic_id: Uuid::from_u128(topic),
                    partition,
                    target: target.map(<[BrokerId]>::to_vec),
                }],
            },
        ) {
            Ok(Outcome::Reassignments { mut errors }) => errors.pop().flatten(),
            other => panic!("alter reassignments: {other:?}"),
        }
    }

    /// A reassignment keeps every broker that may hold data in `replicas` until the leader
    /// reports the target as its voters; replacing keeps the original set, cancelling returns to
    /// it (removing the brokers that were being added), and mismatched completions are ignored.
    #[test]
    fn reassignments_start_replace_cancel_and_complete() {
        let mut s = MetadataState::default();
        let e: Vec<i64> = (1..=5).map(|b| register(&mut s, b, 0)).collect();
        create(&mut s, "t", 1, &[&[1, 2, 3]]).expect("create");
        let id = Uuid::from_u128(1);
        report(&mut s, 1, e[0], 1, 0, 2, &[1, 2, 3]).expect("leader");
        let part = |s: &MetadataState| s.topics[&id].partitions[&0].clone();
        // Unknown partition, unknown broker, duplicates, cancel without a reassignment.
        assert!(matches!(
            reassign(&mut s, 1, 7, Some(&[1])),
            Some(CommandError::UnknownPartition { .. })
        ));
        assert_eq!(
            reassign(&mut s, 1, 0, Some(&[1, 9])),
            Some(CommandError::UnknownBroker(9))
        );
        assert!(matches!(
            reassign(&mut s, 1, 0, Some(&[1, 1])),
            Some(CommandError::InvalidReplicaAssignment(_))
        ));
        assert!(matches!(
            reassign(&mut s, 1, 0, None),
            Some(CommandError::NoReassignmentInProgress { .. })
        ));
        // A reorder only changes the preferred leader.
        assert_eq!(reassign(&mut s, 1, 0, Some(&[2, 1, 3])), None);
        assert_eq!(
            (part(&s).replicas, part(&s).reassignment),
            (vec![2, 1, 3], None)
        );
        // Move 1 -> 4: the target first, then the brokers still hosting it.
        assert_eq!(reassign(&mut s, 1, 0, Some(&[2, 4, 3])), None);
        let p = part(&s);
        assert_eq!(p.replicas, vec![2, 4, 3, 1]);
        assert_eq!((p.adding(), p.removing()), (vec![4], vec![1]));
        // Replaced by 1 -> 5: 4 may hold data now, so it stays until the leader is done.
        assert_eq!(reassign(&mut s, 1, 0, Some(&[2, 5, 3])), None);
        let p = part(&s);
        assert_eq!(p.replicas, vec![2, 5, 3, 4, 1]);
        assert_eq!(
            p.reassignment.as_ref().map(|r| r.original.clone()),
            Some(vec![2, 1, 3])
        );
        assert_eq!((p.adding(), p.removing()), (vec![5], vec![4, 1]));
        // A completion with other voters, or an older term, is ignored.
        let complete = |s: &mut MetadataState, voters: &[BrokerId], term: i32| {
            apply(
                s,
                Command::CompleteReassignment {
                    broker_id: 2,
                    broker_epoch: e[1],
                    topic_id: id,
                    partition: 0,
                    leader_epoch: term,
                    voters: voters.to_vec(),
                },
            )
        };
        complete(&mut s, &[2, 4, 3], 3).expect("mismatch");
        complete(&mut s, &[2, 5, 3], 1).expect("old term");
        assert_eq!(part(&s).replicas.len(), 5);
        // Cancel: the original set is the target again; 4 and 5 are removed by the leader.
        assert_eq!(reassign(&mut s, 1, 0, None), None);
        let p = part(&s);
        assert_eq!(p.replicas, vec![2, 1, 3, 5, 4]);
        assert_eq!((p.adding(), p.removing()), (vec![], vec![5, 4]));
        // Re-target and complete.
        assert_eq!(reassign(&mut s, 1, 0, Some(&[5, 2, 3])), None);
        report(&mut s, 2, e[1], 1, 0, 3, &[2, 3, 5, 1]).expect("leader 2");
        complete(&mut s, &[3, 2, 5], 3).expect("complete");
        let p = part(&s);
        assert_eq!(
            (p.replicas.clone(), p.reassignment.clone()),
            (vec![5, 2, 3], None)
        );
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3, 5]));
    }

    /// Leaders come from their Raft groups' reports; fencing clears leadership (no unclean hand-
    /// over), and stale or foreign reports are ignored.
    #[test]
    fn leadership_is_reported_and_fencing_clears_it() {
        let mut s = MetadataState::default();
        let e1 = register(&mut s, 1, 0);
        let e2 = register(&mut s, 2, 0);
        let e3 = register(&mut s, 3, 0);
        create(&mut s, "t", 1, &[&[1, 2, 3]]).expect("create");
        let id = Uuid::from_u128(1);
        assert_eq!(
            s.topics[&id].partitions[&0].leader, NO_LEADER,
            "no leader before a report"
        );
        assert_eq!(
            report(&mut s, 1, e1, 1, 0, 3, &[1, 2, 3, 9]),
            Ok(Outcome::LeadersMoved { partitions: 1 })
        );
        let p = &s.topics[&id].partitions[&0];
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (1, 3, vec![1, 2, 3])
        );
        // An older term, or another broker in the same term, changes nothing.
        report(&mut s, 2, e2, 1, 0, 2, &[2]).expect("stale");
        report(&mut s, 2, e2, 1, 0, 3, &[2]).expect("same term");
        assert_eq!(s.topics[&id].partitions[&0].leader, 1);
        // Fencing the leader clears it and takes it out of the ISR; nobody else is made leader.
        assert_eq!(
            apply(
                &mut s,
                Command::FenceBroker {
                    broker_id: 1,
                    broker_epoch: e1
                }
            ),
            Ok(Outcome::LeadersMoved { partitions: 1 })
        );
        let p = &s.topics[&id].partitions[&0];
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![2, 3]));
        // A fenced broker's report is ignored; a live replica's newer term wins.
        report(&mut s, 1, e1, 1, 0, 4, &[1]).expect("fenced report");
        assert_eq!(s.topics[&id].partitions[&0].leader, NO_LEADER);
        report(&mut s, 3, e3, 1, 0, 4, &[2, 3]).expect("new leader");
        assert_eq!(s.topics[&id].partitions[&0].leader, 3);
        // A report for a partition the broker does not replicate is ignored.
        create(&mut s, "u", 2, &[&[1]]).expect("create");
        report(&mut s, 3, e3, 2, 0, 9, &[3]).expect("foreign");
        assert_eq!(
            s.topics[&Uuid::from_u128(2)].partitions[&0].leader,
            NO_LEADER
        );
        // Stale epoch fence is ignored with an error.
        let err = apply(
            &mut s,
            Command::FenceBroker {
                broker_id: 2,
                broker_epoch: e2 + 100,
            },
        );
        assert!(matches!(err, Err(CommandError::StaleBrokerEpoch { .. })));
    }

    #[test]
    fn configs_and_producer_ids() {
        let mut s = MetadataState::default();
        let e = register(&mut s, 1, 0);
        create(&mut s, "t", 1, &[&[1]]).expect("create");
        let id = Uuid::from_u128(1);
        let set = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        apply(
            &mut s,
            Command::AlterTopicConfigs {
                topic_id: id,
                set: set.clone(),
                delete: vec![],
            },
        )
        .expect("alter");
        assert_eq!(s.topics[&id].configs, set);
        apply(
            &mut s,
            Command::AlterTopicConfigs {
                topic_id: id,
                set: BTreeMap::new(),
                delete: vec!["retention.ms".into()],
            },
        )
        .expect("alter");
        assert!(s.topics[&id].configs.is_empty());
        apply(
            &mut s,
            Command::AlterBrokerConfigs {
                broker_id: None,
                set: set.clone(),
                delete: vec![],
            },
        )
        .expect("alter");
        apply(
            &mut s,
            Command::AlterBrokerConfigs {
                broker_id: Some(1),
                set: set.clone(),
                delete: vec![],
            },
        )
        .expect("alter");
        assert_eq!(s.cluster_configs, set);
        assert_eq!(s.broker_configs[&1], set);

        let a = apply(
            &mut s,
            Command::AllocateProducerIds {
                broker_id: 1,
                broker_epoch: e,
                count: 1000,
            },
        );
        let b = apply(
            &mut s,
            Command::AllocateProducerIds {
                broker_id: 1,
                broker_epoch: e,
                count: 10,
            },
        );
        assert_eq!(
            a,
            Ok(Outcome::ProducerIds(ProducerIdBlock {
                broker_id: 1,
                start: 0,
                len: 1000
            }))
        );
        assert_eq!(
            b,
            Ok(Outcome::ProducerIds(ProducerIdBlock {
                broker_id: 1,
                start: 1000,
                len: 10
            }))
        );
        let z = apply(
            &mut s,
            Command::AllocateProducerIds {
                broker_id: 1,
                broker_epoch: e,
                count: 0,
            },
        );
        assert!(matches!(z, Err(CommandError::InvalidProducerIdRequest(_))));
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        let broker = 0..4i32;
        prop_oneof![
            (broker.clone(), 0..3u128, 0..30_000i64).prop_map(|(b, inc, now_ms)| {
                Command::RegisterBroker {
                    broker_id: b,
                    incarnation_id: Uuid::from_u128(inc),
                    listeners: vec![],
                    rack: None,
                    now_ms,
                }
            }),
            (broker.clone(), 0..6i64).prop_map(|(b, e)| Command::FenceBroker {
                broker_id: b,
                broker_epoch: e
            }),
            (broker.clone(), 0..6i64).prop_map(|(b, e)| Command::UnfenceBroker {
                broker_id: b,
                broker_epoch: e
            }),
            (
                0..3u128,
                proptest::collection::vec(proptest::collection::vec(broker.clone(), 1..3), 0..3)
            )
                .prop_map(|(id, sets)| Command::CreateTopic {
                    name: format!("t{id}"),
                    topic_id: Uuid::from_u128(id),
                    partitions: sets
                        .into_iter()
                        .map(|replicas| PartitionAssignment { replicas })
                        .collect(),
                    configs: BTreeMap::new(),
                }),
            (0..3u128, any::<bool>()).prop_map(|(id, remote_cleanup)| Command::DeleteTopic {
                topic_id: Uuid::from_u128(id),
                remote_cleanup,
            }),
            (broker.clone(), 0..6i64, 0..3u128, 0..3i32, 0..4i32).prop_map(
                |(b, e, id, partition, term)| Command::ReportLeadership {
                    broker_id: b,
                    broker_epoch: e,
                    partitions: vec![LeadershipReport {
                        topic_id: Uuid::from_u128(id),
                        partition,
                        leader_epoch: term,
                        isr: vec![b],
                    }],
                }
            ),
            (
                0..3u128,
                0..2i32,
                proptest::option::of(proptest::collection::vec(broker.clone(), 0..4))
            )
                .prop_map(|(id, partition, target)| Command::AlterReassignments {
                    changes: vec![ReassignmentChange {
                        topic_id: Uuid::from_u128(id),
                        partition,
                        target,
                    }],
                }),
            (
                broker.clone(),
                0..6i64,
                0..3u128,
                0..2i32,
                proptest::collection::vec(broker.clone(), 1..4)
            )
                .prop_map(|(b, e, id, partition, voters)| {
                    Command::CompleteReassignment {
                        broker_id: b,
                        broker_epoch: e,
                        topic_id: Uuid::from_u128(id),
                        partition,
                        leader_epoch: 3,
                        voters,
                    }
                }),
            (broker, 0..6i64, 0..5u32).prop_map(|(b, e, count)| Command::AllocateProducerIds {
                broker_id: b,
                broker_epoch: e,
                count,
            }),
        ]
    }

    proptest! {
        /// Rejected commands leave the state untouched; invariants hold after every command; the
        /// state round-trips through its snapshot encoding.
        #[test]
        fn invariants_hold_under_random_commands(commands in proptest::collection::vec(arb_command(), 0..40)) {
            let mut s = MetadataState::default();
            for c in commands {
                let before = s.clone();
                if apply(&mut s, c).is_err() {
                    prop_assert_eq!(&s, &before);
                }
                for t in s.topics.values() {
                    prop_assert_eq!(s.topic_ids.get(&t.name), Some(&t.topic_id));
                    for p in t.partitions.values() {
                        if p.leader != NO_LEADER {
                            prop_assert!(p.replicas.contains(&p.leader));
                            prop_assert!(s.is_unfenced(p.leader), "leader {} is fenced", p.leader);
                        }
                        // Every broker that may hold data stays in `replicas` while a
                        // reassignment runs, and the target comes first.
                        let mut seen = BTreeSet::new();
                        prop_assert!(p.replicas.iter().all(|b| seen.insert(*b)), "duplicate replica");
                        if let Some(r) = &p.reassignment {
                            prop_assert_eq!(&p.replicas[..r.target.len()], &r.target[..]);
                            prop_assert!(r.original.iter().all(|b| p.replicas.contains(b)));
                        }
                    }
                }
            }
            let bytes = serde_json::to_vec(&s).expect("encode");
            let back: MetadataState = serde_json::from_slice(&bytes).expect("decode");
            prop_assert_eq!(back, s);
        }
    }
}
