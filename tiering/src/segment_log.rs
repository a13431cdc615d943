//! The segment-file partition log: a directory of segments, the persisted log start offset, the
//! leader epoch checkpoint and producer state snapshots (layout in RFC 0001).
//!
//! Append write order: (1) producer check, header rewrite; (2) roll if needed (which fsyncs the
//! sealed segment, writes a producer snapshot at the new base and creates the new segment);
//! (3) if the batch starts a new leader epoch, the epoch checkpoint is replaced first; (4) the
//! batch bytes are written to the active `.log` — the *append* commit point; (5) in-memory
//! producer state and indexes are updated. A failed write cuts the `.log` back and removes the
//! epoch added in (3), leaving the log exactly as before. Durability comes from `flush`, `roll`,
//! `close`, or a `PendingSync` taken after the append.
//!
//! Crash behaviour: everything not fsynced may be lost or torn; `open` (see `recovery`) cuts the
//! active segment back to its last valid batch and rebuilds what depends on it. Deletions
//! (retention, purge, truncation) persist the new log start first and delete segment files
//! afterwards, oldest first for prefixes and newest first for suffixes, so an interrupted deletion
//! leaves a contiguous log that the next open or pass finishes cleaning.

mod entries;
mod offload;
mod recovery;

pub use entries::{EntryBody, ProposalOutcome, ResetPoint, StoredEntry};
pub use offload::{SealedSegment, SegmentReader};

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{rewrite_batch_header, BatchHeader};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::fs_util::fsync_dir;
use crate::leader_epoch::LeaderEpochCache;
use crate::log::{
    admit, log_append_time, AppendOutcome, PartitionLog, PendingSync, RetentionOutcome,
};
use crate::log_start;
use crate::producer_state::{delete_snapshots, ProducerStateManager};
use crate::record_search;
use crate::segment::Segment;

/// Largest relative offset a segment may hold (index entries store it as 32 bits; Kafka's limit).
const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;
/// Largest segment file (index entries store positions as 32 bits; Kafka's limit).
const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// A partition log stored as segment files in one directory.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ordered by base offset, contiguous, never empty; the last one is the active segment.
    segments: Vec<Segment>,
    log_start_offset: i64,
    producers: ProducerStateManager,
    epochs: LeaderEpochCache,
    /// Replicated mode: the Raft entry state (`None` for a plain log).
    replication: Option<entries::Replication>,
}

