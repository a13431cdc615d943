//! The storage of one partition replica as its Raft group sees it: the replicated segment log,
//! the Raft state files beside it, the group commit, the high watermark and the proposals waiting
//! for their append. The log store and the state machine of the group both work on this one
//! object; so does the replica layer (reads, retention, offload).
//!
//! Files in the partition directory (besides the segment log's own):
//! - `raft-vote`: the vote (JSON), replaced atomically and fsynced before openraft is told it is
//!   saved.
//! - `raft-applied`: the last applied log id and membership (JSON), rewritten at most once a
//!   second without fsync. It only shortens the log scan at start (openraft re-reads from it);
//!   applying has no other effect to redo, so a stale or missing file is harmless.
//! - `raft-snapshot`: the current snapshot (meta and data, JSON), replaced atomically before it
//!   becomes current.
//!
//! Group commit and durability: an append writes its entries into the page cache under the log's
//! write lock and registers openraft's IO callback with the last index it wrote. The flusher takes
//! the registered callbacks, then a `PendingSync` of the active segment (which covers everything
//! appended before), fsyncs it off the lock, and only then reports those appends durable. A topic
//! that relaxes durability (`flush.messages`/`flush.ms`) is reported durable at once, as Kafka
//! acknowledges from the page cache. A failed fsync fails every waiting callback; openraft then
//! stops the group (the page cache can no longer be trusted), and the partition is offline until
//! the broker restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::IOFlushed;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tiering::{AppendOutcome, LogError, SegmentLog};
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::snapshot::SnapshotData;
use super::types::{LogId, PartitionRaftConfig, SnapshotMeta, StoredMembership, Vote};
use crate::error::BrokerError;

const VOTE_FILE: &str = "raft-vote";
const APPLIED_FILE: &str = "raft-applied";
const SNAPSHOT_FILE: &str = "raft-snapshot";
/// How often the applied position is written down.
const APPLIED_EVERY: Duration = Duration::from_secs(1);

/// What a produce proposal came to.
pub type ProposalResult = Result<AppendOutcome, LogError>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppliedFile {
    version: u32,
    last: Option<LogId>,
    membership: StoredMembership,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    version: u32,
    meta: SnapshotMeta,
    data: SnapshotData,
}

/// What the state machine has applied.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Last applied log id.
    pub last: Option<LogId>,
    /// Membership as of `last`.
    pub membership: StoredMembership,
    /// The end of the offloaded log every replica agreed on (an `Offloaded` control entry).
    pub offloaded_end: Option<i64>,
}

/// One replica's storage.
pub struct ReplicaLog {
    label: String,
    dir: PathBuf,
    log: RwLock<SegmentLog>,
    /// Acknowledge appends before the fsync (the topic relaxed durability).
    relaxed: AtomicBool,
    /// Periodic fsync interval of a relaxed topic (`flush.ms`), ms; 0 = none.
    flush_interval_ms: AtomicU64,
    hw: watch::Sender<i64>,
    applied: Mutex<Applied>,
    applied_term: AtomicU64,
    applied_saved_at: Mutex<Instant>,
    vote: Mutex<Option<Vote>>,
    snapshot: Mutex<Option<(SnapshotMeta, SnapshotData)>>,
    proposals: Mutex<HashMap<u64, oneshot::Sender<ProposalResult>>>,
    next_proposal: AtomicU64,
    flush_wanted: Notify,
    waiting: Mutex<Vec<(u64, IOFlushed<PartitionRaftConfig>)>>,
    failed: AtomicBool,
}

impl std::fmt::Debug for ReplicaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaLog")
            .field("label", &self.label)
            .finish()
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, BrokerError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| BrokerError::MetadataIo(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::MetadataIo(format!(
            "read {}: {e}",
            path.display()
        ))),
    }
}

