//! File helpers shared by the on-disk structures: atomic replacement and directory fsync.
//!
//! `atomic_write` writes `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the directory,
//! so after a crash `path` holds either the old or the new content, never a mix. A crash before
//! the rename leaves a stray `.tmp` file, which `SegmentLog::open` deletes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// Suffix of temporary files that recovery removes.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `contents` atomically and durably.
pub(crate) fn atomic_write(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let tmp = tmp_path(path);
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(LogError::io(format!("atomic write of {}", path.display())))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(format!("fsync directory {}", dir.display())))
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(LogError::io(format!("delete {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The two positional operations an append needs; a trait so tests can inject failures.
pub(crate) trait PositionalFile {
    /// Writes all of `buf` at byte `position`.
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl PositionalFile for File {
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, position)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Writes `buf` at `position` (the current end of the file); if the write fails, truncates the
/// file back to `position` so no partial batch is left behind, and returns the write error.
/// If the truncation fails too, the error says so: the file then may hold a partial batch, which
/// recovery removes at the next open.
pub(crate) fn write_or_truncate<F: PositionalFile + ?Sized>(
    file: &F,
    buf: &[u8],
    position: u64,
    what: &str,
) -> Result<(), LogError> {
    let Err(write_error) = file.write_all_at(buf, position) else {
        return Ok(());
    };
    match file.set_len(position) {
        Ok(()) => Err(LogError::io(format!(
            "write {} bytes to {what} at position={position}",
            buf.len()
        ))(write_error)),
        Err(truncate_error) => Err(LogError::io(format!(
            "write {} bytes to {what} at position={position} (and truncate back failed: {truncate_error})",
            buf.len()
        ))(write_error)),
    }
}

/// Fault injection for tests: writes at most `budget` bytes of a write, then fails with ENOSPC.
#[cfg(test)]
pub(crate) struct ShortWriteFile<'a> {
    pub(crate) file: &'a File,
    pub(crate) budget: usize,
}

#[cfg(test)]
impl PositionalFile for ShortWriteFile<'_> {
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let n = self.budget.min(buf.len());
        FileExt::write_all_at(self.file, &buf[..n], position)?;
        if n < buf.len() {
            return Err(io::Error::from_raw_os_error(28));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self.file, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Accepts `budget` bytes, then fails with ENOSPC after a partial write.
    struct FailingFile {
        data: RefCell<Vec<u8>>,
        budget: usize,
        fail_truncate: bool,
    }

    impl PositionalFile for FailingFile {
        fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
            let mut data = self.data.borrow_mut();
            let position = position as usize;
            let room = self.budget.saturating_sub(position);
            let n = room.min(buf.len());
            data.resize(position, 0);
            data.extend_from_slice(&buf[..n]);
            if n < buf.len() {
                return Err(io::Error::from_raw_os_error(28));
            }
            Ok(())
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            if self.fail_truncate {
                return Err(io::Error::from_raw_os_error(5));
            }
            self.data.borrow_mut().resize(len as usize, 0);
            Ok(())
        }
    }

    #[test]
    fn failed_write_truncates_back() {
        let file = FailingFile {
            data: RefCell::new(Vec::new()),
            budget: 10,
            fail_truncate: false,
        };
        write_or_truncate(&file, b"12345", 0, "test").unwrap();
        let err = write_or_truncate(&file, b"6789abcdef", 5, "test").unwrap_err();
        assert!(err.is_disk_full());
        assert_eq!(&*file.data.borrow(), b"12345");
    }

    #[test]
    fn failed_truncate_is_reported() {
        let file = FailingFile {
            data: RefCell::new(Vec::new()),
            budget: 3,
            fail_truncate: true,
        };
        let err = write_or_truncate(&file, b"12345", 0, "test").unwrap_err();
        assert!(err.to_string().contains("truncate back failed"));
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
        remove_if_exists(&path).unwrap();
        remove_if_exists(&path).unwrap();
    }
}
