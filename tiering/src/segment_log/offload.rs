//! What the remote tier needs from the local log: immutable views of sealed segments to upload, and
//! seeding an empty partition directory so that the local log continues where the offloaded history
//! ends (restart with an empty disk).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::SegmentLog;
use crate::error::LogError;
use crate::fs_util::atomic_write;
use crate::index_file::IndexEntry;
use crate::leader_epoch::{EpochEntry, LeaderEpochCache};
use crate::log_start;
use crate::producer_state::snapshot_path;

/// A sealed (immutable, fsynced) segment, detached from the log's lock: its file handle stays
/// readable even if retention deletes the file meanwhile.
#[derive(Debug, Clone)]
pub struct SealedSegment {
    /// First offset.
    pub base_offset: i64,
    /// One past the last offset.
    pub next_offset: i64,
    /// Bytes in the `.log`.
    pub size: u64,
    /// Largest record timestamp (-1 if none).
    pub max_timestamp: i64,
    /// Base offset of the batch with the largest timestamp.
    pub max_timestamp_batch: Option<i64>,
    /// The offset index, encoded as in the `.index` file.
    pub offset_index: Vec<u8>,
    /// The time index, encoded as in the `.timeindex` file.
    pub time_index: Vec<u8>,
    /// Producer state as of `next_offset`, if the snapshot taken at roll still exists.
    pub producer_snapshot: Option<Vec<u8>>,
    /// Leader epochs in effect within the segment (the first may start before `base_offset`).
    pub epochs: Vec<EpochEntry>,
    /// When the segment was last written (its seal time, to the precision of the file's mtime).
    pub sealed_at_ms: Option<i64>,
    file: Arc<File>,
}

impl SealedSegment {
    /// A cheap handle that reads the segment's `.log`.
    pub fn reader(&self) -> SegmentReader {
        SegmentReader {
            base_offset: self.base_offset,
            file: self.file.clone(),
        }
    }
}

/// Reads a sealed segment's `.log` through a shared file handle.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    base_offset: i64,
    file: Arc<File>,
}

impl SegmentReader {
    /// Reads `len` bytes at `position` (blocking).
    pub fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(LogError::io(format!(
                "read sealed segment base_offset={} at {position}",
                self.base_offset
            )))?;
        Ok(buf)
    }
}

impl SegmentLog {
    /// Sealed segments with `base_offset >= from` and `next_offset <= upto`, oldest first, at most
    /// `limit` of them.
    pub fn sealed_segment_views(
        &self,
        from: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<SealedSegment>, LogError> {
        let sealed = &self.segments[..self.segments.len() - 1];
        let mut out = Vec::new();
        for s in sealed
            .iter()
            .filter(|s| s.base_offset() >= from && s.next_offset() <= upto && !s.is_empty())
            .take(limit)
        {
            let mut offset_index = Vec::with_capacity(s.offset_entries().len() * 8);
            for e in s.offset_entries() {
                e.encode(&mut offset_index);
            }
            let mut time_index = Vec::with_capacity(s.time_entries().len() * 12);
            for e in s.time_entries() {
                e.encode(&mut time_index);
            }
            let snapshot = snapshot_path(&self.dir, s.next_offset());
            let producer_snapshot = match std::fs::read(&snapshot) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(LogError::io(format!("read {}", snapshot.display()))(e));
                }
            };
            out.push(SealedSegment {
                base_offset: s.base_offset(),
                next_offset: s.next_offset(),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
                max_timestamp_batch: s.max_timestamp_batch(),
                offset_index,
                time_index,
                producer_snapshot,
                epochs: epochs_within(self.epochs.entries(), s.base_offset(), s.next_offset()),
                sealed_at_ms: s
                    .file()
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok()),
                file: s.file().clone(),
            });
        }
        Ok(out)
    }

    /// Prepares an empty partition directory so that [`SegmentLog::open`] starts the log at
    /// `start_offset` with the given producer state and leader epochs (the offloaded history ends
    /// there). Does nothing if the directory already holds a log.
    pub fn seed_empty_dir(
        dir: &Path,
        start_offset: i64,
        producer_snapshot: Option<&[u8]>,
        epochs: &[EpochEntry],
    ) -> Result<bool, LogError> {
        std::fs::create_dir_all(dir).map_err(LogError::io(format!(
            "create partition directory {}",
            dir.display()
        )))?;
        if log_start::load(dir)?.is_some() {
            return Ok(false);
        }
        let has_segments = std::fs::read_dir(dir)
            .map_err(LogError::io(format!("list {}", dir.display())))?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".log"));
        if has_segments {
            return Ok(false);
        }
        if let Some(bytes) = producer_snapshot {
            atomic_write(&snapshot_path(dir, start_offset), bytes)?;
        }
        let mut cache = LeaderEpochCache::load(dir)?;
        for e in epochs {
            cache.assign(e.epoch, e.start_offset)?;
        }
        log_start::store(dir, start_offset)?;
        Ok(true)
    }
}