impl SegmentLog {
    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The idempotent producer state (for inspection and tests).
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    /// The leader epoch cache.
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Removes a partition directory and everything in it (a missing directory is fine).
    pub fn delete_files(dir: &Path) -> Result<(), LogError> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(format!(
                "delete partition directory {}",
                dir.display()
            ))(e)),
            _ => Ok(()),
        }
    }

    /// Closes the log without flushing and removes its directory (partition deletion).
    pub fn destroy(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        SegmentLog::delete_files(&dir)
    }

    /// Fault injection: the next append to the active segment writes `budget` bytes and fails.
    #[cfg(test)]
    pub(crate) fn fail_next_write_after(&mut self, budget: usize) {
        self.active_mut().fail_next_write_after = Some(budget);
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a segment log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a segment log always has a segment")
    }

    /// Index of the segment that holds `offset` (the last one whose base is <= it).
    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// Calls `f` with the header of every batch that ends at or after `from`, in order.
    fn for_each_batch_from(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        for segment in &self.segments[self.segment_index_for(from)..] {
            let Some(mut position) = segment.position_of(from)? else {
                continue;
            };
            while let Some(header) = segment.read_header_at(position)? {
                f(&header)?;
                position += header.total_size() as u64;
            }
        }
        Ok(())
    }

    /// Rebuilds producer state from the newest snapshot at or below the log end plus replay.
    fn rebuild_producer_state(&mut self) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        let (mut producers, from) = ProducerStateManager::load_latest(&self.dir, log_end)?
            .unwrap_or_else(|| (ProducerStateManager::new(), i64::MIN));
        self.for_each_batch_from(from.max(0), |h| {
            if h.base_offset >= from {
                producers.update(h, h.base_offset);
            }
            Ok(())
        })?;
        self.producers = producers;
        Ok(())
    }

    fn should_roll(&self, header: &BatchHeader, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let size = header.total_size() as u64;
        let new_size = active.size() + size;
        new_size > self.config.segment_bytes
            || new_size > MAX_SEGMENT_BYTES
            || header.last_offset() - active.base_offset() > MAX_RELATIVE_OFFSET
            || active
                .first_append_ms()
                .is_some_and(|first| now_ms.saturating_sub(first) > self.config.segment_ms)
    }

    /// Persists a higher log start, trims the epoch cache, and deletes the `count` oldest
    /// segments (never the active one). Returns the bytes deleted.
    fn advance_start_and_delete(&mut self, new_start: i64, count: usize) -> Result<u64, LogError> {
        // Replicated mode: segments holding entries Raft still needs stay (the log start, a
        // logical bound, moves anyway).
        let count = count.min(self.deletable_segments());
        if new_start > self.log_start_offset {
            log_start::store(&self.dir, new_start)?;
            self.log_start_offset = new_start;
            self.epochs.truncate_from_start(new_start)?;
        }
        if count == 0 {
            return Ok(0);
        }
        let mut deleted = 0;
        for segment in self.segments.drain(..count) {
            deleted += segment.size();
            segment.delete()?;
        }
        let first_base = self.segments[0].base_offset();
        delete_snapshots(&self.dir, |o| o < first_base)?;
        fsync_dir(&self.dir)?;
        Ok(deleted)
    }

    fn check_readable(&self, offset: i64) -> Result<(), LogError> {
        let (log_start, log_end) = (self.log_start_offset, self.log_end_offset());
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        Ok(())
    }

    /// Reads the whole batch at `position` of `segment`.
    fn read_batch(segment: &Segment, position: u64) -> Result<Option<Vec<u8>>, LogError> {
        match segment.read_header_at(position)? {
            Some(h) => Ok(Some(segment.read_bytes(position, h.total_size())?)),
            None => Ok(None),
        }
    }
}

impl PartitionLog for SegmentLog {
    fn append_batch(
        &mut self,
        batch: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, LogError> {
        if let Some(duplicate) = admit(batch, &self.config, &self.producers)? {
            return Ok(duplicate);
        }
        let base_offset = self.log_end_offset();
        let log_append_time_ms = log_append_time(&self.config, now_ms);
        rewrite_batch_header(batch, base_offset, leader_epoch, log_append_time_ms);
        let header = BatchHeader::parse(batch)?;
        if self.should_roll(&header, now_ms) {
            self.roll()?;
        }
        let new_epoch = self.epochs.assign(leader_epoch, base_offset)?;
        let interval = self.config.index_interval_bytes;
        if let Err(e) = self.active_mut().append(batch, &header, interval, now_ms) {
            if new_epoch {
                if let Err(undo) = self.epochs.truncate_from_end(base_offset) {
                    tracing::warn!(
                        "could not remove leader epoch={leader_epoch} after a failed append: {undo}"
                    );
                }
            }
            return Err(e);
        }
        self.producers.update(&header, base_offset);
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
        self.check_readable(start_offset)?;
        let mut out = Vec::new();
        let mut offset = start_offset;
        for segment in &self.segments[self.segment_index_for(start_offset)..] {
            let Some(run_start) = segment.position_of(offset)? else {
                continue;
            };
            let mut run_end = run_start;
            let mut full = false;
            while let Some(header) = segment.read_header_at(run_end)? {
                if header.base_offset >= upper_bound {
                    full = true;
                    break;
                }
                let taken = out.len() + (run_end - run_start) as usize;
                let size = header.total_size();
                if taken + size > max_bytes && !(min_one_batch && taken == 0) {
                    full = true;
                    break;
                }
                run_end += size as u64;
            }
            if run_end > run_start {
                out.extend(segment.read_bytes(run_start, (run_end - run_start) as usize)?);
            }
            if full {
                break;
            }
            offset = segment.next_offset();
        }
        Ok(Bytes::from(out))
    }

    fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn config(&self) -> &LogConfig {
        &self.config
    }

    fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let log_start = self.log_start_offset;
        for segment in &self.segments[self.segment_index_for(log_start)..] {
            if segment.max_timestamp() < timestamp {
                continue;
            }
            let mut position = segment.time_scan_start(timestamp)?;
            while let Some(header) = segment.read_header_at(position)? {
                if header.max_timestamp >= timestamp && header.last_offset() >= log_start {
                    let batch = segment.read_bytes(position, header.total_size())?;
                    if let Some((offset, ts)) = record_search::first_at_or_after(&batch, timestamp)?
                    {
                        return Ok(Some((offset.max(log_start), ts)));
                    }
                }
                position += header.total_size() as u64;
            }
        }
        Ok(None)
    }

    fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let log_start = self.log_start_offset;
        let mut best: Option<&Segment> = None;
        for segment in &self.segments[self.segment_index_for(log_start)..] {
            if segment.max_timestamp_batch().is_some()
                && best.is_none_or(|b| segment.max_timestamp() > b.max_timestamp())
            {
                best = Some(segment);
            }
        }
        let Some(segment) = best else {
            return Ok(None);
        };
        let batch_base = segment
            .max_timestamp_batch()
            .expect("segment chosen for having a max timestamp batch");
        let Some(position) = segment.position_of(batch_base)? else {
            return Ok(None);
        };
        let Some(batch) = SegmentLog::read_batch(segment, position)? else {
            return Ok(None);
        };
        Ok(record_search::max_timestamp_record(&batch)?
            .map(|(offset, ts)| (offset.max(log_start), ts)))
    }

    fn offset_for_leader_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    fn leader_epochs(&self) -> Vec<crate::leader_epoch::EpochEntry> {
        self.epochs.entries().to_vec()
    }

    fn sealed_segments(
        &self,
        from: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<SealedSegment>, LogError> {
        self.sealed_segment_views(from, upto, limit)
    }

    fn local_retention_boundary(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        offloaded_end: i64,
    ) -> i64 {
        let sealed = &self.segments[..self.segments.len() - 1];
        let offloaded = sealed
            .iter()
            .take_while(|s| s.next_offset() <= offloaded_end)
            .count();
        let mut count = 0;
        if retention_ms >= 0 {
            let cutoff = now_ms.saturating_sub(retention_ms);
            count = sealed[..offloaded]
                .iter()
                .take_while(|s| s.retention_timestamp() < cutoff)
                .count();
        }
        if retention_bytes >= 0 {
            let limit = retention_bytes as u64;
            let mut remaining: u64 = self.segments[count..].iter().map(Segment::size).sum();
            while count < offloaded && remaining - self.segments[count].size() >= limit {
                remaining -= self.segments[count].size();
                count += 1;
            }
        }
        if count == 0 {
            self.log_start_offset
        } else {
            self.segments[count]
                .base_offset()
                .max(self.log_start_offset)
        }
    }

    fn sealed_count_from(&self, offset: i64) -> usize {
        self.segments[..self.segments.len() - 1]
            .iter()
            .filter(|s| s.base_offset() >= offset)
            .count()
    }

    fn size_bytes_from(&self, offset: i64) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.base_offset() >= offset)
            .map(Segment::size)
            .sum()
    }

    fn purge_prefix(&mut self, new_start: i64) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        if new_start < 0 {
            return Err(LogError::InvalidOffset {
                offset: new_start,
                reason: "the log start offset cannot be negative",
            });
        }
        if new_start > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset: new_start,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let new_start = new_start.max(self.log_start_offset);
        let sealed = self.segments.len() - 1;
        let below = self.segments[..sealed]
            .iter()
            .take_while(|s| s.next_offset() <= new_start)
            .count();
        if new_start == self.log_start_offset && below.min(self.deletable_segments()) == 0 {
            return Ok(());
        }
        // Also finishes deletions a replicated log had to defer until Raft purged the entries.
        self.advance_start_and_delete(new_start, below)?;
        Ok(())
    }

    fn truncate_suffix(&mut self, offset: i64) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        if offset >= log_end {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let keep = self.segment_index_for(offset) + 1;
        while self.segments.len() > keep {
            let segment = self.segments.pop().expect("more segments than kept");
            segment.delete()?;
        }
        fsync_dir(&self.dir)?;
        let interval = self.config.index_interval_bytes;
        self.active_mut().truncate_to(offset, interval)?;
        let new_end = self.log_end_offset();
        if self.log_start_offset > new_end {
            log_start::store(&self.dir, new_end)?;
            self.log_start_offset = new_end;
        }
        self.epochs.truncate_from_end(new_end)?;
        delete_snapshots(&self.dir, |o| o > new_end)?;
        self.rebuild_producer_state()
    }

    fn roll(&mut self) -> Result<(), LogError> {
        if self.active().is_empty() {
            return Ok(());
        }
        let new_base = self.log_end_offset();
        let sealed_base = self.active().base_offset();
        self.active_mut().flush()?;
        self.producers.write_snapshot(&self.dir, new_base)?;
        // Keep one snapshot per segment boundary: the ones taken inside the sealed segment (at
        // clean shutdowns) are superseded by the one at its end.
        delete_snapshots(&self.dir, |o| o > sealed_base && o < new_base)?;
        let mut segment = Segment::create(&self.dir, new_base)?;
        if self.replication.is_some() {
            segment.entries = Some(crate::entry_index::EntryFile::create(
                &self.dir,
                new_base,
                self.next_index(),
            )?);
        }
        self.segments.push(segment);
        tracing::debug!(dir = %self.dir.display(), base_offset = new_base, "rolled segment");
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.active_mut().flush()
    }

    fn pending_sync(&self) -> PendingSync {
        let mut files = vec![self.active().file().clone()];
        if let Some(e) = &self.active().entries {
            files.push(e.file().clone());
        }
        if let Some(m) = self.marker_file() {
            files.push(m);
        }
        PendingSync::new(self.log_end_offset(), files)
    }

    fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let retention_ms = self.config.retention_ms;
        let cutoff = now_ms.saturating_sub(retention_ms);
        // A replicated log rolls only where its leader rolled (entries carry it).
        if retention_ms >= 0
            && self.replication.is_none()
            && !self.active().is_empty()
            && self.active().retention_timestamp() < cutoff
            && self.segments[..self.segments.len() - 1]
                .iter()
                .all(|s| s.retention_timestamp() < cutoff)
        {
            self.roll()?;
        }
        let sealed = self.segments.len() - 1;
        let mut count = 0;
        if retention_ms >= 0 {
            count = self.segments[..sealed]
                .iter()
                .take_while(|s| s.retention_timestamp() < cutoff)
                .count();
        }
        if self.config.retention_bytes >= 0 {
            let limit = self.config.retention_bytes as u64;
            let mut remaining: u64 = self.segments[count..].iter().map(Segment::size).sum();
            while count < sealed && remaining - self.segments[count].size() >= limit {
                remaining -= self.segments[count].size();
                count += 1;
            }
        }
        let new_start = self.segments[count].base_offset();
        let deleted_bytes = self.advance_start_and_delete(new_start, count)?;
        Ok(RetentionOutcome {
            deleted_segments: count,
            deleted_bytes,
            log_start_offset: self.log_start_offset,
        })
    }

    fn close(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let log_end = self.log_end_offset();
        let active_base = self.active().base_offset();
        self.producers.write_snapshot(&self.dir, log_end)?;
        // Earlier shutdown snapshots inside the active segment are superseded by this one.
        delete_snapshots(&self.dir, |o| o > active_base && o < log_end)
    }
}

#[cfg(test)]
#[path = "segment_log/entries_tests.rs"]
mod entries_tests;
