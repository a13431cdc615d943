//! Sparse index files (`.index`, `.timeindex`): fixed-size big-endian entries kept in memory and
//! appended to the file lazily.
//!
//! Entries are added in memory as batches are appended and written to the file by `flush` (at
//! roll, flush and close). The active segment's index files are therefore allowed to lag behind
//! or be ahead of its `.log` after a crash: recovery always rebuilds the active segment's indexes
//! from a scan. A sealed segment's index files were fsynced at roll; if one is missing or fails
//! validation on open it is rebuilt from the `.log`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// A fixed-size index entry with a big-endian encoding.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug + PartialEq {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes one entry from exactly `Self::SIZE` bytes.
    fn decode(buf: &[u8]) -> Self;
    /// Whether `next` may follow `self` in a well-formed index.
    fn may_precede(&self, next: &Self) -> bool;
}

/// One index file: its entries in memory and how many of them are already in the file.
#[derive(Debug)]
pub(crate) struct IndexFile<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries `[..persisted]` are in the file (and the file holds nothing else).
    persisted: usize,
    /// The file may hold more than `persisted` entries (after a truncation) and must be cut.
    needs_truncate: bool,
}

impl<E: IndexEntry> IndexFile<E> {
    /// An empty index whose file will be (re)written from scratch on the next flush.
    pub(crate) fn empty(path: PathBuf) -> IndexFile<E> {
        IndexFile {
            path,
            entries: Vec::new(),
            persisted: 0,
            needs_truncate: true,
        }
    }

    /// Loads an index file; `Ok(None)` if it is missing or malformed (wrong size, entries out of
    /// order, or rejected by `valid`), in which case the caller rebuilds it.
    pub(crate) fn load(
        path: PathBuf,
        valid: impl Fn(&E) -> bool,
    ) -> Result<Option<IndexFile<E>>, LogError> {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(format!("read {}", path.display()))(e)),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let ordered = entries.windows(2).all(|w| w[0].may_precede(&w[1]));
        if !ordered || !entries.iter().all(valid) {
            return Ok(None);
        }
        let persisted = entries.len();
        Ok(Some(IndexFile {
            path,
            entries,
            persisted,
            needs_truncate: false,
        }))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// All entries, in order.
    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    /// Adds an entry (in memory until the next flush).
    pub(crate) fn push(&mut self, entry: E) {
        debug_assert!(self.entries.last().is_none_or(|l| l.may_precede(&entry)));
        self.entries.push(entry);
    }

    /// Drops all entries (before a rebuild).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.persisted = 0;
        self.needs_truncate = true;
    }

    /// Writes entries not yet in the file, cutting the file first if it was truncated, and
    /// fsyncs it if `sync`.
    pub(crate) fn flush(&mut self, sync: bool) -> Result<(), LogError> {
        if self.persisted == self.entries.len() && !self.needs_truncate && !sync {
            return Ok(());
        }
        let context = || format!("write index {}", self.path.display());
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(LogError::io(context()))?;
        let start = (self.persisted * E::SIZE) as u64;
        if self.needs_truncate {
            file.set_len(start).map_err(LogError::io(context()))?;
        }
        let mut out = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
        for e in &self.entries[self.persisted..] {
            e.encode(&mut out);
        }
        file.write_all_at(&out, start)
            .map_err(LogError::io(context()))?;
        if sync {
            file.sync_all().map_err(LogError::io(context()))?;
        }
        self.persisted = self.entries.len();
        self.needs_truncate = false;
        Ok(())
    }
}
