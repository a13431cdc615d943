//! The Raft entry index of a replicated partition log (RFC 0006): which Raft entry sits where.
//!
//! - `<base:020>.raftidx`, one per segment written in replicated mode: a 16-byte header (magic
//!   `STRIDX01`, the Raft index of the segment's first entry, u64 BE) and one 24-byte record per
//!   entry appended while the segment was active: `term u64 | position u32 | size u32 |
//!   next_offset i64` (BE). A data entry's batch is `size` bytes at `position` of the segment's
//!   `.log`; `next_offset` is the Kafka offset after the entry. Non-data entries have a reserved
//!   `position`: [`MARKER`] (payload in the marker store) or [`SKIP`] (a proposal the leader
//!   refused or found duplicate: nothing stored).
//! - `raft-markers`: the marker payloads, as frames `len u32 | crc32c u32 | index u64 | term u64 |
//!   payload` (BE; `len` and the CRC cover index, term and payload), in index order, all kept in
//!   memory (markers are rare: elections, membership changes, offload and log-start records).
//!
//! Write order: an entry's `.log` bytes (data) or marker frame first, then its index record, each
//! with one positional write; durability comes from the log's group commit, which fsyncs the
//! `.log`, the `.raftidx` and the marker file together. After a crash either may be torn: the
//! segment log's recovery keeps the longest prefix on which index, `.log` and markers agree (see
//! `segment_log::entries`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::LogError;
use crate::fs_util::{atomic_write, fsync_dir, remove_if_exists};

/// Extension of entry index files.
pub const ENTRY_INDEX_EXTENSION: &str = "raftidx";
/// File name of the marker store.
pub const MARKERS_FILE: &str = "raft-markers";
/// File name of the last purged entry id.
pub const PURGED_FILE: &str = "raft-purged";

const MAGIC: &[u8; 8] = b"STRIDX01";
const HEADER_LEN: u64 = 16;
/// Bytes per index record.
pub const RECORD_LEN: u64 = 24;
/// `position` of a marker entry.
pub const MARKER: u32 = u32::MAX;
/// `position` of a skipped (refused or duplicate) proposal.
pub const SKIP: u32 = u32::MAX - 1;
/// Largest marker payload accepted (markers are small control records).
pub const MAX_MARKER_BYTES: usize = 1 << 20;

/// A Raft log id: term and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Raft term (the Kafka leader epoch of the entry).
    pub term: u64,
    /// Raft index.
    pub index: u64,
}

/// One index record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Raft term.
    pub term: u64,
    /// Byte position of the batch in the segment's `.log`, or [`MARKER`] / [`SKIP`].
    pub position: u32,
    /// Batch size (0 for markers and skips).
    pub size: u32,
    /// Kafka offset after this entry.
    pub next_offset: i64,
}

impl Record {
    /// Whether the entry holds a record batch.
    pub fn is_data(&self) -> bool {
        self.position != MARKER && self.position != SKIP
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.term.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.next_offset.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Record {
        Record {
            term: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            position: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
            size: u32::from_be_bytes(b[12..16].try_into().expect("4 bytes")),
            next_offset: i64::from_be_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }
}

/// Path of a segment's entry index.
pub(crate) fn entry_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ENTRY_INDEX_EXTENSION}"))
}

/// The entry index of one segment.
#[derive(Debug)]
pub(crate) struct EntryFile {
    path: PathBuf,
    file: Arc<File>,
    first_index: u64,
    count: u64,
    /// The last record, cached (the log's last entry id and end offset come from it).
    last: Option<Record>,
}