/// An io::Error for openraft from a log error.
pub(crate) fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl ReplicaLog {
    /// Opens the replicated log in `dir` and the Raft files beside it. Blocking.
    pub fn open(
        label: String,
        dir: &Path,
        config: tiering::LogConfig,
        relaxed: bool,
        flush_interval_ms: u64,
    ) -> Result<ReplicaLog, BrokerError> {
        let log = SegmentLog::open_replicated(dir, config)
            .map_err(|e| BrokerError::log(label.clone(), e))?;
        let vote: Option<Vote> = read_json(&dir.join(VOTE_FILE))?;
        let snapshot: Option<SnapshotFile> = read_json(&dir.join(SNAPSHOT_FILE))?;
        let applied_file: Option<AppliedFile> = read_json(&dir.join(APPLIED_FILE))?;
        let mut applied = Applied::default();
        if let Some(s) = &snapshot {
            applied.last = s.meta.last_log_id;
            applied.membership = s.meta.last_membership.clone();
            applied.offloaded_end = s.data.offloaded_end;
        }
        // The applied file is trusted only where the log still holds (or purged) that entry with
        // that term; it never goes back behind the snapshot.
        if let Some(a) = applied_file {
            let held = match &a.last {
                Some(l) => log
                    .entry_id(l.index)
                    .ok()
                    .flatten()
                    .is_some_and(|id| id.term == l.leader_id.term),
                None => false,
            };
            if held && a.last > applied.last {
                applied.last = a.last;
                applied.membership = a.membership;
            }
        }
        // Offload progress recorded after the snapshot is re-read from the markers.
        let from = applied.membership.log_id().map_or(0, |l| l.index).min(
            snapshot
                .as_ref()
                .and_then(|s| s.meta.last_log_id)
                .map_or(0, |l| l.index + 1),
        );
        let upto = applied.last.map_or(0, |l| l.index + 1);
        for (_, payload) in log.markers(from, upto) {
            if let Ok(super::types::MarkerPayload::Control(super::types::Control::Offloaded {
                next_offset,
            })) = super::types::MarkerPayload::decode(&payload)
            {
                applied.offloaded_end = applied.offloaded_end.max(Some(next_offset));
            }
        }
        let hw = match applied.last {
            Some(l) => log
                .next_offset_after(l.index)
                .ok()
                .flatten()
                .or_else(|| snapshot.as_ref().map(|s| s.data.start_offset))
                .unwrap_or_else(|| tiering::PartitionLog::log_start_offset(&log)),
            None => tiering::PartitionLog::log_start_offset(&log),
        };
        let applied_term = applied.last.map_or(0, |l| l.leader_id.term);
        Ok(ReplicaLog {
            label,
            dir: dir.to_path_buf(),
            log: RwLock::new(log),
            relaxed: AtomicBool::new(relaxed),
            flush_interval_ms: AtomicU64::new(flush_interval_ms),
            hw: watch::Sender::new(hw),
            applied: Mutex::new(applied),
            applied_term: AtomicU64::new(applied_term),
            applied_saved_at: Mutex::new(Instant::now()),
            vote: Mutex::new(vote),
            snapshot: Mutex::new(snapshot.map(|s| (s.meta, s.data))),
            proposals: Mutex::new(HashMap::new()),
            next_proposal: AtomicU64::new(1),
            flush_wanted: Notify::new(),
            waiting: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
        })
    }

    /// `topic-partition`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log.
    pub fn log(&self) -> &RwLock<SegmentLog> {
        &self.log
    }

    /// Changes the durability policy (topic configs changed).
    pub fn set_durability(&self, relaxed: bool, flush_interval_ms: u64) {
        self.relaxed.store(relaxed, Ordering::Release);
        self.flush_interval_ms
            .store(flush_interval_ms, Ordering::Release);
        self.flush_wanted.notify_one();
    }

    /// The high watermark: the Kafka offset after the last applied (committed) entry.
    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn subscribe_hw(&self) -> watch::Receiver<i64> {
        self.hw.subscribe()
    }

    /// Raises the high watermark (never lowers it) and wakes long-polling fetches.
    pub(crate) fn publish_hw(&self, offset: i64) {
        self.hw.send_if_modified(|v| {
            let raise = offset > *v;
            if raise {
                *v = offset;
            }
            raise
        });
    }

    /// The term of the last applied entry (a leader serves once it applied an entry of its term).
    pub fn applied_term(&self) -> u64 {
        self.applied_term.load(Ordering::Acquire)
    }

    /// What the state machine has applied.
    pub fn applied(&self) -> Applied {
        self.applied.lock().clone()
    }

    /// The end of the offloaded log every replica agreed on (see [`Applied`]), without copying
    /// the applied state.
    pub fn offloaded_end(&self) -> Option<i64> {
        self.applied.lock().offloaded_end
    }

    /// Updates the applied state (the state machine), writing it down at most once a second.
    pub(crate) fn set_applied(&self, f: impl FnOnce(&mut Applied)) {
        let (last, membership) = {
            let mut a = self.applied.lock();
            f(&mut a);
            (a.last, a.membership.clone())
        };
        if let Some(l) = last {
            self.applied_term
                .fetch_max(l.leader_id.term, Ordering::AcqRel);
        }
        let due = {
            let mut at = self.applied_saved_at.lock();
            let due = at.elapsed() >= APPLIED_EVERY;
            if due {
                *at = Instant::now();
            }
            due
        };
        if due {
            self.save_applied(last, membership);
        }
    }

    fn save_applied(&self, last: Option<LogId>, membership: StoredMembership) {
        let file = AppliedFile {
            version: 1,
            last,
            membership,
        };
        let path = self.dir.join(APPLIED_FILE);
        let tmp = self.dir.join(format!("{APPLIED_FILE}.tmp"));
        let written = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!(partition = %self.label, error = %e, "cannot record the applied position");
        }
    }

    /// Writes the applied position now (clean shutdown).
    pub fn flush_applied(&self) {
        let (last, membership) = {
            let a = self.applied.lock();
            (a.last, a.membership.clone())
        };
        self.save_applied(last, membership);
    }

    /// The saved vote.
    pub fn vote(&self) -> Option<Vote> {
        *self.vote.lock()
    }

    /// Saves the vote durably.
    ///
    /// The two fsyncs (file, directory) run on the blocking pool: an election storm saves
    /// thousands of votes at once, and on the runtime's few worker threads they stalled every
    /// other task (the transport's readers among them, so AppendEntries timed out).
    pub(crate) async fn save_vote(&self, vote: &Vote) -> Result<(), BrokerError> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| BrokerError::MetadataIo(format!("encode vote: {e}")))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            crate::metadata_store::write_atomically(&dir, VOTE_FILE, &bytes)
        })
        .await
        .map_err(|e| BrokerError::MetadataIo(format!("vote write task: {e}")))??;
        *self.vote.lock() = Some(*vote);
        Ok(())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Option<(SnapshotMeta, SnapshotData)> {
        self.snapshot.lock().clone()
    }

    /// Saves a snapshot durably and makes it current.
    pub(crate) fn save_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &SnapshotData,
    ) -> Result<(), BrokerError> {
        let file = SnapshotFile {
            version: 1,
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| BrokerError::MetadataIo(format!("encode snapshot: {e}")))?;
        crate::metadata_store::write_atomically(&self.dir, SNAPSHOT_FILE, &bytes)?;
        *self.snapshot.lock() = Some((meta.clone(), data.clone()));
        Ok(())
    }

    /// A new proposal id and the receiver of its outcome.
    pub fn register_proposal(&self) -> (u64, oneshot::Receiver<ProposalResult>) {
        let id = self.next_proposal.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.proposals.lock().insert(id, tx);
        (id, rx)
    }

    /// Forgets a proposal that was never submitted.
    pub fn forget_proposal(&self, id: u64) {
        self.proposals.lock().remove(&id);
    }

    /// Answers the produce request waiting for proposal `id` (the leader appended it).
    pub(crate) fn complete_proposal(&self, id: u64, result: ProposalResult) {
        if let Some(tx) = self.proposals.lock().remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Drops every waiting proposal: their receivers see the sender gone (leadership was lost
    /// before they were appended).
    pub fn abandon_proposals(&self) {
        self.proposals.lock().clear();
    }

    /// Registers openraft's IO callback for an append that ended at `index`.
    pub(crate) fn on_durable(&self, index: u64, callback: IOFlushed<PartitionRaftConfig>) {
        if self.failed.load(Ordering::Acquire) {
            callback.io_completed(Err(io_error(format!(
                "{}: an earlier fsync failed; the partition is offline",
                self.label
            ))));
            return;
        }
        if self.relaxed.load(Ordering::Acquire) {
            callback.io_completed(Ok(()));
            return;
        }
        self.waiting.lock().push((index, callback));
        self.flush_wanted.notify_one();
    }

    /// Whether an fsync failed (the partition is offline).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Runs the group-commit flusher until `cancel`, then syncs one last time.
    pub async fn run_flusher(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let interval = match self.flush_interval_ms.load(Ordering::Acquire) {
                0 => Duration::from_secs(3600),
                ms => Duration::from_millis(ms),
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.flush_wanted.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            self.sync_once().await;
        }
        self.sync_once().await;
    }

    /// One group commit: fsyncs what the registered appends wrote, then reports them durable.
    pub async fn sync_once(&self) {
        let callbacks: Vec<(u64, IOFlushed<PartitionRaftConfig>)> =
            std::mem::take(&mut *self.waiting.lock());
        let pending = tiering::PartitionLog::pending_sync(&*self.log.read());
        if callbacks.is_empty() && !self.relaxed.load(Ordering::Acquire) {
            return;
        }
        let res = tokio::task::spawn_blocking(move || pending.sync()).await;
        let result = match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("fsync task failed: {e}")),
        };
        if let Err(e) = &result {
            tracing::error!(partition = %self.label, error = %e, "fsync failed; taking the partition offline");
            self.failed.store(true, Ordering::Release);
        }
        for (_, cb) in callbacks {
            cb.io_completed(result.clone().map_err(io_error));
        }
    }
}
