//! Refuses produce while local disk use is at its limit, so a stalled object store (whose uploads
//! would free local segments) or a full disk leads to a clear, retriable error instead of a crash
//! or a failed write.
//!
//! Two limits: the bytes of all local partition data (`local_disk_limit_bytes`, 0 = none) and the
//! free space left on the data directory's filesystem (`local_disk_min_free_bytes`). Usage is
//! re-measured every second (and after every offload pass) and raised by every append in between, so
//! the limit holds even under a burst.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::BrokerError;

/// Local disk accounting shared by every partition.
#[derive(Debug)]
pub struct DiskGuard {
    dir: Option<PathBuf>,
    limit_bytes: u64,
    min_free_bytes: u64,
    used: AtomicU64,
    free: AtomicU64,
    over: AtomicBool,
    reason: Mutex<String>,
}

impl DiskGuard {
    /// A guard for the filesystem holding `dir`.
    pub fn new(dir: &Path, limit_bytes: u64, min_free_bytes: u64) -> DiskGuard {
        DiskGuard {
            dir: Some(dir.to_path_buf()),
            limit_bytes,
            min_free_bytes,
            used: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            over: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        }
    }

    /// A guard that never refuses (tests).
    pub fn unlimited() -> DiskGuard {
        DiskGuard {
            dir: None,
            limit_bytes: 0,
            min_free_bytes: 0,
            used: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            over: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
        }
    }

    /// Errors with `DiskFull` while over a limit.
    pub fn check(&self) -> Result<(), BrokerError> {
        if self.over.load(Ordering::Acquire) {
            return Err(BrokerError::DiskFull(self.reason.lock().clone()));
        }
        Ok(())
    }

    /// Counts `bytes` just appended.
    pub fn appended(&self, bytes: u64) {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let free = self.free.load(Ordering::Acquire).saturating_sub(bytes);
        self.free.store(free, Ordering::Release);
        self.evaluate(used, free);
    }

    /// Re-measures: `used` is the bytes of all local partition data.
    pub fn refresh(&self, used: u64) {
        self.used.store(used, Ordering::Release);
        let free = self.dir.as_deref().and_then(free_bytes).unwrap_or(u64::MAX);
        self.free.store(free, Ordering::Release);
        self.evaluate(used, free);
    }

    /// Bytes of local partition data at the last measure plus appends since.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn evaluate(&self, used: u64, free: u64) {
        let reason = if self.limit_bytes > 0 && used >= self.limit_bytes {
            Some(format!(
                "local partition data is {used} bytes, at local_disk_limit_bytes={} (segments are kept until they are offloaded)",
                self.limit_bytes
            ))
        } else if free < self.min_free_bytes {
            Some(format!(
                "{free} bytes free on the data directory's filesystem, below local_disk_min_free_bytes={}",
                self.min_free_bytes
            ))
        } else {
            None
        };
        let over = reason.is_some();
        if let Some(reason) = reason {
            *self.reason.lock() = reason;
        }
        let was = self.over.swap(over, Ordering::AcqRel);
        if was != over {
            if over {
                tracing::warn!(reason = %self.reason.lock(), "refusing produce: local disk limit reached");
            } else {
                tracing::info!("local disk back under its limit; accepting produce again");
            }
        }
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_limit_and_recovers_after_a_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let g = DiskGuard::new(dir.path(), 1000, 0);
        g.refresh(10);
        assert!(g.check().is_ok());
        g.appended(500);
        assert!(g.check().is_ok());
        g.appended(500);
        let err = g.check().unwrap_err();
        assert_eq!(err.code(), 56, "KAFKA_STORAGE_ERROR is retriable");
        assert!(
            err.to_string().contains("local_disk_limit_bytes=1000"),
            "{err}"
        );
        g.refresh(100);
        assert!(g.check().is_ok());
        let full = DiskGuard::new(dir.path(), 0, u64::MAX);
        full.refresh(0);
        assert!(full.check().unwrap_err().to_string().contains("free"));
        assert!(DiskGuard::unlimited().check().is_ok());
    }
}