impl EntryFile {
    /// Creates an empty index whose first entry will be `first_index` (replacing a stale file),
    /// durable with its directory entry.
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        first_index: u64,
    ) -> Result<EntryFile, LogError> {
        let path = entry_index_path(dir, base_offset);
        let ctx = || format!("create entry index {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(LogError::io(ctx()))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&first_index.to_be_bytes());
        file.write_all_at(&header, 0).map_err(LogError::io(ctx()))?;
        file.sync_all().map_err(LogError::io(ctx()))?;
        fsync_dir(dir)?;
        Ok(EntryFile {
            path,
            file: Arc::new(file),
            first_index,
            count: 0,
            last: None,
        })
    }

    /// Opens a segment's entry index, `None` if there is none (a segment written before
    /// replication). A torn last record is cut off; a bad header is corruption.
    pub(crate) fn open(dir: &Path, base_offset: i64) -> Result<Option<EntryFile>, LogError> {
        let path = entry_index_path(dir, base_offset);
        let ctx = || format!("open entry index {}", path.display());
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogError::io(ctx())(e)),
        };
        let len = file.metadata().map_err(LogError::io(ctx()))?.len();
        let mut header = [0u8; HEADER_LEN as usize];
        if len < HEADER_LEN || file.read_exact_at(&mut header, 0).is_err() || &header[..8] != MAGIC
        {
            return Err(LogError::Corrupt {
                context: format!("{}: missing or bad header", path.display()),
            });
        }
        let first_index = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
        let count = (len - HEADER_LEN) / RECORD_LEN;
        if HEADER_LEN + count * RECORD_LEN != len {
            file.set_len(HEADER_LEN + count * RECORD_LEN)
                .map_err(LogError::io(ctx()))?;
        }
        let mut f = EntryFile {
            path,
            file: Arc::new(file),
            first_index,
            count,
            last: None,
        };
        f.last = f.read_one(count.checked_sub(1).map(|i| first_index + i))?;
        Ok(Some(f))
    }

    /// Index of the first entry.
    pub(crate) fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Number of entries.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Index of the last entry, if any.
    pub(crate) fn last_index(&self) -> Option<u64> {
        self.count.checked_sub(1).map(|i| self.first_index + i)
    }

    /// The last record, if any.
    pub(crate) fn last(&self) -> Option<Record> {
        self.last
    }

    /// The file (fsynced by the group commit).
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Whether `index` is in this file.
    pub(crate) fn contains(&self, index: u64) -> bool {
        index >= self.first_index && index - self.first_index < self.count
    }

    /// Appends the record of entry `first_index + count`.
    pub(crate) fn append(&mut self, record: Record) -> Result<(), LogError> {
        let mut out = Vec::with_capacity(RECORD_LEN as usize);
        record.encode(&mut out);
        self.file
            .write_all_at(&out, HEADER_LEN + self.count * RECORD_LEN)
            .map_err(LogError::io(format!(
                "append to entry index {}",
                self.path.display()
            )))?;
        self.count += 1;
        self.last = Some(record);
        Ok(())
    }

    /// The records of entries `[from, to)` that are in this file.
    pub(crate) fn read(&self, from: u64, to: u64) -> Result<Vec<Record>, LogError> {
        let from = from.max(self.first_index);
        let to = to.min(self.first_index + self.count);
        if from >= to {
            return Ok(Vec::new());
        }
        let n = usize::try_from(to - from).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; n * RECORD_LEN as usize];
        self.file
            .read_exact_at(
                &mut buf,
                HEADER_LEN + (from - self.first_index) * RECORD_LEN,
            )
            .map_err(LogError::io(format!(
                "read entry index {}",
                self.path.display()
            )))?;
        Ok(buf
            .chunks_exact(RECORD_LEN as usize)
            .map(Record::decode)
            .collect())
    }

    /// The record of entry `index`, if it is in this file.
    pub(crate) fn read_one(&self, index: Option<u64>) -> Result<Option<Record>, LogError> {
        match index {
            Some(i) if self.contains(i) => Ok(self.read(i, i + 1)?.pop()),
            _ => Ok(None),
        }
    }

    /// Keeps the first `keep` records and makes the cut durable.
    pub(crate) fn truncate(&mut self, keep: u64) -> Result<(), LogError> {
        if keep >= self.count {
            return Ok(());
        }
        let ctx = || format!("truncate entry index {}", self.path.display());
        self.file
            .set_len(HEADER_LEN + keep * RECORD_LEN)
            .map_err(LogError::io(ctx()))?;
        self.file.sync_all().map_err(LogError::io(ctx()))?;
        self.count = keep;
        self.last = self.read_one(keep.checked_sub(1).map(|i| self.first_index + i))?;
        Ok(())
    }

    /// Fsyncs the file.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(LogError::io(format!(
            "fsync entry index {}",
            self.path.display()
        )))
    }

    /// Deletes the file.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        remove_if_exists(&self.path)
    }
}

/// One stored marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Raft term.
    pub term: u64,
    /// Payload (the replication layer's encoding).
    pub payload: Bytes,
}

/// The marker payloads of a partition, in memory and in `raft-markers`.
#[derive(Debug)]
pub(crate) struct MarkerStore {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// Index -> (marker, file position of its frame).
    entries: BTreeMap<u64, (Marker, u64)>,
}

