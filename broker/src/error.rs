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
            Self::Batch(_) => ResponseError::CorruptMessage,
            Self::UnknownTopicOrPartition(_) => ResponseError::UnknownTopicOrPartition,
            Self::UnknownTopicId(_) => ResponseError::UnknownTopicId,
            Self::InvalidTopic(_) => ResponseError::InvalidTopicException,
            Self::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            Self::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            Self::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            Self::InvalidConfig(_) => ResponseError::InvalidConfig,
            Self::InvalidRequest(_) => ResponseError::InvalidRequest,
            Self::RecordListTooLarge { .. } => ResponseError::RecordListTooLarge,
            Self::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            Self::MetadataIo(_) => ResponseError::KafkaStorageError,
            Self::RequestTimedOut => ResponseError::RequestTimedOut,
            Self::ShuttingDown => ResponseError::NotLeaderOrFollower,
            Self::Unsupported(_) => ResponseError::UnsupportedVersion,
        }
    }

    /// The Kafka error code for this error.
    pub fn code(&self) -> i16 {
        self.response_error().code()
    }
}

fn log_error(e: &LogError) -> ResponseError {
    match e {
        LogError::Batch(_) => ResponseError::CorruptMessage,
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
    }
}
