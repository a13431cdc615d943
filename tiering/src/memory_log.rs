//! An in-memory partition log with the same semantics as the segment log, for unit tests of other
//! crates. Each batch plays the part of a sealed segment for retention; nothing is durable.

use bytes::Bytes;

use crate::batch::{rewrite_batch_header, BatchHeader};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::leader_epoch::LeaderEpochCache;
use crate::log::{
    admit, log_append_time, AppendOutcome, PartitionLog, PendingSync, RetentionOutcome,
};
use crate::producer_state::ProducerStateManager;
use crate::record_search;

#[derive(Debug, Clone)]
struct StoredBatch {
    header: BatchHeader,
    bytes: Bytes,
}

/// A partition log held in a `Vec` of batches.
#[derive(Debug, Clone)]
pub struct MemoryLog {
    config: LogConfig,
    batches: Vec<StoredBatch>,
    log_start_offset: i64,
    log_end_offset: i64,
    producers: ProducerStateManager,
    epochs: LeaderEpochCache,
}

impl MemoryLog {
    /// An empty log starting at offset 0.
    pub fn new(config: LogConfig) -> MemoryLog {
        MemoryLog {
            config,
            batches: Vec::new(),
            log_start_offset: 0,
            log_end_offset: 0,
            producers: ProducerStateManager::new(),
            epochs: LeaderEpochCache::in_memory(),
        }
    }

    /// Index of the batch containing `offset`, or of the first batch after it.
    fn batch_index_for(&self, offset: i64) -> usize {
        self.batches
            .partition_point(|b| b.header.last_offset() < offset)
    }

    /// Drops the `count` oldest batches and raises the log start to the next one's base.
    fn drop_oldest(&mut self, count: usize) -> u64 {
        let deleted: u64 = self.batches[..count]
            .iter()
            .map(|b| b.bytes.len() as u64)
            .sum();
        self.batches.drain(..count);
        let next = self
            .batches
            .first()
            .map_or(self.log_end_offset, |b| b.header.base_offset);
        self.raise_start(next);
        deleted
    }

    fn raise_start(&mut self, new_start: i64) {
        if new_start > self.log_start_offset {
            self.log_start_offset = new_start;
            self.epochs
                .truncate_from_start(new_start)
                .expect("an in-memory epoch cache does not fail");
        }
    }
}

impl PartitionLog for MemoryLog {
    fn append_batch(
        &mut self,
        batch: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, LogError> {
        if let Some(duplicate) = admit(batch, &self.config, &self.producers)? {
            return Ok(duplicate);
        }
        let base_offset = self.log_end_offset;
        let log_append_time_ms = log_append_time(&self.config, now_ms);
        rewrite_batch_header(batch, base_offset, leader_epoch, log_append_time_ms);
        let header = BatchHeader::parse(batch)?;
        self.epochs.assign(leader_epoch, base_offset)?;
        self.producers.update(&header, base_offset);
        self.batches.push(StoredBatch {
            header,
            bytes: Bytes::copy_from_slice(batch),
        });
        self.log_end_offset = header.last_offset() + 1;
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms,
        })
    }

    fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one_batch: bool,
    ) -> Result<Bytes, LogError> {
        if start_offset < self.log_start_offset || start_offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: start_offset,
                log_start: self.log_start_offset,
                log_end: self.log_end_offset,
            });
        }
        let mut out = Vec::new();
        for batch in &self.batches[self.batch_index_for(start_offset)..] {
            if batch.header.base_offset >= upper_bound {
                break;
            }
            if out.len() + batch.bytes.len() > max_bytes && !(min_one_batch && out.is_empty()) {
                break;
            }
            out.extend_from_slice(&batch.bytes);
        }
        Ok(Bytes::from(out))
    }

    fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    fn size_bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes.len() as u64).sum()
    }

    fn segment_count(&self) -> usize {
        1
    }

    fn config(&self) -> &LogConfig {
        &self.config
    }

    fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let log_start = self.log_start_offset;
        for batch in &self.batches[self.batch_index_for(log_start)..] {
            if batch.header.max_timestamp >= timestamp {
                if let Some((offset, ts)) =
                    record_search::first_at_or_after(&batch.bytes, timestamp)?
                {
                    return Ok(Some((offset.max(log_start), ts)));
                }
            }
        }
        Ok(None)
    }

    fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let log_start = self.log_start_offset;
        let mut best: Option<&StoredBatch> = None;
        for batch in &self.batches[self.batch_index_for(log_start)..] {
            if batch.header.max_timestamp >= 0
                && best.is_none_or(|b| batch.header.max_timestamp > b.header.max_timestamp)
            {
                best = Some(batch);
            }
        }
        match best {
            Some(batch) => Ok(record_search::max_timestamp_record(&batch.bytes)?
                .map(|(offset, ts)| (offset.max(log_start), ts))),
            None => Ok(None),
        }
    }

    fn leader_epochs(&self) -> Vec<crate::leader_epoch::EpochEntry> {
        self.epochs.entries().to_vec()
    }

    fn offset_for_leader_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    fn purge_prefix(&mut self, new_start: i64) -> Result<(), LogError> {
        if new_start < 0 {
            return Err(LogError::InvalidOffset {
                offset: new_start,
                reason: "the log start offset cannot be negative",
            });
        }
        if new_start > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: new_start,
                log_start: self.log_start_offset,
                log_end: self.log_end_offset,
            });
        }
        self.raise_start(new_start);
        let below = self
            .batches
            .partition_point(|b| b.header.last_offset() < new_start);
        self.batches.drain(..below);
        Ok(())
    }

    fn truncate_suffix(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.log_end_offset,
            });
        }
        let keep = self.batch_index_for(offset);
        let Some(first_removed) = self.batches.get(keep) else {
            return Ok(());
        };
        self.log_end_offset = first_removed.header.base_offset;
        self.batches.truncate(keep);
        // Cutting the batch that holds the log start moves the start back to its base.
        self.log_start_offset = self.log_start_offset.min(self.log_end_offset);
        self.epochs.truncate_from_end(self.log_end_offset)?;
        let mut producers = ProducerStateManager::new();
        for batch in &self.batches {
            producers.update(&batch.header, batch.header.base_offset);
        }
        self.producers = producers;
        Ok(())
    }

    fn roll(&mut self) -> Result<(), LogError> {
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LogError> {
        Ok(())
    }

    fn pending_sync(&self) -> PendingSync {
        PendingSync::new(self.log_end_offset, Vec::new())
    }

    fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let mut count = 0;
        if self.config.retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(self.config.retention_ms);
            count = self
                .batches
                .iter()
                .take_while(|b| b.header.max_timestamp < cutoff)
                .count();
        }
        if self.config.retention_bytes >= 0 {
            let limit = self.config.retention_bytes as u64;
            let mut remaining: u64 = self.batches[count..]
                .iter()
                .map(|b| b.bytes.len() as u64)
                .sum();
            while count < self.batches.len()
                && remaining - self.batches[count].bytes.len() as u64 >= limit
            {
                remaining -= self.batches[count].bytes.len() as u64;
                count += 1;
            }
        }
        let deleted_bytes = self.drop_oldest(count);
        Ok(RetentionOutcome {
            deleted_segments: count,
            deleted_bytes,
            log_start_offset: self.log_start_offset,
        })
    }

    fn close(&mut self) -> Result<(), LogError> {
        Ok(())
    }
}
