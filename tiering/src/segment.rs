//! One log segment: `<base:020>.log` plus its `.index` and `.timeindex`.
//!
//! Write order for an append: the batch bytes are written at the end of the `.log` with a
//! positional write; on failure the file is cut back to its previous length (`write_or_truncate`)
//! and the segment's in-memory state is unchanged. Only after a successful write are the in-memory
//! indexes, size and next offset updated. Index files are written lazily (`flush`), see
//! `index_file`.
//!
//! Durability: a batch is durable once the `.log` has been fsynced (`flush`, or `PendingSync`
//! through the shared `Arc<File>`). Sealing (`flush`) fsyncs the `.log` and both index files.
//!
//! Crash behaviour: `recover` (used for the active segment) scans the `.log` from the start,
//! checking length, magic, CRC32C and offset continuity, cuts the file at the first bad or
//! incomplete batch and rebuilds both indexes from the scan. `open_sealed` trusts a sealed
//! segment's `.log` and rebuilds its indexes only when a file is missing or malformed.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{verify_crc, BatchHeader, BATCH_HEADER_LEN};
use crate::entry_index::EntryFile;
use crate::error::LogError;
use crate::fs_util::{fsync_dir, remove_if_exists, write_or_truncate};
use crate::index_file::IndexFile;
use crate::offset_index::{self, OffsetEntry};
use crate::time_index::{self, TimeEntry};

/// Extension of segment data files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of offset index files.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";

/// Timestamp of a segment (or batch) that holds no timestamp.
const NO_TIMESTAMP: i64 = -1;

/// Path of a segment file: `<base:020>.<extension>`.
pub fn segment_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// A segment of the partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    next_offset: i64,
    size: u64,
    file: Arc<File>,
    log_path: PathBuf,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    bytes_since_index: u64,
    max_timestamp: i64,
    max_timestamp_batch: Option<i64>,
    first_append_ms: Option<i64>,
    /// The Raft entry index of the entries appended to this segment (replicated logs only).
    pub(crate) entries: Option<EntryFile>,
    /// Fault injection: the next append writes this many bytes, then fails with ENOSPC.
    #[cfg(test)]
    pub(crate) fail_next_write_after: Option<usize>,
}

/// Why a scan stopped before the end of the file.
struct ScanStop {
    position: u64,
    reason: String,
}

impl Segment {
    fn new(dir: &Path, base_offset: i64, file: File, size: u64) -> Segment {
        Segment {
            base_offset,
            next_offset: base_offset,
            size,
            file: Arc::new(file),
            log_path: segment_path(dir, base_offset, LOG_EXTENSION),
            offset_index: IndexFile::empty(segment_path(dir, base_offset, INDEX_EXTENSION)),
            time_index: IndexFile::empty(segment_path(dir, base_offset, TIME_INDEX_EXTENSION)),
            bytes_since_index: 0,
            max_timestamp: NO_TIMESTAMP,
            max_timestamp_batch: None,
            first_append_ms: None,
            entries: None,
            #[cfg(test)]
            fail_next_write_after: None,
        }
    }

