//! openraft's log storage for a partition group, on the replicated segment log (RFC 0006): the
//! Raft log is the partition log.
//!
//! Entries map to the log as follows: a leader's `Proposal` is admitted and stamped by the log
//! (its outcome answers the waiting produce request), a replicated `Batch` is written as the
//! leader stored it, `Skip` stores nothing but an index record, and openraft's blank and
//! membership entries and Strata's control entries are markers. Reading back gives the stored
//! form: `Batch` with its bytes for replication, `Applied` with only the next offset for the state
//! machine (which never needs the batch bytes).
//!
//! Durability: `append` writes into the page cache under the log's write lock and hands the IO
//! callback to the group commit (`ReplicaLog::on_durable`); `truncate_after` and `purge` are
//! durable when they return (the segment log fsyncs cuts and the purged-id file).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader};
use tiering::{EntryBody, ProposalOutcome, StoredEntry};

use super::log::{io_error, ReplicaLog};
use super::types::{
    to_entry_id, to_log_id, Control, Entry, LogId, MarkerPayload, PartitionRaftConfig, Record, Vote,
};

/// Upper bound of batch bytes one AppendEntries carries (at least one entry always goes).
pub const MAX_APPEND_BYTES: usize = 8 << 20;

/// The log store (and, cloned, its reader) of one partition group.
#[derive(Clone, Debug)]
pub struct LogStore {
    log: Arc<ReplicaLog>,
}

impl LogStore {
    /// A store over `log`.
    pub fn new(log: Arc<ReplicaLog>) -> Self {
        Self { log }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i + 1,
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

/// A stored entry as openraft's entry. `with_data == false`: data comes back as `Applied`.
fn to_raft_entry(e: StoredEntry, with_data: bool) -> io::Result<Entry> {
    let log_id = to_log_id(e.id);
    let payload = match e.body {
        EntryBody::Data {
            batch,
            first_in_segment,
        } => EntryPayload::Normal(if with_data {
            Record::Batch {
                batch,
                first_in_segment,
            }
        } else {
            Record::Applied {
                next_offset: e.next_offset,
            }
        }),
        EntryBody::Skip => EntryPayload::Normal(if with_data {
            Record::Skip
        } else {
            Record::Applied {
                next_offset: e.next_offset,
            }
        }),
        EntryBody::Marker(bytes) => match MarkerPayload::decode(&bytes).map_err(io_error)? {
            MarkerPayload::Blank => EntryPayload::Blank,
            MarkerPayload::Membership(m) => EntryPayload::Membership(m),
            MarkerPayload::Control(c) => EntryPayload::Normal(Record::Control(c)),
        },
    };
    Ok(Entry { log_id, payload })
}

impl LogStore {
    fn read(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
        with_data: bool,
    ) -> io::Result<Vec<Entry>> {
        let stored = self
            .log
            .log()
            .read()
            .entries(from, to, max_bytes, with_data)
            .map_err(io_error)?;
        stored
            .into_iter()
            .map(|e| to_raft_entry(e, with_data))
            .collect()
    }

    /// Appends one entry under the log's write lock.
    fn append_one(&self, log: &mut tiering::SegmentLog, entry: Entry) -> io::Result<()> {
        let id = to_entry_id(&entry.log_id);
        let now = super::types::now_ms();
        match entry.payload {
            EntryPayload::Normal(Record::Proposal {
                id: pid,
                now_ms,
                batch,
            }) => {
                let mut buf = BytesMut::from(batch.as_ref());
                match log.append_proposal(id, &mut buf, now_ms) {
                    Ok(ProposalOutcome::Accepted(outcome)) => {
                        self.log.complete_proposal(pid, Ok(outcome));
                        Ok(())
                    }
                    Ok(ProposalOutcome::Refused(e)) => {
                        self.log.complete_proposal(pid, Err(e));
                        Ok(())
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        self.log.complete_proposal(pid, Err(e));
                        Err(io_error(msg))
                    }
                }
            }
            EntryPayload::Normal(Record::Batch {
                batch,
                first_in_segment,
            }) => log
                .append_entry(
                    &StoredEntry {
                        id,
                        next_offset: 0,
                        body: EntryBody::Data {
                            batch,
                            first_in_segment,
                        },
                    },
                    now,
                )
                .map_err(io_error),
            EntryPayload::Normal(Record::Skip) => log
                .append_entry(
                    &StoredEntry {
                        id,
                        next_offset: 0,
                        body: EntryBody::Skip,
                    },
                    now,
                )
                .map_err(io_error),
            EntryPayload::Normal(Record::Control(c)) => log
                .append_marker(id, &MarkerPayload::Control(c).encode())
                .map_err(io_error),
            EntryPayload::Normal(Record::Applied { .. }) => Err(io_error(format!(
                "{}: a state-machine view of an entry cannot be appended (index {})",
                self.log.label(),
                id.index
            ))),
            EntryPayload::Blank => log
                .append_marker(id, &MarkerPayload::Blank.encode())
                .map_err(io_error),
            EntryPayload::Membership(m) => log
                .append_marker(id, &MarkerPayload::Membership(m).encode())
                .map_err(io_error),
        }
    }
}

impl RaftLogReader<PartitionRaftConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = bounds(&range);
        self.read(from, to, usize::MAX, true)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read(start, end, MAX_APPEND_BYTES, true)
    }

    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = Result<Entry, io::Error>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        // The state machine needs ids, offsets and markers only: no batch bytes are read.
        let (from, to) = bounds(&range);
        let items: Vec<Result<Entry, io::Error>> = match self.read(from, to, usize::MAX, false) {
            Ok(entries) => entries.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.log.vote())
    }
}

impl RaftLogStorage<PartitionRaftConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaftConfig>, io::Error> {
        let log = self.log.log().read();
        Ok(LogState {
            last_purged_log_id: log.purged_entry().map(to_log_id),
            last_log_id: log.last_entry().map(to_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.log.save_vote(vote).await.map_err(io_error)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<PartitionRaftConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut last = None;
        let result = {
            let mut log = self.log.log().write();
            let mut result = Ok(());
            for entry in entries {
                let index = entry.index();
                if let Err(e) = self.append_one(&mut log, entry) {
                    result = Err(e);
                    break;
                }
                last = Some(index);
            }
            result
        };
        match (&result, last) {
            (Ok(()), Some(index)) => self.log.on_durable(index, callback),
            (Ok(()), None) => callback.io_completed(Ok(())),
            (Err(e), _) => {
                tracing::error!(partition = %self.log.label(), error = %e, "append to the partition log failed");
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
            }
        }
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let mut log = self.log.log().write();
        log.truncate_entries_after(last_log_id.map(|l| l.index))
            .map_err(io_error)?;
        tracing::info!(partition = %self.log.label(), after = ?last_log_id.map(|l| l.index), log_end = tiering::PartitionLog::log_end_offset(&*log), "truncated a divergent log suffix");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.log
            .log()
            .write()
            .purge_entries(to_entry_id(&log_id))
            .map_err(io_error)
    }
}

/// The payload bytes of a replicated batch entry, for tests and the transport.
pub fn batch_of(entry: &Entry) -> Option<&Bytes> {
    match &entry.payload {
        EntryPayload::Normal(Record::Batch { batch, .. }) => Some(batch),
        _ => None,
    }
}

/// Whether an entry is a control entry of this kind.
pub fn control_of(entry: &Entry) -> Option<&Control> {
    match &entry.payload {
        EntryPayload::Normal(Record::Control(c)) => Some(c),
        _ => None,
    }
}
