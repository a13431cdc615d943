//! The partition log's error type and its classification.

use crate::batch::BatchError;

/// Raw OS error number for "no space left on device" on Linux.
const ENOSPC: i32 = 28;

/// Errors returned by a partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the file or offsets involved.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A batch is malformed.
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    /// The requested offset is outside `[log_start, log_end]`.
    #[error("offset={offset} out of range [log_start={log_start}, log_end={log_end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// The first offset still in the log.
        log_start: i64,
        /// The next offset to be assigned.
        log_end: i64,
    },
    /// An idempotent producer's batch does not follow its previous sequence number.
    #[error("out of order sequence for producer_id={producer_id}: expected={expected} got={got}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The first sequence number that would have been accepted.
        expected: i32,
        /// The batch's first sequence number.
        got: i32,
    },
    /// The producer's epoch is older than the one the log knows (a fenced zombie producer).
    #[error("invalid producer epoch for producer_id={producer_id}: current={current} got={got}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the log knows.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch size={size} larger than max.message.bytes={max}")]
    MessageTooLarge {
        /// The batch size in bytes.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// On-disk state is inconsistent in a way recovery cannot repair.
    #[error("corrupt partition log: {context}")]
    Corrupt {
        /// What was found, and where.
        context: String,
    },
    /// A stored batch's records could not be decoded (bad compressed data, or too many records).
    #[error("cannot decode records of batch base_offset={base_offset}: {reason}")]
    RecordDecode {
        /// Base offset of the batch.
        base_offset: i64,
        /// What went wrong.
        reason: String,
    },
    /// An offset argument is not acceptable for the operation (for example negative).
    #[error("invalid offset={offset}: {reason}")]
    InvalidOffset {
        /// The offending offset.
        offset: i64,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl LogError {
    /// Builds a closure that wraps an `io::Error` with context, for `map_err`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
        let context = context.into();
        move |source| LogError::Io { context, source }
    }

    /// Whether the partition's storage failed (Kafka's `KAFKA_STORAGE_ERROR`).
    pub fn is_storage_error(&self) -> bool {
        matches!(self, LogError::Io { .. } | LogError::Corrupt { .. })
    }

    /// Whether the failure is a full disk.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(ENOSPC)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_storage_errors() {
        let full = LogError::io("append to 00000000000000000000.log")(
            std::io::Error::from_raw_os_error(28),
        );
        assert!(full.is_storage_error());
        assert!(full.is_disk_full());
        assert!(full
            .to_string()
            .starts_with("append to 00000000000000000000.log: "));

        let eio = LogError::io("x")(std::io::Error::from_raw_os_error(5));
        assert!(eio.is_storage_error() && !eio.is_disk_full());
        let corrupt = LogError::Corrupt {
            context: "bad".into(),
        };
        assert!(corrupt.is_storage_error() && !corrupt.is_disk_full());
        let range = LogError::OffsetOutOfRange {
            offset: 5,
            log_start: 0,
            log_end: 3,
        };
        assert!(!range.is_storage_error());
        assert_eq!(
            range.to_string(),
            "offset=5 out of range [log_start=0, log_end=3]"
        );
    }
}