    /// Creates an empty segment (replacing any stale files at that base) and makes its creation
    /// durable.
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let path = segment_path(dir, base_offset, LOG_EXTENSION);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(LogError::io(format!("create segment {}", path.display())))?;
        let mut segment = Segment::new(dir, base_offset, file, 0);
        segment.offset_index.flush(false)?;
        segment.time_index.flush(false)?;
        fsync_dir(dir)?;
        Ok(segment)
    }

    fn open_existing(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let path = segment_path(dir, base_offset, LOG_EXTENSION);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(format!("open segment {}", path.display())))?;
        let size = file
            .metadata()
            .map_err(LogError::io(format!("stat segment {}", path.display())))?
            .len();
        Ok(Segment::new(dir, base_offset, file, size))
    }

    /// Opens a sealed segment that ends at `end_offset` (the next segment's base), loading its
    /// indexes or rebuilding them if missing or malformed.
    pub(crate) fn open_sealed(
        dir: &Path,
        base_offset: i64,
        end_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, LogError> {
        let mut segment = Segment::open_existing(dir, base_offset)?;
        let size = segment.size;
        let span = end_offset - base_offset;
        let offsets = IndexFile::<OffsetEntry>::load(segment.offset_index.path().into(), |e| {
            u64::from(e.position) < size && i64::from(e.relative_offset) < span
        })?;
        let times = IndexFile::<TimeEntry>::load(segment.time_index.path().into(), |e| {
            i64::from(e.relative_offset) < span
        })?;
        match (offsets, times) {
            (Some(offsets), Some(times)) => {
                segment.offset_index = offsets;
                segment.time_index = times;
                segment.next_offset = end_offset;
                if let Some(last) = segment.time_index.entries().last() {
                    segment.max_timestamp = last.timestamp;
                    segment.max_timestamp_batch =
                        Some(base_offset + i64::from(last.relative_offset));
                }
            }
            _ => {
                tracing::warn!(
                    segment = %segment.log_path.display(),
                    "index missing or malformed; rebuilding it from the log"
                );
                if let Some(stop) = segment.rebuild_indexes(index_interval_bytes, false)? {
                    return Err(LogError::Corrupt {
                        context: format!(
                            "sealed segment {} unreadable at position={}: {}",
                            segment.log_path.display(),
                            stop.position,
                            stop.reason
                        ),
                    });
                }
                if segment.next_offset != end_offset {
                    tracing::warn!(
                        segment = %segment.log_path.display(),
                        "sealed segment ends at offset={} but the next segment starts at {end_offset}",
                        segment.next_offset
                    );
                }
                segment.offset_index.flush(true)?;
                segment.time_index.flush(true)?;
            }
        }
        Ok(segment)
    }

    /// Opens the active segment after a restart: validates every batch, cuts a torn or corrupt
    /// tail, and rebuilds the indexes. Returns the segment and how many bytes were cut.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(Segment, u64), LogError> {
        let mut segment = Segment::open_existing(dir, base_offset)?;
        let mut cut = 0;
        if let Some(stop) = segment.rebuild_indexes(index_interval_bytes, true)? {
            cut = segment.size - stop.position;
            tracing::warn!(
                segment = %segment.log_path.display(),
                position = stop.position,
                bytes = cut,
                "truncating torn or corrupt tail: {}",
                stop.reason
            );
            segment
                .file
                .set_len(stop.position)
                .map_err(LogError::io(format!(
                    "truncate {} to {}",
                    segment.log_path.display(),
                    stop.position
                )))?;
            segment.sync_log()?;
            segment.size = stop.position;
        }
        segment.first_append_ms = segment
            .read_header_at(0)?
            .map(|h| h.max_timestamp)
            .filter(|t| *t >= 0);
        segment.offset_index.flush(false)?;
        segment.time_index.flush(false)?;
        Ok((segment, cut))
    }

    /// Scans the whole `.log`, rebuilding indexes, next offset and max timestamp. Returns where
    /// and why the scan stopped early, if it did (the segment then describes the valid prefix).
    fn rebuild_indexes(
        &mut self,
        index_interval_bytes: u32,
        verify: bool,
    ) -> Result<Option<ScanStop>, LogError> {
        self.offset_index.clear();
        self.time_index.clear();
        self.bytes_since_index = 0;
        self.max_timestamp = NO_TIMESTAMP;
        self.max_timestamp_batch = None;
        self.next_offset = self.base_offset;
        let file_len = self.size;
        let mut position = 0u64;
        let mut batch = Vec::new();
        while position < file_len {
            let stop = |reason: String| Ok(Some(ScanStop { position, reason }));
            let available = file_len - position;
            let mut head = [0u8; BATCH_HEADER_LEN];
            let head_len = available.min(BATCH_HEADER_LEN as u64) as usize;
            self.file
                .read_exact_at(&mut head[..head_len], position)
                .map_err(LogError::io(format!("read {}", self.log_path.display())))?;
            let header = match BatchHeader::parse(&head[..head_len]) {
                Ok(h) => h,
                Err(e) => return stop(e.to_string()),
            };
            let size = header.total_size() as u64;
            if size > available {
                return stop(format!("batch of {size} bytes, {available} available"));
            }
            if header.base_offset != self.next_offset {
                return stop(format!(
                    "batch base_offset={} where offset={} was expected",
                    header.base_offset, self.next_offset
                ));
            }
            if header.last_offset_delta < 0 || header.records_count < 0 {
                return stop(format!(
                    "batch last_offset_delta={} records_count={}",
                    header.last_offset_delta, header.records_count
                ));
            }
            if verify {
                batch.resize(size as usize, 0);
                self.file
                    .read_exact_at(&mut batch, position)
                    .map_err(LogError::io(format!("read {}", self.log_path.display())))?;
                if let Err(e) = verify_crc(&header, &batch) {
                    return stop(e.to_string());
                }
            }
            self.index_batch(&header, position, index_interval_bytes);
            position += size;
        }
        Ok(None)
    }

    /// Updates the in-memory indexes for a batch stored at `position`.
    fn index_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u32) {
        let relative = u32::try_from(header.base_offset - self.base_offset).ok();
        if self.bytes_since_index > u64::from(index_interval_bytes) {
            if let (Some(relative_offset), Ok(position)) = (relative, u32::try_from(position)) {
                self.offset_index.push(OffsetEntry {
                    relative_offset,
                    position,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_size() as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_batch = Some(header.base_offset);
            if let Some(relative_offset) = relative {
                self.time_index.push(TimeEntry {
                    timestamp: header.max_timestamp,
                    relative_offset,
                });
            }
        }
        self.next_offset = header.last_offset() + 1;
    }

    /// Appends one batch (already rewritten with its final header) at the end of the `.log`.
    pub(crate) fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let what = self.log_path.display().to_string();
        #[cfg(test)]
        if let Some(budget) = self.fail_next_write_after.take() {
            let file = crate::fs_util::ShortWriteFile {
                file: self.file.as_ref(),
                budget,
            };
            return write_or_truncate(&file, batch, self.size, &what);
        }
        write_or_truncate(self.file.as_ref(), batch, self.size, &what)?;
        self.index_batch(header, self.size, index_interval_bytes);
        self.size += batch.len() as u64;
        self.first_append_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// The header of the batch at `position`, or `None` at the end of the segment.
    pub(crate) fn read_header_at(&self, position: u64) -> Result<Option<BatchHeader>, LogError> {
        if position >= self.size {
            return Ok(None);
        }
        let available = (self.size - position).min(BATCH_HEADER_LEN as u64) as usize;
        let mut head = [0u8; BATCH_HEADER_LEN];
        self.file
            .read_exact_at(&mut head[..available], position)
            .map_err(LogError::io(format!("read {}", self.log_path.display())))?;
        let header = BatchHeader::parse(&head[..available]).map_err(|e| LogError::Corrupt {
            context: format!(
                "segment {} at position={position}: {e}",
                self.log_path.display()
            ),
        })?;
        if position + header.total_size() as u64 > self.size {
            return Err(LogError::Corrupt {
                context: format!(
                    "segment {} batch at position={position} runs past the end",
                    self.log_path.display()
                ),
            });
        }
        Ok(Some(header))
    }

    /// Position of the batch containing `offset` (or the first batch after it), or `None` if
    /// the segment ends at or before `offset`.
    pub(crate) fn position_of(&self, offset: i64) -> Result<Option<u64>, LogError> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = u32::try_from((offset - self.base_offset).max(0)).unwrap_or(u32::MAX);
        let mut position = offset_index::lookup(self.offset_index.entries(), relative);
        while let Some(header) = self.read_header_at(position)? {
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_size() as u64;
        }
        Ok(None)
    }

    /// Position from which to scan for the first batch with max timestamp >= `timestamp`.
    pub(crate) fn time_scan_start(&self, timestamp: i64) -> Result<u64, LogError> {
        match time_index::scan_start_for(self.time_index.entries(), timestamp) {
            Some(relative) => Ok(self
                .position_of(self.base_offset + i64::from(relative))?
                .unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Reads `len` bytes at `position`.
    pub(crate) fn read_bytes(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(LogError::io(format!(
                "read {} bytes at position={position} of {}",
                len,
                self.log_path.display()
            )))?;
        Ok(buf)
    }

    /// Removes every batch from the one containing `offset` onwards, rebuilds the indexes and
    /// fsyncs the cut.
    pub(crate) fn truncate_to(
        &mut self,
        offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(), LogError> {
        let Some(position) = self.position_of(offset)? else {
            return Ok(());
        };
        self.file.set_len(position).map_err(LogError::io(format!(
            "truncate {} to {position}",
            self.log_path.display()
        )))?;
        self.size = position;
        if let Some(stop) = self.rebuild_indexes(index_interval_bytes, false)? {
            return Err(LogError::Corrupt {
                context: format!(
                    "segment {} unreadable at position={} after truncation: {}",
                    self.log_path.display(),
                    stop.position,
                    stop.reason
                ),
            });
        }
        if self.size == 0 {
            self.first_append_ms = None;
        }
        self.flush()
    }

    /// Fsyncs the `.log` only.
    pub(crate) fn sync_log(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(LogError::io(format!("fsync {}", self.log_path.display())))
    }

    /// Writes pending index entries and fsyncs the `.log` and both index files.
    pub(crate) fn flush(&mut self) -> Result<(), LogError> {
        self.sync_log()?;
        if let Some(entries) = &self.entries {
            entries.sync()?;
        }
        self.offset_index.flush(true)?;
        self.time_index.flush(true)
    }

    /// Deletes the segment's files.
    pub(crate) fn delete(self) -> Result<(), LogError> {
        if let Some(entries) = self.entries {
            entries.delete()?;
        }
        remove_if_exists(&self.log_path)?;
        remove_if_exists(self.offset_index.path())?;
        remove_if_exists(self.time_index.path())
    }

    /// First offset of the segment.
    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the segment's last batch.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The offset index entries.
    pub(crate) fn offset_entries(&self) -> &[crate::offset_index::OffsetEntry] {
        self.offset_index.entries()
    }

    /// The time index entries.
    pub(crate) fn time_entries(&self) -> &[crate::time_index::TimeEntry] {
        self.time_index.entries()
    }

    /// Bytes in the `.log`.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether the segment holds no batch.
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The shared handle of the `.log` (for group-commit fsyncs).
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Largest batch max timestamp in the segment, or -1.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Base offset of the (first) batch holding the largest timestamp.
    pub(crate) fn max_timestamp_batch(&self) -> Option<i64> {
        self.max_timestamp_batch
    }

    /// When the first batch was appended (or, after a restart, its timestamp).
    pub(crate) fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }

    /// The timestamp retention compares: the largest timestamp, or the file's modification time
    /// if no batch carries a timestamp (as Kafka does).
    pub(crate) fn retention_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(NO_TIMESTAMP, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            })
    }
}