const FRAME_HEAD: usize = 8;
const FRAME_FIXED: usize = 16;

impl MarkerStore {
    /// Opens (creating if needed) the marker store, cutting a torn or corrupt tail.
    pub(crate) fn open(dir: &Path) -> Result<MarkerStore, LogError> {
        let path = dir.join(MARKERS_FILE);
        let ctx = || format!("open marker store {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LogError::io(ctx()))?;
        let bytes = std::fs::read(&path).map_err(LogError::io(ctx()))?;
        let mut entries = BTreeMap::new();
        let mut pos = 0usize;
        while pos + FRAME_HEAD <= bytes.len() {
            let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
            let body_start = pos + FRAME_HEAD;
            if !(FRAME_FIXED..=FRAME_FIXED + MAX_MARKER_BYTES).contains(&len)
                || body_start + len > bytes.len()
            {
                break;
            }
            let body = &bytes[body_start..body_start + len];
            if crc32c::crc32c(body) != crc {
                break;
            }
            let index = u64::from_be_bytes(body[0..8].try_into().expect("8 bytes"));
            let term = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
            if entries
                .keys()
                .next_back()
                .is_some_and(|last| *last >= index)
            {
                break;
            }
            let payload = Bytes::copy_from_slice(&body[FRAME_FIXED..]);
            entries.insert(index, (Marker { term, payload }, pos as u64));
            pos = body_start + len;
        }
        if pos < bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - pos, "cutting a torn marker store tail");
            file.set_len(pos as u64).map_err(LogError::io(ctx()))?;
            file.sync_all().map_err(LogError::io(ctx()))?;
        }
        Ok(MarkerStore {
            path,
            file: Arc::new(file),
            len: pos as u64,
            entries,
        })
    }

    /// Appends the marker of entry `index` (greater than every stored one).
    pub(crate) fn append(&mut self, index: u64, term: u64, payload: &[u8]) -> Result<(), LogError> {
        if payload.len() > MAX_MARKER_BYTES {
            return Err(LogError::MessageTooLarge {
                size: payload.len(),
                max: MAX_MARKER_BYTES as u32,
            });
        }
        let mut body = Vec::with_capacity(FRAME_FIXED + payload.len());
        body.extend_from_slice(&index.to_be_bytes());
        body.extend_from_slice(&term.to_be_bytes());
        body.extend_from_slice(payload);
        let mut frame = Vec::with_capacity(FRAME_HEAD + body.len());
        frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        frame.extend_from_slice(&body);
        self.file
            .write_all_at(&frame, self.len)
            .map_err(LogError::io(format!(
                "append to marker store {}",
                self.path.display()
            )))?;
        self.entries.insert(
            index,
            (
                Marker {
                    term,
                    payload: Bytes::copy_from_slice(payload),
                },
                self.len,
            ),
        );
        self.len += frame.len() as u64;
        Ok(())
    }

    /// The marker of entry `index`.
    pub(crate) fn get(&self, index: u64) -> Option<&Marker> {
        self.entries.get(&index).map(|(m, _)| m)
    }

    /// Markers with index in `range`, in order.
    pub(crate) fn range(
        &self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> impl Iterator<Item = (u64, &Marker)> {
        self.entries.range(range).map(|(i, (m, _))| (*i, m))
    }

    /// Removes the markers after `index` (all with `None`), durably.
    pub(crate) fn truncate_after(&mut self, index: Option<u64>) -> Result<(), LogError> {
        let from = index.map_or(0, |i| i + 1);
        let Some((_, (_, pos))) = self.entries.range(from..).next() else {
            return Ok(());
        };
        let pos = *pos;
        let ctx = || format!("truncate marker store {}", self.path.display());
        self.file.set_len(pos).map_err(LogError::io(ctx()))?;
        self.file.sync_all().map_err(LogError::io(ctx()))?;
        self.len = pos;
        self.entries.retain(|i, _| *i < from);
        Ok(())
    }

    /// Forgets markers below `index` (they are purged); the file is rewritten once most of it
    /// is dead.
    pub(crate) fn purge_below(&mut self, index: u64) -> Result<(), LogError> {
        let before = self.entries.len();
        self.entries.retain(|i, _| *i >= index);
        if self.entries.len() == before || self.entries.len() * 2 > before.max(16) {
            return Ok(());
        }
        self.rewrite()
    }

    fn rewrite(&mut self) -> Result<(), LogError> {
        let mut out = Vec::new();
        let mut positions = Vec::with_capacity(self.entries.len());
        for (index, (m, _)) in &self.entries {
            positions.push(out.len() as u64);
            let mut body = Vec::with_capacity(FRAME_FIXED + m.payload.len());
            body.extend_from_slice(&index.to_be_bytes());
            body.extend_from_slice(&m.term.to_be_bytes());
            body.extend_from_slice(&m.payload);
            out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            out.extend_from_slice(&body);
        }
        atomic_write(&self.path, &out)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(LogError::io(format!("reopen {}", self.path.display())))?;
        self.file = Arc::new(file);
        self.len = out.len() as u64;
        for ((_, (_, pos)), p) in self.entries.iter_mut().zip(positions) {
            *pos = p;
        }
        Ok(())
    }

    /// The file (fsynced by the group commit).
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }
}

