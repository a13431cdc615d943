//! Broker error types, and the one place where internal errors become Kafka error codes.

use std::path::PathBuf;

use kafka_protocol::error::ResponseError;
use tiering::{BatchError, LogError};

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// What the parser said (it names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid value for config key `{key}`: {value:?} ({reason})")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// Errors raised while serving a request, each mapped to one Kafka error code by [`BrokerError::code`].
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The partition log failed or refused the operation.
    #[error("partition {partition}: {source}")]
    Log {
        /// `topic-partition` label.
        partition: String,
        /// What the log said.
        source: LogError,
    },
    /// The remote tier (object storage) failed or refused the operation.
    #[error("partition {partition}: remote tier: {source}")]
    Remote {
        /// `topic-partition` label.
        partition: String,
        /// What the remote tier said.
        source: tiering::remote::RemoteError,
    },
    /// Local disk use is at its limit (uploads stalled or the disk is full); produce is refused
    /// until space is freed.
    #[error("local disk limit reached: {0}")]
    DiskFull(String),
    /// A produced record batch failed validation.
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    /// The topic or partition does not exist.
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    /// No topic has this id.
    #[error("unknown topic id {0}")]
    UnknownTopicId(uuid::Uuid),
    /// The topic name is not a legal Kafka topic name.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// A topic with this name exists.
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    /// Bad partition count.
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    /// This broker does not lead the partition (or the partition has no leader right now).
    #[error("not the leader of {0}")]
    NotLeader(String),
    /// The metadata quorum did not commit the change (no leader within the timeout, or the
    /// controller is shutting down); the client retries.
    #[error("controller unavailable: {0}")]
    ControllerUnavailable(String),
    /// A replica assignment names unknown brokers or is inconsistent.
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// Bad replication factor.
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    /// Bad configuration name or value.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The request is malformed or inconsistent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The produce payload is larger than allowed.
    #[error("record list too large: {size} bytes > {max}")]
    RecordListTooLarge {
        /// Payload size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// A batch is larger than `max.message.bytes`.
    #[error("message too large: {size} bytes > {max}")]
    MessageTooLarge {
        /// Batch size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Records that the topic cannot accept (KIP-467); the indexes are within the partition's payload.
    #[error("invalid records: {message}")]
    InvalidRecord {
        /// Why.
        message: String,
        /// Index of every offending record.
        record_indexes: Vec<i32>,
    },
    /// Local metadata could not be persisted.
    #[error("metadata store: {0}")]
    MetadataIo(String),
    /// The request's timeout passed before the operation completed.
    #[error("request timed out")]
    RequestTimedOut,
    /// The broker is shutting down.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// The feature exists in Kafka but not (yet) in Strata.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The partition's replication group is not running or cannot be reached.
    #[error("replication unavailable: {0}")]
    ReplicationUnavailable(String),
    /// Fewer in-sync replicas than `min.insync.replicas` (before the append).
    #[error("not enough in-sync replicas for {partition}: {in_sync} < min.insync.replicas={min}")]
    NotEnoughReplicas {
        /// `topic-partition`.
        partition: String,
        /// In-sync replicas now.
        in_sync: usize,
        /// Required.
        min: usize,
    },
    /// The batch was written but did not reach `min.insync.replicas` replicas in time.
    #[error("{0}: written, but fewer than min.insync.replicas replicas acknowledged it")]
    NotEnoughReplicasAfterAppend(String),
    /// A group coordinator refusal (membership, generation, state).
    #[error("group: {0}")]
    Group(#[from] GroupError),
}

/// Why the group coordinator refused a request; each maps to one Kafka error code in
/// [`BrokerError::response_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not (or no longer) a member of the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The request carries a generation other than the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing; the member must rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// Another member with the same group.instance.id replaced this one.
    #[error("fenced instance id")]
    FencedInstanceId,
    /// KIP-394: the member must rejoin with the member id returned.
    #[error("member id required")]
    MemberIdRequired,
    /// The member's protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// The session timeout is outside the broker's allowed range.
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// The group id is empty or otherwise unusable.
    #[error("invalid group id")]
    InvalidGroupId,
    /// The group does not exist.
    #[error("group id not found")]
    GroupIdNotFound,
    /// The group still has members.
    #[error("group is not empty")]
    NonEmptyGroup,
    /// A member of the group consumes the topic whose offsets were to be deleted.
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// The commit's metadata string is longer than `offset.metadata.max.bytes`.
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    /// This broker stopped coordinating the group (shutting down); the client looks it up again.
    #[error("not coordinator")]
    NotCoordinator,
    /// The coordinator cannot serve this key (e.g. transactions).
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// This broker just became the coordinator and is still loading the group's partition.
    #[error("coordinator load in progress")]
    CoordinatorLoadInProgress,
    /// KIP-848: the member's epoch is ahead of or too far behind the coordinator's; it must rejoin.
    #[error("fenced member epoch")]
    FencedMemberEpoch,
    /// KIP-848: an OffsetCommit/OffsetFetch carries an epoch other than the member's current one.
    #[error("stale member epoch")]
    StaleMemberEpoch,
    /// KIP-848: the requested server assignor is not implemented.
    #[error("unsupported assignor")]
    UnsupportedAssignor,
    /// KIP-848: another member still holds the static instance id.
    #[error("unreleased instance id")]
    UnreleasedInstanceId,
}

impl BrokerError {
    /// Wraps a log error with the partition it came from.
    pub fn log(partition: impl Into<String>, source: LogError) -> Self {
        Self::Log {
            partition: partition.into(),
            source,
        }
    }

    /// The Kafka error for this error. This is the only mapping from internal errors to wire codes.
    pub fn response_error(&self) -> ResponseError {
        match self {
            Self::Log { source, .. } => log_error(source),
            Self::Remote { source, .. } => match source {
                tiering::remote::RemoteError::NotOffloaded { .. } => {
                    ResponseError::OffsetOutOfRange
                }
                tiering::remote::RemoteError::Log(e) => log_error(e),
                _ => ResponseError::KafkaStorageError,
            },
            Self::DiskFull(_) => ResponseError::KafkaStorageError,
            Self::Batch(_) => ResponseError::CorruptMessage,
            Self::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            Self::UnknownTopicId(_) => ResponseError::UnknownTopicId,
            Self::InvalidTopic(_) => ResponseError::InvalidTopicException,
            Self::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            Self::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            Self::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            Self::NotLeader(_) => ResponseError::NotLeaderOrFollower,
            Self::ReplicationUnavailable(_) => ResponseError::NotLeaderOrFollower,
            Self::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            Self::NotEnoughReplicasAfterAppend(_) => ResponseError::NotEnoughReplicasAfterAppend,
            Self::ControllerUnavailable(_) => ResponseError::NotController,
            Self::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            Self::InvalidConfig(_) => ResponseError::InvalidConfig,
            Self::InvalidRequest(_) => ResponseError::InvalidRequest,
            Self::RecordListTooLarge { .. } => ResponseError::RecordListTooLarge,
            Self::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            Self::InvalidRecord { .. } => ResponseError::InvalidRecord,
            Self::MetadataIo(_) => ResponseError::KafkaStorageError,
            Self::RequestTimedOut => ResponseError::RequestTimedOut,
            Self::ShuttingDown => ResponseError::NotLeaderOrFollower,
            Self::Unsupported(_) => ResponseError::UnsupportedVersion,
            Self::Group(g) => match g {
                GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
                GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
                GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
                GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
                GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
                GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
                GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
                GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
                GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
                GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
                GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
                GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
                GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
                GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
                GroupError::NotCoordinator => ResponseError::NotCoordinator,
                GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
                GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
                GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
                GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
            },
        }
    }

    /// The Kafka error code for this error.
    pub fn code(&self) -> i16 {
        self.response_error().code()
    }
}

fn log_error(e: &LogError) -> ResponseError {
    match e {
        // A batch whose records cannot be decoded (bad compressed data behind a valid CRC).
        LogError::Batch(_) | LogError::RecordDecode { .. } => ResponseError::CorruptMessage,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        _ if e.is_storage_error() => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(
            BrokerError::InvalidTopic("a b".into()).code(),
            17,
            "INVALID_TOPIC_EXCEPTION"
        );
        assert_eq!(BrokerError::UnknownTopicOrPartition("t-0".into()).code(), 3);
        assert_eq!(
            BrokerError::RecordListTooLarge { size: 2, max: 1 }.code(),
            18
        );
        let io = LogError::Io {
            context: "append".into(),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(
            BrokerError::log("t-0", io).code(),
            56,
            "KAFKA_STORAGE_ERROR"
        );
        let oor = LogError::OffsetOutOfRange {
            offset: 9,
            log_start: 0,
            log_end: 1,
        };
        assert_eq!(BrokerError::log("t-0", oor).code(), 1);
        assert_eq!(BrokerError::from(GroupError::UnknownMemberId).code(), 25);
        assert_eq!(BrokerError::from(GroupError::IllegalGeneration).code(), 22);
        assert_eq!(
            BrokerError::from(GroupError::RebalanceInProgress).code(),
            27
        );
        assert_eq!(BrokerError::from(GroupError::MemberIdRequired).code(), 79);
        assert_eq!(BrokerError::from(GroupError::FencedInstanceId).code(), 82);
        assert_eq!(BrokerError::from(GroupError::NonEmptyGroup).code(), 68);
        assert_eq!(BrokerError::from(GroupError::FencedMemberEpoch).code(), 110);
        assert_eq!(BrokerError::from(GroupError::StaleMemberEpoch).code(), 113);
    }
}
