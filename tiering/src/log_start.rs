//! The persisted log start offset (`log-start-offset`): a version line (`0`) and the offset,
//! replaced atomically (tmp file, fsync, rename, fsync dir). It is written before the segments
//! below it are deleted, so a crash in between leaves whole segments below the start, which the
//! next open deletes.

use std::path::Path;

use crate::error::LogError;
use crate::fs_util::atomic_write;

/// File name inside a partition directory.
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";

const VERSION: &str = "0";

/// Reads the persisted log start offset, `None` if the file does not exist.
pub(crate) fn load(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(LOG_START_OFFSET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(format!("read {}", path.display()))(e)),
    };
    let corrupt = || LogError::Corrupt {
        context: format!("{} holds {text:?}", path.display()),
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err(corrupt());
    }
    let offset = lines
        .next()
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|o| *o >= 0)
        .ok_or_else(corrupt)?;
    if lines.next().is_some() {
        return Err(corrupt());
    }
    Ok(Some(offset))
}

/// Persists `offset` as the log start offset.
pub(crate) fn store(dir: &Path, offset: i64) -> Result<(), LogError> {
    atomic_write(
        &dir.join(LOG_START_OFFSET_FILE),
        format!("{VERSION}\n{offset}\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        store(dir.path(), 42).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOG_START_OFFSET_FILE)).unwrap(),
            "0\n42\n"
        );
        assert_eq!(load(dir.path()).unwrap(), Some(42));
        std::fs::write(dir.path().join(LOG_START_OFFSET_FILE), "0\nx\n").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
