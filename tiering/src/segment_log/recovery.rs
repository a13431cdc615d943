//! Opening a partition directory: recovery after a clean close or a crash.
//!
//! Steps, in order:
//! 1. Delete leftover `*.tmp` files (interrupted atomic writes; the originals are intact).
//! 2. Open every sealed segment, trusting its `.log` (fsynced at roll) and rebuilding its indexes
//!    only if they are missing or malformed.
//! 3. Recover the active (last) segment: validate batch by batch (length, magic, CRC32C, offset
//!    continuity), cut the first bad or incomplete batch and everything after it, rebuild indexes.
//! 4. Load `log-start-offset` (clamped into the segments' range) and delete whole segments below
//!    it left by an interrupted deletion.
//! 5. Load the leader epoch checkpoint, drop epochs starting at or past the log end, and re-derive
//!    epochs from the active segment's batches.
//! 6. Delete producer snapshots above the log end, load the newest one at or below it and replay
//!    the batches after it (no replay after a clean close, whose snapshot is at the log end).

use std::path::Path;

use super::SegmentLog;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::fs_util::{fsync_dir, remove_if_exists, TMP_SUFFIX};
use crate::leader_epoch::LeaderEpochCache;
use crate::log_start;
use crate::producer_state::{delete_snapshots, ProducerStateManager};
use crate::segment::{Segment, LOG_EXTENSION};

impl SegmentLog {
    /// Opens (creating if missing) the partition log in `dir`, running recovery.
    pub fn open(dir: &Path, config: LogConfig) -> Result<SegmentLog, LogError> {
        std::fs::create_dir_all(dir).map_err(LogError::io(format!(
            "create partition directory {}",
            dir.display()
        )))?;
        let mut bases = scan_directory(dir)?;
        bases.sort_unstable();
        let persisted_start = log_start::load(dir)?;
        let interval = config.index_interval_bytes;

        let mut segments = Vec::with_capacity(bases.len().max(1));
        for pair in bases.windows(2) {
            segments.push(Segment::open_sealed(dir, pair[0], pair[1], interval)?);
        }
        match bases.last() {
            Some(&active_base) => {
                let (segment, cut) = Segment::recover(dir, active_base, interval)?;
                if cut > 0 {
                    tracing::warn!(dir = %dir.display(), bytes = cut, "recovery cut a torn tail");
                }
                segments.push(segment);
            }
            None => segments.push(Segment::create(dir, persisted_start.unwrap_or(0))?),
        }

        let first_base = segments[0].base_offset();
        let log_end = segments.last().expect("at least one segment").next_offset();
        let log_start_offset = persisted_start
            .unwrap_or(first_base)
            .clamp(first_base, log_end);
        if persisted_start.is_some_and(|p| p != log_start_offset) {
            tracing::warn!(
                dir = %dir.display(),
                "persisted log start offset={:?} outside [{first_base}, {log_end}]; using {log_start_offset}",
                persisted_start
            );
        }
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            producers: ProducerStateManager::new(),
            epochs: LeaderEpochCache::load(dir)?,
            replication: None,
        };
        if persisted_start != Some(log_start_offset) {
            log_start::store(dir, log_start_offset)?;
        }
        let sealed = log.segments.len() - 1;
        let below = log.segments[..sealed]
            .iter()
            .take_while(|s| s.next_offset() <= log_start_offset)
            .count();
        log.advance_start_and_delete(log_start_offset, below)?;

        log.epochs.truncate_from_end(log_end)?;
        log.epochs.truncate_from_start(log_start_offset)?;
        let active_base = log.active().base_offset();
        let mut epochs = std::mem::take(&mut log.epochs);
        log.for_each_batch_from(active_base, |h| {
            epochs.assign(h.partition_leader_epoch, h.base_offset)?;
            Ok(())
        })?;
        log.epochs = epochs;

        delete_snapshots(dir, |o| o > log_end)?;
        log.rebuild_producer_state()?;
        tracing::info!(
            dir = %dir.display(),
            segments = log.segments.len(),
            log_start_offset,
            log_end_offset = log_end,
            producers = log.producers.len(),
            "opened partition log"
        );
        Ok(log)
    }
}

/// Deletes `*.tmp` leftovers and returns the base offsets of the `.log` files in `dir`.
fn scan_directory(dir: &Path) -> Result<Vec<i64>, LogError> {
    let context = || format!("list partition directory {}", dir.display());
    let mut bases = Vec::new();
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(LogError::io(context()))? {
        let entry = entry.map_err(LogError::io(context()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TMP_SUFFIX) {
            remove_if_exists(&entry.path())?;
            removed = true;
        } else if let Some(stem) = name.strip_suffix(&format!(".{LOG_EXTENSION}")) {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        }
    }
    if removed {
        fsync_dir(dir)?;
    }
    Ok(bases)
}
