//! The leader epoch cache: `(epoch, start offset)` pairs, one per leader epoch seen in the log.
//!
//! Persisted to `leader-epoch-checkpoint` in Kafka's text format (`0`, the entry count, then one
//! `epoch start_offset` line per entry), replaced atomically on every change. The segment log
//! persists a new epoch *before* writing the first batch of that epoch, so after a crash the
//! checkpoint may name an epoch that starts at or past the recovered log end; recovery removes
//! such entries (`truncate_from_end`) and re-derives any missing ones from the batches it scans.

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::fs_util::atomic_write;

/// File name of the checkpoint inside a partition directory.
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

const CHECKPOINT_VERSION: u32 = 0;

/// One leader epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The partition leader epoch.
    pub epoch: i32,
    /// The first offset appended with this epoch.
    pub start_offset: i64,
}

/// The ordered `(epoch, start offset)` pairs of a partition, optionally backed by a checkpoint file.
#[derive(Debug, Clone, Default)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    path: Option<PathBuf>,
}

impl LeaderEpochCache {
    /// A cache that is never persisted (for the in-memory log).
    pub fn in_memory() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    /// Loads the checkpoint in `dir` (an absent file is an empty cache); later changes are written
    /// back to it.
    pub fn load(dir: &Path) -> Result<LeaderEpochCache, LogError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let entries = match std::fs::read_to_string(&path) {
            Ok(text) => parse_checkpoint(&text).map_err(|reason| LogError::Corrupt {
                context: format!("{}: {reason}", path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(LogError::io(format!("read {}", path.display()))(e)),
        };
        Ok(LeaderEpochCache {
            entries,
            path: Some(path),
        })
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest known epoch
    /// (negative epochs are ignored). Returns whether the cache changed (and was persisted).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, LogError> {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return Ok(false);
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()?;
        Ok(true)
    }

    /// Removes the epochs that start at or after `end_offset` (after a suffix truncation).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    /// Drops epochs that end before `start_offset` and moves the start of the epoch containing
    /// it up to `start_offset` (after the log start moved).
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        let below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if below == 0 {
            return Ok(());
        }
        let keep_from = below - 1;
        let changed = keep_from > 0 || self.entries[keep_from].start_offset != start_offset;
        if changed {
            self.entries.drain(..keep_from);
            self.entries[0].start_offset = start_offset;
            self.persist()?;
        }
        Ok(())
    }

    /// Kafka's OffsetForLeaderEpoch: the largest known epoch <= `epoch` and the offset where it
    /// ends (the start of the next epoch, or `log_end` for the latest). An epoch below every known
    /// one gets itself and the start of the earliest known epoch (as Kafka answers: that history
    /// is gone, and a follower resumes from there). `None` if nothing is known.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let floor = self.entries.partition_point(|e| e.epoch <= epoch);
        if floor == 0 {
            return self
                .entries
                .first()
                .map(|first| (epoch, first.start_offset));
        }
        let found = self.entries[floor - 1];
        let end = self
            .entries
            .get(floor)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    fn persist(&self) -> Result<(), LogError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        atomic_write(path, text.as_bytes())
    }
}

fn parse_checkpoint(text: &str) -> Result<Vec<EpochEntry>, String> {
    let mut lines = text.lines();
    let version = lines.next().ok_or("missing version line")?;
    if version.trim() != CHECKPOINT_VERSION.to_string() {
        return Err(format!("unsupported version={version}"));
    }
    let count: usize = lines
        .next()
        .ok_or("missing entry count")?
        .trim()
        .parse()
        .map_err(|e| format!("bad entry count: {e}"))?;
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut parts = line.split_whitespace();
        let (Some(epoch), Some(offset), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("bad entry line {line:?}"));
        };
        let entry = EpochEntry {
            epoch: epoch
                .parse()
                .map_err(|e| format!("bad epoch {epoch:?}: {e}"))?,
            start_offset: offset
                .parse()
                .map_err(|e| format!("bad offset {offset:?}: {e}"))?,
        };
        if entries
            .last()
            .is_some_and(|l| l.epoch >= entry.epoch || l.start_offset > entry.start_offset)
        {
            return Err(format!("entries out of order at {line:?}"));
        }
        entries.push(entry);
    }
    if entries.len() != count || lines.any(|l| !l.trim().is_empty()) {
        return Err(format!("expected {count} entries"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn assign_only_grows() {
        let mut c = LeaderEpochCache::in_memory();
        assert!(c.assign(0, 0).unwrap());
        assert!(!c.assign(0, 5).unwrap());
        assert!(!c.assign(-1, 6).unwrap());
        assert!(c.assign(3, 10).unwrap());
        assert!(!c.assign(2, 12).unwrap());
        assert_eq!(c.entries(), &[e(0, 0), e(3, 10)]);
    }

    #[test]
    fn end_offset_follows_kafka() {
        let mut c = LeaderEpochCache::in_memory();
        assert_eq!(c.end_offset_for(0, 0), None);
        c.assign(1, 0).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(5, 20).unwrap();
        assert_eq!(c.end_offset_for(0, 30), Some((0, 0)));
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(5, 30), Some((5, 30)));
        assert_eq!(c.end_offset_for(9, 30), Some((5, 30)));
    }

    #[test]
    fn truncation_both_ends() {
        let mut c = LeaderEpochCache::in_memory();
        c.assign(1, 0).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(5, 20).unwrap();
        c.truncate_from_start(12).unwrap();
        assert_eq!(c.entries(), &[e(3, 12), e(5, 20)]);
        c.truncate_from_start(5).unwrap();
        assert_eq!(c.entries(), &[e(3, 12), e(5, 20)]);
        c.truncate_from_end(20).unwrap();
        assert_eq!(c.entries(), &[e(3, 12)]);
        c.truncate_from_end(12).unwrap();
        assert!(c.entries().is_empty());
    }

    #[test]
    fn checkpoint_round_trips_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::load(dir.path()).unwrap();
        c.assign(0, 0).unwrap();
        c.assign(4, 100).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(text, "0\n2\n0 0\n4 100\n");
        let loaded = LeaderEpochCache::load(dir.path()).unwrap();
        assert_eq!(loaded.entries(), c.entries());
    }

    #[test]
    fn rejects_malformed_checkpoint() {
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n3 0\n1 5\n",
            "0\n1\n0 x\n",
        ] {
            assert!(parse_checkpoint(bad).is_err(), "{bad:?}");
        }
    }
}
