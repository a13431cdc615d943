//! Strata's storage engine: the partition log (segments, indexes, recovery, retention, producer
//! state, leader epochs). Design: `docs/rfcs/0001-partition-log.md`.

#![warn(missing_docs)]

pub mod batch;
pub mod config;
pub mod decompress;
pub mod entry_index;
pub mod error;
mod fs_util;
mod index_file;
pub mod leader_epoch;
pub mod log;
mod log_start;
pub mod memory_log;
mod offset_index;
pub mod producer_state;
mod record_search;
pub mod remote;
pub mod segment;
pub mod segment_log;
mod time_index;

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod segment_log_tests;

pub use batch::{
    rewrite_batch_header, validate_batches, BatchError, BatchHeader, BatchIter, BATCH_HEADER_LEN,
    LOG_OVERHEAD,
};
pub use config::{LogConfig, TimestampType};
pub use entry_index::{EntryId, Marker};
pub use error::LogError;
pub use leader_epoch::{EpochEntry, LeaderEpochCache};
pub use log::{AppendOutcome, PartitionLog, PendingSync, RetentionOutcome};
pub use log_start::LOG_START_OFFSET_FILE;
pub use memory_log::MemoryLog;
pub use producer_state::ProducerStateManager;
pub use record_search::{keyless_record_indexes, recompress_batch, MAX_DECODED_RECORDS};
pub use segment_log::{
    EntryBody, ProposalOutcome, ResetPoint, SealedSegment, SegmentLog, SegmentReader, StoredEntry,
};
