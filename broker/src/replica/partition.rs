//! One partition replica as the broker serves it: its Raft group (RFC 0006), the topic settings,
//! the remote tier, and the Kafka operations on top.
//!
//! Produce: a replica that leads its group and has applied an entry of its term (so its high
//! watermark covers everything committed before it) proposes each batch; the leader's log store
//! admits, stamps and appends it (the append outcome answers the request for acks=1), and
//! acks=all waits until the entry is committed and applied, i.e. until it is below the high
//! watermark (visible before acknowledged), and, where `min.insync.replicas` asks more than a
//! Raft quorum, until that many replicas hold it. Durability of each replica's append follows the
//! topic's flush policy (fsynced by default, see `replication::log`).
//!
//! Fetch and the other reads serve committed data only (below the high watermark) from either
//! tier. A replica that does not lead answers NOT_LEADER_OR_FOLLOWER to what needs a leader.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::{Mutex, RwLock};
use tiering::remote::{RemoteError, RemotePartition};
use tiering::{EpochEntry, LogError, PartitionLog, SealedSegment, SegmentLog};
use tokio::sync::watch;
use uuid::Uuid;

use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
use crate::replication::group::Group;
pub use crate::replication::types::now_ms;
use crate::replication::types::{Control, Record};
use crate::replication::Replication;
use crate::topic_config::TopicSettings;

/// What a produce to one partition achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResult {
    /// Offset of the first record written (or of the original, for a duplicate).
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// LogAppendTime stamped on the batch, or -1 for CreateTime topics.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
}

/// Shortest wait before a manifest view that a read left behind the agreed offloaded end is read
/// again.
const REMOTE_RESYNC_INTERVAL: Duration = Duration::from_millis(500);

/// A partition hosted by this broker.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    label: String,
    group: Arc<Group>,
    rt: Arc<Replication>,
    settings: RwLock<TopicSettings>,
    /// The offloaded part of the log, when the topic tiers and an object store is configured.
    remote: RwLock<Option<Arc<RemotePartition>>>,
    /// When a stale manifest view was last read again (bounds the GETs a stuck view costs).
    remote_synced_at: Mutex<Option<std::time::Instant>>,
    disk: Arc<DiskGuard>,
    /// Keeps one connection's pipelined proposals in the order they arrived.
    propose_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("label", &self.label)
            .finish()
    }
}

