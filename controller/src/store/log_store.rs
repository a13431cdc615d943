//! Durable Raft log for the metadata quorum: one append-only record file plus two small state files.
//!
//! Layout of the log directory:
//! - `log`: magic `STRLOG01`, then frames (see `file_util`), each one [`LogRecord`]:
//!   `Entry` (an appended entry), `TruncateAfter` (drop entries after an index), `Purge` (drop
//!   entries up to a log id). Replaying the records in order rebuilds the log.
//! - `vote`: the last saved vote, replaced atomically.
//! - `committed`: the last saved committed log id, replaced atomically.
//!
//! Order of writes and commit points:
//! - `append` writes all frames with one `write`, then `fsync`s, then makes the entries visible in
//!   memory and only then calls the IO callback. A failed write is cut off again (`set_len`) so the
//!   file never holds garbage before a later record; if that fails too the store refuses writes.
//! - `truncate_after` and `purge` append their record and `fsync` before returning. Truncation
//!   removes only a suffix and purge only a prefix, so the log never has a hole.
//! - `save_vote` returns after the vote file is renamed into place and the directory synced.
//!
//! After a crash, the last frame may be torn (short or bad CRC): open cuts the file back to the
//! last valid frame. Only an append whose callback was never called can be lost that way.
//!
//! The whole live log is kept in memory (metadata logs are small and purged after each snapshot);
//! when the file holds many more records than live entries it is rewritten (tmp, fsync, rename).
//! File I/O is synchronous inside the async methods: metadata writes are rare and small.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use parking_lot::Mutex;
use serde::Deserialize;
use serde::Serialize;

use super::file_util;
use super::file_util::Frame;
use super::LogId;
use super::TypeConfig;
use super::Vote;

type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const LOG_MAGIC: &[u8; 8] = b"STRLOG01";
const VOTE_MAGIC: &[u8; 8] = b"STRVOT01";
const COMMITTED_MAGIC: &[u8; 8] = b"STRCOM01";

/// Rewrite the log file when it holds this many records more than twice the live entries.
const COMPACT_SLACK: usize = 1024;

/// One record of the log file.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// An appended entry.
    Entry(Entry),
    /// Entries with an index greater than this one (all entries for `None`) are removed.
    TruncateAfter(Option<u64>),
    /// Entries up to and including this log id are removed; it becomes the last purged id.
    Purge(LogId),
}