/// The epochs in effect in `[base, next)`: the one containing `base` and those starting inside.
fn epochs_within(entries: &[EpochEntry], base: i64, next: i64) -> Vec<EpochEntry> {
    let first = entries
        .partition_point(|e| e.start_offset <= base)
        .saturating_sub(1);
    entries[first..]
        .iter()
        .copied()
        .filter(|e| e.start_offset < next)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_within_keeps_the_containing_and_inner_epochs() {
        let e = |epoch, start_offset| EpochEntry {
            epoch,
            start_offset,
        };
        let all = [e(0, 0), e(1, 50), e(2, 100), e(3, 200)];
        assert_eq!(epochs_within(&all, 60, 150), vec![e(1, 50), e(2, 100)]);
        assert_eq!(epochs_within(&all, 0, 50), vec![e(0, 0)]);
        assert_eq!(epochs_within(&all, 250, 300), vec![e(3, 200)]);
        assert_eq!(epochs_within(&[], 0, 10), vec![]);
    }
}

#[cfg(test)]
mod log_tests {
    use crate::batch::test_support::batch;
    use crate::{LogConfig, PartitionLog, SegmentLog};

    #[test]
    fn local_retention_only_deletes_offloaded_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let size = batch(2).len() as u64;
        let config = LogConfig {
            segment_bytes: 2 * size,
            ..LogConfig::default()
        };
        let mut log = SegmentLog::open(dir.path(), config).unwrap();
        for _ in 0..10 {
            let mut b = batch(2);
            log.append_batch(&mut b, 0, 0).unwrap();
        }
        // Segments hold 2 batches (4 offsets): [0,4) [4,8) [8,12) [12,16) [16,20) active.
        assert_eq!(log.segment_count(), 5);
        let views = log.sealed_segments(0, 12, 10).unwrap();
        assert_eq!(
            views
                .iter()
                .map(|v| (v.base_offset, v.next_offset))
                .collect::<Vec<_>>(),
            vec![(0, 4), (4, 8), (8, 12)]
        );
        assert!(
            views[0].producer_snapshot.is_some(),
            "snapshot taken at roll"
        );
        assert_eq!(log.sealed_segments(4, i64::MAX, 1).unwrap().len(), 1);
        // Timestamps are 1000..; everything is older than `now - 1`.
        let now = 1_000_000;
        // Nothing offloaded: nothing may go, whatever the retention.
        assert_eq!(log.local_retention_boundary(now, 0, 0, 0), 0);
        // Offloaded up to 8: time retention frees [0,8).
        assert_eq!(log.local_retention_boundary(now, 1, -1, 8), 8);
        // Offloaded up to 10 (mid-segment): only whole offloaded segments go.
        assert_eq!(log.local_retention_boundary(now, 1, -1, 10), 8);
        // Size: keep at least 3 segments' bytes locally.
        assert_eq!(
            log.local_retention_boundary(now, -1, (6 * size) as i64, 20),
            8
        );
        // Not expired, no size limit: keep.
        assert_eq!(log.local_retention_boundary(0, 1_000_000, -1, 20), 0);
        assert_eq!(log.size_bytes_from(12), 4 * size);
        log.purge_prefix(8).unwrap();
        assert_eq!(log.log_start_offset(), 8);
        assert_eq!(log.local_retention_boundary(now, 1, -1, 8), 8);
    }

    #[test]
    fn one_producer_snapshot_is_kept_per_segment_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let size = batch(2).len() as u64;
        let config = LogConfig {
            segment_bytes: 3 * size,
            ..LogConfig::default()
        };
        // Append and close repeatedly: each close writes a snapshot at the log end.
        for _ in 0..4 {
            let mut log = SegmentLog::open(dir.path(), config.clone()).unwrap();
            let mut b = batch(2);
            log.append_batch(&mut b, 0, 0).unwrap();
            log.close().unwrap();
        }
        // 4 batches of 2: segments [0,6) sealed, [6,8) active; snapshots at 6 (the boundary) and 8.
        let snaps = crate::producer_state::list_snapshots(dir.path()).unwrap();
        assert_eq!(snaps, vec![6, 8]);
    }
}