impl Partition {
    /// A replica served through its Raft `group`.
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        group: Arc<Group>,
        rt: Arc<Replication>,
        settings: TopicSettings,
        disk: Arc<DiskGuard>,
    ) -> Arc<Self> {
        Arc::new(Self {
            label: format!("{topic}-{index}"),
            topic,
            topic_id,
            index,
            group,
            rt,
            settings: RwLock::new(settings),
            remote: RwLock::new(None),
            remote_synced_at: Mutex::new(None),
            disk,
            propose_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The partition's Raft group.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    fn log(&self) -> &RwLock<SegmentLog> {
        self.group.log.log()
    }

    /// The current leader epoch (the group's Raft term).
    pub fn leader_epoch(&self) -> i32 {
        i32::try_from(self.group.state().1).unwrap_or(i32::MAX)
    }

    /// Whether this replica serves as the partition's leader: it leads its group, has applied an
    /// entry of its term, still hears from a quorum of its voters, and is not fenced.
    pub fn is_leader(&self) -> bool {
        let me = self.rt.node_id();
        self.group.is_ready_leader() && self.rt.quorum_alive(&self.group) && !self.rt.is_fenced(me)
    }

    /// Whether this replica may serve consumers as a follower (KIP-392): it follows a leader it
    /// heard from within the election timeout, so its high watermark trails the leader's by at
    /// most that long.
    pub fn is_live_follower(&self) -> bool {
        let (state, _, leader) = self.group.state();
        state == openraft::ServerState::Follower
            && leader.is_some()
            && self
                .group
                .contact()
                .is_some_and(|c| c.at.elapsed() < self.rt.settings().election_timeout)
    }

    /// Whether this replica's Raft group elected it and it applied an entry of its term (what the
    /// coordinators load state for; serving also needs [`Partition::is_leader`]'s checks).
    pub fn is_raft_leader(&self) -> bool {
        self.group.is_ready_leader()
    }

    /// The leader's broker id as this replica knows it (-1: none).
    pub fn leader_id(&self) -> i32 {
        self.group
            .state()
            .2
            .and_then(|l| i32::try_from(l).ok())
            .unwrap_or(-1)
    }

    fn check_leader(&self) -> Result<(), BrokerError> {
        if self.is_leader() {
            Ok(())
        } else {
            self.explain_not_leader();
            Err(BrokerError::NotLeader(self.label.clone()))
        }
    }

    /// Logs (debug) why this replica does not serve as leader.
    pub fn explain_not_leader(&self) {
        tracing::debug!(
            partition = %self.label,
            ready = self.group.is_ready_leader(),
            quorum = self.rt.quorum_alive(&self.group),
            state = ?self.group.state(),
            applied_term = self.group.log.applied_term(),
            "not serving as leader"
        );
    }

    /// Attaches the partition's remote tier.
    pub fn attach_remote(&self, remote: Arc<RemotePartition>) {
        *self.remote.write() = Some(remote);
    }

    /// The partition's remote tier, if attached.
    pub fn remote(&self) -> Option<Arc<RemotePartition>> {
        self.remote.read().clone()
    }

    fn remote_err(&self, e: RemoteError) -> BrokerError {
        if !matches!(e, RemoteError::NotOffloaded { .. }) {
            tracing::warn!(partition = %self.label, error = %e, "remote tier error");
        }
        BrokerError::Remote {
            partition: self.label.clone(),
            source: e,
        }
    }

    /// Whether this replica's view of the remote manifest lags what the partition's log agreed is
    /// offloaded: a replica that installed a snapshot naming offloaded history it never held, a
    /// follower (only the leader writes the manifest), or a leader elected since the last upload.
    pub fn remote_view_stale(&self) -> bool {
        let Some(agreed) = self.agreed_offloaded_end() else {
            return false;
        };
        self.remote()
            .is_some_and(|r| r.end_offset().is_none_or(|end| end < agreed))
    }

    /// Reads the manifest again (one GET) if [`Partition::remote_view_stale`]: the agreed
    /// offloaded end only moves after the leader recorded the manifest, so the stored one then
    /// reaches it. Reads and log-start answers below the local log call this first, so no replica
    /// answers OFFSET_OUT_OF_RANGE (or a local log start as the earliest offset) for history that
    /// is in the object store.
    pub async fn sync_remote_view(&self) -> Result<(), BrokerError> {
        if !self.remote_view_stale() {
            return Ok(());
        }
        let Some(remote) = self.remote() else {
            return Ok(());
        };
        if self
            .remote_synced_at
            .lock()
            .is_some_and(|t| t.elapsed() < REMOTE_RESYNC_INTERVAL)
        {
            return Ok(());
        }
        remote.refresh().await.map_err(|e| self.remote_err(e))?;
        // Still behind (the stored manifest should never be): read again at most every interval.
        *self.remote_synced_at.lock() = self.remote_view_stale().then(std::time::Instant::now);
        tracing::debug!(partition = %self.label, end = ?remote.end_offset(), "remote manifest read: this replica's view lagged the agreed offloaded end");
        Ok(())
    }

    /// The log start over both tiers: offloaded history below the local log counts.
    fn logical_start(&self, local_start: i64) -> i64 {
        match self.remote() {
            Some(r) => match r.readable_start() {
                Some(s) if s < local_start => s,
                _ => local_start.max(r.log_start_offset()),
            },
            None => local_start,
        }
    }

    /// `topic-partition`.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn log_err(&self, e: LogError) -> BrokerError {
        if e.is_storage_error() {
            tracing::error!(partition = %self.label, error = %e, "storage error");
        }
        BrokerError::log(self.label.clone(), e)
    }

    /// Applies new topic settings (after AlterConfigs).
    pub fn set_settings(&self, settings: TopicSettings) {
        self.log().write().set_config(settings.log.clone());
        self.group.log.set_durability(
            !settings.fsync_before_ack(),
            settings
                .flush_ms
                .map_or(0, |ms| u64::try_from(ms.max(1)).unwrap_or(u64::MAX)),
        );
        *self.settings.write() = settings;
    }

    /// Current settings.
    pub fn settings(&self) -> TopicSettings {
        self.settings.read().clone()
    }

    /// Validates a produce payload and proposes each of its batches to the partition's Raft group;
    /// acks=1 returns after the leader's append, acks=-1 once committed (below the high watermark)
    /// and held by `min_insync` replicas.
    pub async fn produce(
        &self,
        records: &Bytes,
        acks: i16,
        min_insync: usize,
    ) -> Result<ProduceResult, BrokerError> {
        let headers = tiering::validate_batches(records)?;
        let target = self.settings.read().compression;
        let recompressed;
        let (records, headers) = match target {
            Some(codec) if headers.iter().any(|h| h.compression_codec() != codec as u8) => {
                recompressed = self.recompress(records, &headers, codec)?;
                let headers = tiering::validate_batches(&recompressed)?;
                (&recompressed, headers)
            }
            _ => (records, headers),
        };
        let max = self.settings.read().log.max_message_bytes as usize;
        if let Some(h) = headers.iter().find(|h| h.total_size() > max) {
            return Err(BrokerError::MessageTooLarge {
                size: h.total_size(),
                max,
            });
        }
        if self.settings.read().compact {
            self.check_keys(records, &headers)?;
        }
        if self.group.log.is_failed() {
            return Err(self.log_err(LogError::Corrupt {
                context: "partition is offline after an fsync failure".into(),
            }));
        }
        self.disk.check()?;
        self.check_leader()?;
        if acks == -1 && min_insync > 1 {
            let in_sync = self.in_sync_replicas().len();
            if in_sync < min_insync {
                return Err(BrokerError::NotEnoughReplicas {
                    partition: self.label.clone(),
                    in_sync,
                    min: min_insync,
                });
            }
        }
        let term = self.group.state().1;
        let now = now_ms();
        let mut waits = Vec::with_capacity(headers.len());
        {
            let _order = self.propose_lock.lock().await;
            let mut pos = 0usize;
            for h in &headers {
                let size = h.total_size();
                let batch = records.slice(pos..pos + size);
                pos += size;
                let (id, outcome) = self.group.log.register_proposal();
                let (responder, complete) = openraft::impls::ProgressResponder::complete_only();
                let sent = self
                    .group
                    .raft
                    .write(Record::Proposal {
                        id,
                        now_ms: now,
                        batch,
                    })
                    .with_leader(crate::replication::types::committed_leader(term))
                    .responder(responder)
                    .await;
                if sent.is_err() {
                    self.group.log.forget_proposal(id);
                    return Err(BrokerError::NotLeader(self.label.clone()));
                }
                waits.push((id, outcome, complete));
            }
        }
        self.disk.appended(records.len() as u64);
        let mut result: Option<ProduceResult> = None;
        for (id, mut outcome, mut complete) in waits {
            // The append outcome arrives first; a write openraft refused (no longer leader)
            // answers on `complete` instead, without an outcome.
            let mut committed = false;
            let appended = tokio::select! {
                biased;
                o = &mut outcome => o.map_err(|_| BrokerError::NotLeader(self.label.clone()))?,
                done = &mut complete => match done {
                    Ok(Ok(_)) => {
                        committed = true;
                        // Committed, so appended: the outcome was sent before.
                        (&mut outcome)
                            .await
                            .map_err(|_| BrokerError::NotLeader(self.label.clone()))?
                    }
                    Ok(Err(e)) => {
                        self.group.log.forget_proposal(id);
                        return Err(BrokerError::NotLeader(format!("{}: {e}", self.label)));
                    }
                    Err(_) => {
                        self.group.log.forget_proposal(id);
                        return Err(BrokerError::NotLeader(self.label.clone()));
                    }
                },
            };
            let appended = appended.map_err(|e| self.log_err(e))?;
            let (base, last, append_time) = match appended {
                tiering::AppendOutcome::Appended {
                    base_offset,
                    last_offset,
                    log_append_time_ms,
                } => (base_offset, last_offset, log_append_time_ms.unwrap_or(-1)),
                tiering::AppendOutcome::Duplicate {
                    base_offset,
                    last_offset,
                } => (base_offset, last_offset, -1),
            };
            if acks == -1 && !committed {
                match complete.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return Err(BrokerError::NotLeader(format!("{}: {e}", self.label)))
                    }
                    Err(_) => return Err(BrokerError::NotLeader(self.label.clone())),
                }
            }
            let r = result.get_or_insert(ProduceResult {
                base_offset: base,
                last_offset: last,
                log_append_time_ms: append_time,
                log_start_offset: 0,
            });
            r.last_offset = last;
        }
        let mut result =
            result.ok_or_else(|| BrokerError::InvalidRequest("no record batch".into()))?;
        if acks == -1 && min_insync > self.quorum_size() {
            self.wait_replicated(result.last_offset + 1, min_insync)
                .await?;
        }
        result.log_start_offset = self.log_start_offset();
        Ok(result)
    }

    /// Proposes a control entry and waits until it is committed and applied.
    async fn propose_control(&self, control: Control) -> Result<(), BrokerError> {
        self.check_leader()?;
        let term = self.group.state().1;
        let (responder, complete) = openraft::impls::ProgressResponder::complete_only();
        self.group
            .raft
            .write(Record::Control(control))
            .with_leader(crate::replication::types::committed_leader(term))
            .responder(responder)
            .await
            .map_err(|e| BrokerError::NotLeader(format!("{}: {e}", self.label)))?;
        match tokio::time::timeout(Duration::from_secs(30), complete).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(BrokerError::NotLeader(format!("{}: {e}", self.label))),
            Ok(Err(_)) => Err(BrokerError::NotLeader(self.label.clone())),
            Err(_) => Err(BrokerError::RequestTimedOut),
        }
    }

    /// The ISR the driver last computed for this leader (empty on a follower), sorted.
    pub fn last_isr(&self) -> Vec<i32> {
        self.group
            .isr()
            .into_iter()
            .filter_map(|b| i32::try_from(b).ok())
            .collect()
    }

    /// Voters of the group.
    fn voters(&self) -> Vec<u64> {
        let m = self.group.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().voter_ids().collect()
    }

    fn quorum_size(&self) -> usize {
        self.voters().len() / 2 + 1
    }

    /// The replicas in sync with this leader (itself included), as broker ids.
    pub fn in_sync_replicas(&self) -> Vec<i32> {
        self.group
            .update_isr(
                self.rt.node_id(),
                self.rt.settings().lag_max,
                &self.rt.fenced(),
            )
            .into_iter()
            .filter_map(|b| i32::try_from(b).ok())
            .collect()
    }

    /// Waits until `min_insync` voters (the leader included) hold the log up to Kafka offset
    /// `offset` (NOT_ENOUGH_REPLICAS_AFTER_APPEND if they do not in time).
    async fn wait_replicated(&self, offset: i64, min_insync: usize) -> Result<(), BrokerError> {
        let index = self
            .log()
            .read()
            .last_entry_below(offset)
            .ok()
            .flatten()
            .map_or(0, |e| e.index);
        let me = self.rt.node_id();
        let mut metrics = self.group.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let held = {
                let m = metrics.borrow_watched();
                let followers = m.replication.as_ref().map_or(0, |r| {
                    r.iter()
                        .filter(|(id, matched)| {
                            **id != me && matched.as_ref().is_some_and(|l| l.index >= index)
                        })
                        .count()
                });
                followers + 1
            };
            if held >= min_insync {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(BrokerError::NotEnoughReplicasAfterAppend(
                    self.label.clone(),
                ));
            }
        }
    }

    /// The end of the offloaded log all replicas agreed on (an applied `Offloaded` entry).
    pub fn agreed_offloaded_end(&self) -> Option<i64> {
        self.group.log.offloaded_end()
    }

    /// Leader: records through the partition's log that everything below `end` is offloaded, and
    /// waits until it is committed.
    pub async fn record_offloaded(&self, end: i64) -> Result<(), BrokerError> {
        self.propose_control(Control::Offloaded { next_offset: end })
            .await
    }

    /// Moves the replica's snapshot boundary to Kafka offset `offset` and asks its group to purge
    /// the entries below it, so segments there can be deleted (by the next retention pass).
    pub fn request_purge(&self, offset: i64) {
        let Ok(Some(below)) = self.log().read().last_entry_below(offset) else {
            return;
        };
        if self
            .log()
            .read()
            .purged_entry()
            .is_some_and(|p| p.index >= below.index)
        {
            return;
        }
        // Only what this replica applied can be snapshotted (openraft's invariant: a snapshot
        // never passes the applied point). Right after a restart nothing is applied until the
        // group replays its log; the next retention pass asks again.
        if self
            .group
            .log
            .applied()
            .last
            .is_none_or(|a| a.index < below.index)
        {
            return;
        }
        self.group.sm.set_snapshot_boundary(offset);
        let raft = self.group.raft.clone();
        let label = self.label.clone();
        let built = self
            .group
            .log
            .snapshot()
            .and_then(|(meta, _)| meta.last_log_id)
            .is_some_and(|l| l.index >= below.index);
        tokio::spawn(async move {
            let r = if built {
                raft.trigger().purge_log(below.index).await
            } else {
                raft.trigger().snapshot().await
            };
            if let Err(e) = r {
                tracing::debug!(partition = %label, error = %e, "cannot move the snapshot boundary");
            }
        });
    }

    /// Re-encodes every batch of a produce payload in the topic's `compression.type`.
    fn recompress(
        &self,
        records: &Bytes,
        headers: &[tiering::BatchHeader],
        codec: kafka_protocol::records::Compression,
    ) -> Result<Bytes, BrokerError> {
        let mut out = BytesMut::with_capacity(records.len());
        let mut pos = 0usize;
        for h in headers {
            let batch = &records[pos..pos + h.total_size()];
            pos += h.total_size();
            match tiering::recompress_batch(batch, codec).map_err(|e| self.log_err(e))? {
                Some(rebuilt) => out.extend_from_slice(&rebuilt),
                None => out.extend_from_slice(batch),
            }
        }
        Ok(out.freeze())
    }

    /// A compacted topic needs a key on every record (Kafka's rule): finds the keyless ones.
    fn check_keys(
        &self,
        records: &Bytes,
        headers: &[tiering::BatchHeader],
    ) -> Result<(), BrokerError> {
        let mut pos = 0usize;
        let mut first_index = 0i32;
        let mut bad = Vec::new();
        for h in headers {
            let batch = &records[pos..pos + h.total_size()];
            pos += h.total_size();
            let keyless = tiering::keyless_record_indexes(batch).map_err(|e| self.log_err(e))?;
            bad.extend(keyless.into_iter().map(|i| first_index + i));
            first_index += h.records_count.max(0);
        }
        if bad.is_empty() {
            return Ok(());
        }
        Err(BrokerError::InvalidRecord {
            message: format!(
                "compacted topic cannot accept a record without a key in topic partition {}",
                self.label
            ),
            record_indexes: bad,
        })
    }

    /// Reads whole batches from `offset` below the high watermark, at most `max_bytes` (but at least
    /// one batch if `min_one`).
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<Bytes, BrokerError> {
        let hw = self.high_watermark();
        let log = self.log().read();
        log.read(offset, max_bytes, hw.min(log.log_end_offset()), min_one)
            .map_err(|e| self.log_err(e))
    }

    /// High watermark: the Kafka offset after the last committed entry this replica applied.
    pub fn high_watermark(&self) -> i64 {
        self.group.log.high_watermark()
    }

    /// Log start offset (over both tiers).
    pub fn log_start_offset(&self) -> i64 {
        let local = self.log().read().log_start_offset();
        self.logical_start(local)
    }

    /// The first offset still on local disk.
    pub fn local_log_start_offset(&self) -> i64 {
        self.log().read().log_start_offset()
    }

    /// (log start over both tiers, high watermark, local size in bytes).
    pub fn offsets(&self) -> (i64, i64, u64) {
        let hw = self.high_watermark();
        let (local_start, end, size) = {
            let log = self.log().read();
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.size_bytes(),
            )
        };
        (self.logical_start(local_start), hw.min(end), size)
    }

    /// Reads from whichever tier holds `offset`: offloaded history below the local log comes from
    /// the object store through the cache, the rest from local segments.
    pub async fn read_any(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Bytes, BrokerError> {
        let local_start = self.log().read().log_start_offset();
        if offset < local_start {
            self.sync_remote_view().await?;
            if let Some(remote) = self.remote() {
                if remote.readable_start().is_some_and(|s| offset >= s) {
                    return remote
                        .read(offset, max_bytes, min_one)
                        .await
                        .map_err(|e| self.remote_err(e));
                }
            }
        }
        self.read(offset, max_bytes, min_one)
    }

    /// First record at or after `ts`, over both tiers.
    pub async fn offset_for_timestamp_any(
        &self,
        ts: i64,
    ) -> Result<Option<(i64, i64)>, BrokerError> {
        if let Some(remote) = self.remote().filter(|r| r.readable_start().is_some()) {
            let start = self.log_start_offset();
            if let Some(found) = remote
                .offset_for_timestamp(ts, start)
                .await
                .map_err(|e| self.remote_err(e))?
            {
                return Ok(Some(found));
            }
        }
        self.offset_for_timestamp(ts)
    }

    /// Record with the largest timestamp, over both tiers (the earliest on a tie).
    pub async fn max_timestamp_offset_any(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        let local = self.max_timestamp_offset()?;
        let Some(remote) = self.remote().filter(|r| r.readable_start().is_some()) else {
            return Ok(local);
        };
        let start = self.log_start_offset();
        let offloaded = remote
            .max_timestamp_offset(start)
            .await
            .map_err(|e| self.remote_err(e))?;
        Ok(match (offloaded, local) {
            (Some(r), Some(l)) if l.1 > r.1 => Some(l),
            (Some(r), _) => Some(r),
            (None, l) => l,
        })
    }

    /// OffsetForLeaderEpoch over both tiers.
    pub fn offset_for_leader_epoch_any(&self, epoch: i32) -> Option<(i32, i64)> {
        let Some(remote) = self.remote() else {
            return self.offset_for_leader_epoch(epoch);
        };
        let (local, end) = {
            let log = self.log().read();
            (PartitionLog::leader_epochs(&*log), log.log_end_offset())
        };
        let mut entries: Vec<EpochEntry> = remote.epochs();
        for e in local {
            if entries.last().is_none_or(|last| e.epoch > last.epoch) {
                entries.push(e);
            }
        }
        let floor = entries.partition_point(|e| e.epoch <= epoch);
        let Some(found) = floor.checked_sub(1).and_then(|i| entries.get(i)) else {
            // Below every known epoch: itself and the start of the earliest (Kafka's answer).
            return entries.first().map(|first| (epoch, first.start_offset));
        };
        let end = entries.get(floor).map_or(end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// DeleteRecords over both tiers: moves the log start to `offset` (-1 = high watermark). The
    /// new start is a control entry of the partition's log, so every replica applies it; this
    /// returns once it is committed.
    pub async fn delete_records_any(&self, offset: i64) -> Result<i64, BrokerError> {
        self.check_leader()?;
        let hw = self
            .high_watermark()
            .min(self.log().read().log_end_offset());
        let target = if offset == -1 { hw } else { offset };
        if target < 0 || target > hw {
            return Err(self.log_err(LogError::OffsetOutOfRange {
                offset: target,
                log_start: self.log_start_offset(),
                log_end: hw,
            }));
        }
        if let Some(remote) = self.remote() {
            remote
                .advance_start(target, self.leader_epoch())
                .await
                .map_err(|e| self.remote_err(e))?;
        }
        if target > self.log().read().log_start_offset() {
            self.propose_control(Control::LogStart { offset: target })
                .await?;
            // Frees the segments now below the start (followers do it on their retention pass).
            self.request_purge(target);
        }
        Ok(self.log_start_offset())
    }

    /// Sealed, durable segments from `from` on, for offloading.
    pub fn sealed_for_upload(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<Vec<SealedSegment>, BrokerError> {
        let hw = self.high_watermark();
        self.log()
            .read()
            .sealed_segments(from, hw, limit)
            .map_err(|e| self.log_err(e))
    }

    /// Deletes local segments that are offloaded (below `offloaded_end`) and past local
    /// retention, or entirely below `log_start` (total retention moved it). Blocking.
    pub fn apply_local_retention(
        &self,
        now_ms: i64,
        offloaded_end: i64,
        log_start: i64,
    ) -> Result<Option<i64>, BrokerError> {
        let settings = self.settings.read().clone();
        let (current, boundary) = {
            let log = self.log().read();
            let boundary = log.local_retention_boundary(
                now_ms,
                settings.local_retention_ms,
                settings.local_retention_bytes,
                offloaded_end,
            );
            (
                log.log_start_offset(),
                boundary.max(log_start.min(offloaded_end)),
            )
        };
        if boundary <= current {
            return Ok(None);
        }
        self.log()
            .write()
            .purge_prefix(boundary)
            .map_err(|e| self.log_err(e))?;
        tracing::debug!(partition = %self.label, local_start = boundary, "deleted offloaded local segments");
        Ok(Some(boundary))
    }

    /// Local bytes not offloaded yet (segments starting at or after `offloaded_end`).
    pub fn local_bytes_from(&self, offloaded_end: i64) -> u64 {
        self.log().read().size_bytes_from(offloaded_end)
    }

    /// Offload backlog: (bytes, sealed segments) on local disk that are not offloaded yet (the
    /// bytes include the active segment).
    pub fn upload_lag(&self) -> Option<(u64, usize)> {
        let remote = self.remote()?;
        let log = self.log().read();
        let end = remote
            .end_offset()
            .unwrap_or_else(|| log.log_start_offset());
        Some((log.size_bytes_from(end), log.sealed_count_from(end)))
    }

    /// Local bytes.
    pub fn local_size(&self) -> u64 {
        self.log().read().size_bytes()
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn subscribe_end(&self) -> watch::Receiver<i64> {
        self.group.log.subscribe_hw()
    }

    /// First record at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        self.log()
            .read()
            .offset_for_timestamp(ts)
            .map_err(|e| self.log_err(e))
    }

    /// Record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        self.log()
            .read()
            .max_timestamp_offset()
            .map_err(|e| self.log_err(e))
    }

    /// OffsetForLeaderEpoch lookup.
    pub fn offset_for_leader_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log().read().offset_for_leader_epoch(epoch)
    }

    /// Applies time and size retention (a tiered partition's retention is run by the offload
    /// task). Segments holding entries Raft still needs stay until the snapshot boundary moved
    /// past them (requested here; the next pass deletes them).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, BrokerError> {
        if self.remote().is_some() && self.settings.read().remote_storage {
            return Ok(0);
        }
        let outcome = self
            .log()
            .write()
            .apply_retention(now_ms)
            .map_err(|e| self.log_err(e))?;
        if outcome.deleted_segments > 0 {
            tracing::info!(
                partition = %self.label,
                segments = outcome.deleted_segments,
                bytes = outcome.deleted_bytes,
                log_start_offset = outcome.log_start_offset,
                "retention deleted segments"
            );
        }
        self.request_purge(outcome.log_start_offset);
        Ok(outcome.deleted_segments)
    }

    /// Flushes and closes the log (clean shutdown).
    pub fn close(&self) -> Result<(), BrokerError> {
        self.group.log.flush_applied();
        self.log().write().close().map_err(|e| self.log_err(e))
    }
}
