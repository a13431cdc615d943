//! The partition log interface shared by the segment-file log and the in-memory log.

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{BatchError, BatchHeader};
use crate::config::{LogConfig, TimestampType};
use crate::error::LogError;
use crate::leader_epoch::EpochEntry;
use crate::producer_state::{ProducerStateManager, SequenceCheck};
use crate::segment_log::SealedSegment;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The batch was written at these offsets.
    Appended {
        /// Offset assigned to the first record.
        base_offset: i64,
        /// Offset of the last record.
        last_offset: i64,
        /// The append time stamped into the batch, for `LogAppendTime` topics.
        log_append_time_ms: Option<i64>,
    },
    /// An idempotent producer retried a batch that is already in the log at these offsets.
    Duplicate {
        /// Offset of the original batch's first record.
        base_offset: i64,
        /// Offset of the original batch's last record.
        last_offset: i64,
    },
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Number of segments deleted.
    pub deleted_segments: usize,
    /// Bytes of segment data deleted.
    pub deleted_bytes: u64,
    /// The log start offset after the pass.
    pub log_start_offset: i64,
}

/// A handle that makes every batch appended so far (up to `end_offset`) durable without holding
/// on to the log, so the fsync can run outside the log's lock (group commit).
#[derive(Debug, Clone)]
pub struct PendingSync {
    end_offset: i64,
    files: Vec<Arc<File>>,
}

impl PendingSync {
    /// A handle for `files` (the active segment's `.log`, and in replicated mode its entry index
    /// and the marker store) covering offsets below `end_offset`; no files for in-memory logs.
    pub(crate) fn new(end_offset: i64, files: Vec<Arc<File>>) -> PendingSync {
        PendingSync { end_offset, files }
    }

    /// Every offset below this is durable once `sync` returns `Ok`.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Fsyncs the active segment's files (fdatasync). Sealed segments were fsynced when rolled.
    pub fn sync(&self) -> Result<(), LogError> {
        for file in &self.files {
            file.sync_data().map_err(LogError::io(format!(
                "fsync active segment up to offset={}",
                self.end_offset
            )))?;
        }
        Ok(())
    }
}

/// A partition's ordered log of magic-v2 record batches.
///
/// See `docs/rfcs/0001-partition-log.md` for the semantics; both [`crate::SegmentLog`] and
/// [`crate::MemoryLog`] implement it and pass the same conformance tests.
pub trait PartitionLog: Send {
    /// Appends one batch that already passed [`crate::validate_batches`]: checks its size and
    /// idempotent producer sequence, assigns offsets from the log end, stamps the leader epoch
    /// (and the append time for `LogAppendTime` topics) into `batch`, and writes it.
    fn append_batch(
        &mut self,
        batch: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, LogError>;

    /// Whole batches starting with the one containing `start_offset`, stopping before a batch
    /// with base offset >= `upper_bound` or one that would push the total past `max_bytes`
    /// (except that with `min_one_batch` the first batch is always returned whole).
    fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
    ) -> Result<Bytes, LogError>;

    /// The first offset still readable.
    fn log_start_offset(&self) -> i64;

    /// The offset the next appended record will get.
    fn log_end_offset(&self) -> i64;

    /// Total bytes of batch data held.
    fn size_bytes(&self) -> u64;

    /// Number of segments (the in-memory log reports 1).
    fn segment_count(&self) -> usize;

    /// The current configuration.
    fn config(&self) -> &LogConfig;

    /// Replaces the configuration (takes effect for later appends and retention passes).
    fn set_config(&mut self, config: LogConfig);

    /// `(offset, timestamp)` of the first record with timestamp >= `timestamp` (never below the
    /// log start), or `None` if there is none.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError>;

    /// `(offset, timestamp)` of the record with the largest timestamp, or `None` if no record
    /// carries one.
    fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError>;

    /// The largest leader epoch <= `epoch` and the offset where it ends, or `None` if `epoch` is
    /// below every known epoch.
    fn offset_for_leader_epoch(&self, epoch: i32) -> Option<(i32, i64)>;

    /// Raises the log start offset to `new_start` (DeleteRecords) and drops data entirely below it.
    fn purge_prefix(&mut self, new_start: i64) -> Result<(), LogError>;

    /// Removes every batch from the one containing `offset` onwards.
    fn truncate_suffix(&mut self, offset: i64) -> Result<(), LogError>;

    /// Seals the active segment and starts a new one (no-op if the active segment is empty).
    fn roll(&mut self) -> Result<(), LogError>;

    /// Makes everything appended so far durable.
    fn flush(&mut self) -> Result<(), LogError>;

    /// A handle to make the appends so far durable without borrowing the log.
    fn pending_sync(&self) -> PendingSync;

    /// Deletes segments expired by `retention.ms` or in excess of `retention.bytes`.
    fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, LogError>;

    /// Flushes and records producer state so that the next open needs no replay.
    fn close(&mut self) -> Result<(), LogError>;

    /// The `(epoch, start offset)` pairs known locally, oldest first.
    fn leader_epochs(&self) -> Vec<EpochEntry>;

    /// Sealed segments with `base_offset >= from` and `next_offset <= upto`, at most `limit`, for
    /// offloading. Logs without segment files have none.
    fn sealed_segments(
        &self,
        _from: i64,
        _upto: i64,
        _limit: usize,
    ) -> Result<Vec<SealedSegment>, LogError> {
        Ok(Vec::new())
    }

    /// Where the local log may start once sealed segments that are already offloaded (entirely
    /// below `offloaded_end`) and past local retention (`retention_ms` by newest timestamp,
    /// `retention_bytes` of local size; -1 = no limit) are deleted. Never past `offloaded_end`.
    fn local_retention_boundary(
        &self,
        _now_ms: i64,
        _retention_ms: i64,
        _retention_bytes: i64,
        _offloaded_end: i64,
    ) -> i64 {
        self.log_start_offset()
    }

    /// Bytes of the segments whose base offset is >= `offset` (the part not offloaded yet).
    fn size_bytes_from(&self, _offset: i64) -> u64 {
        self.size_bytes()
    }

    /// Number of sealed segments whose base offset is >= `offset`.
    fn sealed_count_from(&self, _offset: i64) -> usize {
        0
    }
}

/// The checks every log implementation makes before appending `batch`: it is exactly one whole batch,
/// within `max.message.bytes`, and not a retry of one of its producer's last five batches (then the
/// original's offsets are returned as `Some(Duplicate)` and nothing is written).
pub(crate) fn admit(
    batch: &[u8],
    config: &LogConfig,
    producers: &ProducerStateManager,
) -> Result<Option<AppendOutcome>, LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_size() != batch.len() {
        return Err(BatchError::TooShort {
            needed: header.total_size(),
            available: batch.len(),
        }
        .into());
    }
    if batch.len() > config.max_message_bytes as usize {
        return Err(LogError::MessageTooLarge {
            size: batch.len(),
            max: config.max_message_bytes,
        });
    }
    match producers.check(&header)? {
        SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } => Ok(Some(AppendOutcome::Duplicate {
            base_offset,
            last_offset,
        })),
        _ => Ok(None),
    }
}

/// The LogAppendTime to stamp on a batch appended at `now_ms`, if the topic uses it.
pub(crate) fn log_append_time(config: &LogConfig, now_ms: i64) -> Option<i64> {
    (config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms)
}