/// The durable Raft log store. Cheap to clone; clones share the log (the clone is also the reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    /// Length of the valid prefix of the log file.
    file_len: u64,
    /// Records in the log file (to decide when to compact).
    records: usize,
    /// Set when a failed write could not be undone: the file may hold garbage, so no more writes.
    poisoned: bool,
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl LogStore {
    /// Open (or create) the log in `dir`, recovering from a torn last record.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        file_util::prepare_dir(&dir)?;
        let vote = match file_util::read_optional(&dir, VOTE_FILE)? {
            Some(b) => Some(file_util::decode_single(VOTE_MAGIC, &b, "vote file")?),
            None => None,
        };
        let committed = match file_util::read_optional(&dir, COMMITTED_FILE)? {
            Some(b) => file_util::decode_single(COMMITTED_MAGIC, &b, "committed file")?,
            None => None,
        };

        let path = dir.join(LOG_FILE);
        if !path.exists() {
            file_util::atomic_write(&dir, LOG_FILE, LOG_MAGIC)?;
        }
        let bytes = std::fs::read(&path)?;
        let body = bytes.strip_prefix(LOG_MAGIC.as_slice()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad magic or format version", path.display()),
            )
        })?;
        let mut inner = Inner {
            dir,
            file: OpenOptions::new().append(true).open(&path)?,
            file_len: 0,
            records: 0,
            poisoned: false,
            entries: BTreeMap::new(),
            last_purged: None,
            vote,
            committed,
        };
        let mut pos = 0;
        loop {
            match file_util::decode_frame(&body[pos..]) {
                Frame::Valid(payload, len) => {
                    let record: LogRecord = file_util::decode_json(payload, "log record")?;
                    inner.replay(record);
                    inner.records += 1;
                    pos += len;
                }
                Frame::End => break,
                Frame::Invalid => {
                    tracing::warn!(
                        path = %path.display(),
                        valid_bytes = LOG_MAGIC.len() + pos,
                        dropped_bytes = body.len() - pos,
                        "log file ends in a torn or corrupt record; truncating it"
                    );
                    break;
                }
            }
        }
        inner.file_len = (LOG_MAGIC.len() + pos) as u64;
        if inner.file_len < bytes.len() as u64 {
            inner.file.set_len(inner.file_len)?;
            inner.file.sync_all()?;
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

impl Inner {
    fn replay(&mut self, record: LogRecord) {
        match record {
            LogRecord::Entry(entry) => {
                let index = entry.index();
                // An append after a conflict overwrites the suffix (openraft truncates first, but
                // replay must not depend on it).
                self.entries.split_off(&index);
                self.entries.insert(index, entry);
            }
            LogRecord::TruncateAfter(after) => match after {
                Some(i) => {
                    self.entries.split_off(&(i + 1));
                }
                None => self.entries.clear(),
            },
            LogRecord::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index() + 1));
                if self
                    .last_purged
                    .as_ref()
                    .is_none_or(|p| p.index() < log_id.index())
                {
                    self.last_purged = Some(log_id);
                }
            }
        }
    }

    /// Append encoded records to the file and fsync; on failure cut the file back.
    fn write_records(&mut self, buf: &[u8], count: usize) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "log store refuses writes after an unrecoverable write error",
            ));
        }
        let result = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            if self
                .file
                .set_len(self.file_len)
                .and_then(|()| self.file.sync_all())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(e);
        }
        self.file_len += buf.len() as u64;
        self.records += count;
        Ok(())
    }

    fn maybe_compact(&mut self) -> io::Result<()> {
        if self.records <= 2 * self.entries.len() + COMPACT_SLACK {
            return Ok(());
        }
        let mut buf = LOG_MAGIC.to_vec();
        let mut records = 0;
        if let Some(p) = &self.last_purged {
            file_util::encode_frame(&mut buf, &LogRecord::Purge(*p))?;
            records += 1;
        }
        for e in self.entries.values() {
            file_util::encode_frame(&mut buf, &LogRecord::Entry(e.clone()))?;
            records += 1;
        }
        file_util::atomic_write(&self.dir, LOG_FILE, &buf)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.file_len = buf.len() as u64;
        self.records = records;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.inner.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id());
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last.or(inner.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        let bytes = file_util::encode_single(VOTE_MAGIC, vote)?;
        file_util::atomic_write(&inner.dir, VOTE_FILE, &bytes)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        if inner.committed == committed {
            return Ok(());
        }
        let bytes = file_util::encode_single(COMMITTED_MAGIC, &committed)?;
        file_util::atomic_write(&inner.dir, COMMITTED_FILE, &bytes)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut inner = self.inner.lock();
        let mut buf = Vec::new();
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            let record = LogRecord::Entry(e);
            file_util::encode_frame(&mut buf, &record)?;
            records.push(record);
        }
        if let Err(e) = inner.write_records(&buf, records.len()) {
            callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
        for record in records {
            inner.replay(record);
        }
        drop(inner);
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        let record = LogRecord::TruncateAfter(last_log_id.map(|l| l.index()));
        let mut buf = Vec::new();
        file_util::encode_frame(&mut buf, &record)?;
        inner.write_records(&buf, 1)?;
        inner.replay(record);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        let record = LogRecord::Purge(log_id);
        let mut buf = Vec::new();
        file_util::encode_frame(&mut buf, &record)?;
        inner.write_records(&buf, 1)?;
        inner.replay(record);
        inner.maybe_compact()
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("callback").expect("flushed");
    }

    fn blanks(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| Entry::new_blank(log_id(term, i))).collect()
    }

    async fn snapshot_of(store: &mut LogStore) -> (LogState<TypeConfig>, Vec<u64>, Option<LogId>) {
        let state = store.get_log_state().await.expect("state");
        let idx = store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .iter()
            .map(|e| e.index())
            .collect();
        let committed = store.read_committed().await.expect("committed");
        (state, idx, committed)
    }

    #[tokio::test]
    async fn reopen_replays_appends_truncations_and_purges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        append(&mut store, blanks(1, 1..=10)).await;
        store
            .truncate_after(Some(log_id(1, 7)))
            .await
            .expect("truncate");
        append(&mut store, blanks(2, 8..=9)).await;
        store.purge(log_id(1, 3)).await.expect("purge");
        store
            .save_committed(Some(log_id(2, 8)))
            .await
            .expect("committed");
        let before = snapshot_of(&mut store).await;
        assert_eq!(before.1, vec![4, 5, 6, 7, 8, 9]);
        drop(store);

        let mut reopened = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(snapshot_of(&mut reopened).await, before);
        assert_eq!(
            reopened.try_get_log_entries(8..9).await.expect("read")[0].log_id(),
            log_id(2, 8)
        );
    }

    #[tokio::test]
    async fn torn_tail_is_cut_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        append(&mut store, blanks(1, 1..=3)).await;
        drop(store);
        // Simulate a crash in the middle of the next append.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open log");
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, b'{'])
            .expect("write garbage");
        drop(f);

        let mut store = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(snapshot_of(&mut store).await.1, vec![1, 2, 3]);
        append(&mut store, blanks(1, 4..=4)).await;
        drop(store);
        let mut store = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(snapshot_of(&mut store).await.1, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn compaction_keeps_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = LogStore::open(dir.path()).expect("open");
        for i in 1..=(COMPACT_SLACK as u64 + 20) {
            append(&mut store, blanks(1, i..=i)).await;
            if i > 5 {
                store.purge(log_id(1, i - 5)).await.expect("purge");
            }
        }
        let before = snapshot_of(&mut store).await;
        assert!(store.inner.lock().records < COMPACT_SLACK, "compacted");
        drop(store);
        let mut store = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(snapshot_of(&mut store).await, before);
    }
}