/// Reads the persisted last purged entry id.
pub(crate) fn load_purged(dir: &Path) -> Result<Option<EntryId>, LogError> {
    let path = dir.join(PURGED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(format!("read {}", path.display()))(e)),
    };
    let corrupt = || LogError::Corrupt {
        context: format!("{} holds {text:?}", path.display()),
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(corrupt());
    }
    let mut fields = lines.next().ok_or_else(corrupt)?.split(' ');
    let term = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(corrupt)?;
    let index = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(corrupt)?;
    Ok(Some(EntryId { term, index }))
}

/// Persists the last purged entry id (atomically).
pub(crate) fn store_purged(dir: &Path, id: EntryId) -> Result<(), LogError> {
    atomic_write(
        &dir.join(PURGED_FILE),
        format!("0\n{} {}\n", id.term, id.index).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_byte_exact() {
        let mut out = Vec::new();
        Record {
            term: 0x0102,
            position: 7,
            size: 9,
            next_offset: 0x1122,
        }
        .encode(&mut out);
        assert_eq!(
            out,
            [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0x11, 0x22]
        );
    }

    #[test]
    fn entry_file_appends_reads_truncates_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = EntryFile::create(dir.path(), 100, 5).expect("create");
        for i in 0..4u32 {
            f.append(Record {
                term: 1,
                position: i * 10,
                size: 10,
                next_offset: 100 + i64::from(i),
            })
            .expect("append");
        }
        assert_eq!(f.last_index(), Some(8));
        let r = f.read(6, 8).expect("read");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].position, 10);
        f.truncate(2).expect("truncate");
        assert_eq!(f.last_index(), Some(6));
        drop(f);
        // A torn record is cut on open.
        let path = entry_index_path(dir.path(), 100);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(HEADER_LEN + 2 * RECORD_LEN + 5).expect("tear");
        let f = EntryFile::open(dir.path(), 100)
            .expect("open")
            .expect("exists");
        assert_eq!((f.first_index(), f.count()), (5, 2));
        assert_eq!(f.last().map(|r| r.next_offset), Some(101));
        assert!(EntryFile::open(dir.path(), 200).expect("open").is_none());
    }

    #[test]
    fn marker_store_survives_torn_tails_and_truncates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = MarkerStore::open(dir.path()).expect("open");
        m.append(3, 1, b"a").expect("append");
        m.append(7, 2, b"bb").expect("append");
        m.append(9, 2, b"ccc").expect("append");
        drop(m);
        // Tear the last frame.
        let path = dir.path().join(MARKERS_FILE);
        let len = std::fs::metadata(&path).expect("stat").len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 2)
            .expect("tear");
        let mut m = MarkerStore::open(dir.path()).expect("reopen");
        assert_eq!(m.range(..).map(|(i, _)| i).collect::<Vec<_>>(), vec![3, 7]);
        m.truncate_after(Some(5)).expect("truncate");
        assert!(m.get(7).is_none());
        m.append(6, 3, b"d").expect("append after truncate");
        drop(m);
        let mut m = MarkerStore::open(dir.path()).expect("reopen");
        assert_eq!(
            m.get(6).map(|x| x.payload.clone()),
            Some(Bytes::from_static(b"d"))
        );
        m.purge_below(6).expect("purge");
        assert!(m.get(3).is_none());
        assert_eq!(m.range(..).count(), 1);
    }

    #[test]
    fn purged_id_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_purged(dir.path()).expect("load"), None);
        store_purged(dir.path(), EntryId { term: 4, index: 99 }).expect("store");
        assert_eq!(
            load_purged(dir.path()).expect("load"),
            Some(EntryId { term: 4, index: 99 })
        );
    }
}
