//! One partition as the broker serves it: the log behind a lock, the high watermark that wakes long-poll
//! fetches, and the group-commit flusher that makes acks=all durable.
//!
//! Durability: an append writes the batch into the active segment (page cache) under the write lock and
//! returns. An acks=all producer then waits until the *durable offset* passes its batch. The flusher task
//! wakes on demand, takes `pending_sync()` (a handle on the active segment file and the end offset it
//! covers) under a read lock, fsyncs it on the blocking pool with no lock held, then publishes the new
//! durable offset. Every batch that arrived while an fsync was running is covered by the next one: one
//! fsync per round, however many producers wait. If an fsync fails the partition is marked failed (the
//! page cache can no longer be trusted) and every waiter, and every later produce, gets
//! KAFKA_STORAGE_ERROR.
//!
//! Visibility: with the default policy the high watermark (what Fetch and ListOffsets see) is the
//! durable offset, so a consumer never reads a record that a power loss could take back and whose
//! offset a later record would then reuse. A topic that relaxes durability (flush.messages/flush.ms)
//! exposes records as soon as they are appended, as Kafka does.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use tiering::remote::{RemoteError, RemotePartition};
use tiering::{AppendOutcome, EpochEntry, LogError, PartitionLog, SealedSegment};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
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

/// Durable progress published by the flusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    offset: i64,
    failed: bool,
}

/// Leadership of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Role {
    leader: bool,
    epoch: i32,
    leader_id: i32,
}

/// A partition hosted by this broker.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    /// This replica's role: whether it leads, the leader epoch (stamped on appended batches) and
    /// the leader's id.
    role: RwLock<Role>,
    /// Fires when the replica stops (removed, or the broker shuts down).
    cancel: CancellationToken,
    label: String,
    log: RwLock<Box<dyn PartitionLog + Sync>>,
    settings: RwLock<TopicSettings>,
    /// High watermark: the end of what readers may see.
    end_tx: watch::Sender<i64>,
    durable_tx: watch::Sender<Durable>,
    flush_wanted: Notify,
    unflushed: AtomicI64,
    failed: AtomicBool,
    /// The offloaded part of the log, when the topic tiers and an object store is configured.
    remote: RwLock<Option<Arc<RemotePartition>>>,
    disk: Arc<DiskGuard>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("label", &self.label)
            .finish()
    }
}

impl Partition {
    /// The current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.role.read().epoch
    }

    /// Whether this replica leads the partition.
    pub fn is_leader(&self) -> bool {
        self.role.read().leader
    }

    /// The leader's broker id as this replica knows it (-1: none).
    pub fn leader_id(&self) -> i32 {
        self.role.read().leader_id
    }

    /// This replica leads from `epoch` on (an older epoch is ignored). Returns whether it did not
    /// lead before.
    pub(crate) fn become_leader(&self, epoch: i32) -> bool {
        let mut role = self.role.write();
        if epoch < role.epoch {
            return false;
        }
        let was = role.leader;
        role.leader = true;
        role.epoch = epoch;
        !was
    }

    /// Another broker (`leader`, or -1 for none) leads from `epoch` on (an older epoch is
    /// ignored). Returns whether this replica led before.
    pub(crate) fn become_follower(&self, epoch: i32, leader: i32) -> bool {
        let mut role = self.role.write();
        if epoch < role.epoch {
            return false;
        }
        let was = role.leader;
        *role = Role {
            leader: false,
            epoch,
            leader_id: leader,
        };
        was
    }

    /// Stops the replica's tasks (its flusher syncs once more and exits).
    pub(crate) fn stop(&self) {
        {
            let mut role = self.role.write();
            role.leader = false;
        }
        self.cancel.cancel();
    }

    /// Wraps an opened log; the replica starts as a follower of nobody at epoch 0 until a
    /// transition says otherwise. `cancel` stops its tasks.
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: Box<dyn PartitionLog + Sync>,
        settings: TopicSettings,
        disk: Arc<DiskGuard>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let end = log.log_end_offset();
        // What recovery found may still be only in the page cache (after a process crash): make it
        // durable before it becomes visible as the high watermark.
        if let Err(e) = log.pending_sync().sync() {
            tracing::warn!(error = %e, "initial fsync failed; the flusher will retry");
        }
        Arc::new(Self {
            label: format!("{topic}-{index}"),
            topic,
            topic_id,
            index,
            role: RwLock::new(Role {
                leader: false,
                epoch: 0,
                leader_id: -1,
            }),
            cancel,
            log: RwLock::new(log),
            settings: RwLock::new(settings),
            end_tx: watch::channel(end).0,
            durable_tx: watch::channel(Durable {
                offset: end,
                failed: false,
            })
            .0,
            flush_wanted: Notify::new(),
            unflushed: AtomicI64::new(0),
            failed: AtomicBool::new(false),
            remote: RwLock::new(None),
            disk,
        })
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
        let relaxed = !settings.fsync_before_ack();
        let end = {
            let mut log = self.log.write();
            log.set_config(settings.log.clone());
            log.log_end_offset()
        };
        *self.settings.write() = settings;
        if relaxed {
            self.publish_high_watermark(end);
        }
        self.flush_wanted.notify_one();
    }

    /// Current settings.
    pub fn settings(&self) -> TopicSettings {
        self.settings.read().clone()
    }

    /// Validates and appends a produce payload; with `wait_durable`, returns only once it is fsynced
    /// (unless the topic relaxed durability with flush.messages/flush.ms).
    pub async fn produce(&self, records: &Bytes, acks: i16) -> Result<ProduceResult, BrokerError> {
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
        if self.failed.load(Ordering::Acquire) {
            return Err(self.log_err(LogError::Corrupt {
                context: "partition is offline after an fsync failure".into(),
            }));
        }
        self.disk.check()?;
        let mut buf = BytesMut::from(&records[..]);
        let now = now_ms();
        let mut result: Option<ProduceResult> = None;
        let mut appended_records = 0i64;
        {
            let mut log = self.log.write();
            let mut pos = 0usize;
            for h in &headers {
                let size = h.total_size();
                let batch = &mut buf[pos..pos + size];
                pos += size;
                let (base, last, append_time) =
                    match log.append_batch(batch, self.leader_epoch(), now) {
                        Ok(AppendOutcome::Appended {
                            base_offset,
                            last_offset,
                            log_append_time_ms,
                        }) => {
                            appended_records += i64::from(h.records_count.max(0));
                            (base_offset, last_offset, log_append_time_ms.unwrap_or(-1))
                        }
                        Ok(AppendOutcome::Duplicate {
                            base_offset,
                            last_offset,
                        }) => (base_offset, last_offset, -1),
                        Err(e) => return Err(self.log_err(e)),
                    };
                let r = result.get_or_insert(ProduceResult {
                    base_offset: base,
                    last_offset: last,
                    log_append_time_ms: append_time,
                    log_start_offset: 0,
                });
                r.last_offset = last;
            }
            let end = log.log_end_offset();
            let start = log.log_start_offset();
            if let Some(r) = result.as_mut() {
                r.log_start_offset = start;
            }
            if !self.settings.read().fsync_before_ack() {
                self.publish_high_watermark(end);
            }
        }
        let result = result.ok_or_else(|| BrokerError::InvalidRequest("no record batch".into()))?;
        self.disk.appended(buf.len() as u64);
        let settings = self.settings.read().clone();
        if settings.fsync_before_ack() {
            if acks == -1 {
                self.wait_durable(result.last_offset + 1).await?;
            } else {
                // acks=0/1 don't wait, but their batches join the next group commit.
                self.flush_wanted.notify_one();
            }
        } else if let Some(n) = settings.flush_messages {
            let pending =
                self.unflushed.fetch_add(appended_records, Ordering::AcqRel) + appended_records;
            if pending >= n {
                self.flush_wanted.notify_one();
            }
        }
        Ok(result)
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

    /// Waits until everything below `offset` is fsynced.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), BrokerError> {
        let mut rx = self.durable_tx.subscribe();
        self.flush_wanted.notify_one();
        loop {
            let d = *rx.borrow_and_update();
            if d.failed {
                return Err(self.log_err(LogError::Corrupt {
                    context: "fsync failed; partition is offline".into(),
                }));
            }
            if d.offset >= offset {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(BrokerError::ShuttingDown);
            }
        }
    }

    /// Runs the group-commit flusher until `cancel` fires, then fsyncs one last time.
    pub async fn run_flusher(self: Arc<Self>) {
        let cancel = self.cancel.clone();
        loop {
            let interval = self
                .settings
                .read()
                .flush_ms
                .map(|ms| Duration::from_millis(ms.max(1) as u64))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.flush_wanted.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            self.sync_once().await;
        }
        self.sync_once().await;
    }

    async fn sync_once(&self) {
        let pending = self.log.read().pending_sync();
        let end = pending.end_offset();
        if end <= self.durable_tx.borrow().offset && !self.durable_tx.borrow().failed {
            return;
        }
        self.unflushed.store(0, Ordering::Release);
        let res = tokio::task::spawn_blocking(move || pending.sync()).await;
        match res {
            Ok(Ok(())) => {
                // Visible before acknowledged: an acks=all producer woken by `durable_tx` must find
                // its records below the high watermark.
                self.publish_high_watermark(end);
                self.durable_tx
                    .send_modify(|d| d.offset = d.offset.max(end));
            }
            Ok(Err(e)) => {
                tracing::error!(partition = %self.label, error = %e, "fsync failed; taking partition offline");
                self.failed.store(true, Ordering::Release);
                self.durable_tx.send_modify(|d| d.failed = true);
            }
            Err(e) => {
                tracing::error!(partition = %self.label, error = %e, "fsync task failed");
            }
        }
    }

    /// Raises the high watermark to `offset` (never lowers it) and wakes long-polling fetches.
    fn publish_high_watermark(&self, offset: i64) {
        self.end_tx.send_if_modified(|v| {
            let raise = offset > *v;
            if raise {
                *v = offset;
            }
            raise
        });
    }

    /// Reads whole batches from `offset` below the high watermark, at most `max_bytes` (but at least
    /// one batch if `min_one`).
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<Bytes, BrokerError> {
        let hw = self.high_watermark();
        let log = self.log.read();
        log.read(offset, max_bytes, hw.min(log.log_end_offset()), min_one)
            .map_err(|e| self.log_err(e))
    }

    /// High watermark: the durable offset by default, the log end offset when durability is relaxed.
    pub fn high_watermark(&self) -> i64 {
        *self.end_tx.borrow()
    }

    /// Log start offset (over both tiers).
    pub fn log_start_offset(&self) -> i64 {
        let local = self.log.read().log_start_offset();
        self.logical_start(local)
    }

    /// The first offset still on local disk.
    pub fn local_log_start_offset(&self) -> i64 {
        self.log.read().log_start_offset()
    }

    /// (log start over both tiers, high watermark, local size in bytes).
    pub fn offsets(&self) -> (i64, i64, u64) {
        let hw = self.high_watermark();
        let (local_start, end, size) = {
            let log = self.log.read();
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
        let local_start = self.log.read().log_start_offset();
        if offset < local_start {
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
            let log = self.log.read();
            (log.leader_epochs(), log.log_end_offset())
        };
        let mut entries: Vec<EpochEntry> = remote.epochs();
        for e in local {
            if entries.last().is_none_or(|last| e.epoch > last.epoch) {
                entries.push(e);
            }
        }
        let floor = entries.partition_point(|e| e.epoch <= epoch);
        let found = entries.get(floor.checked_sub(1)?)?;
        let end = entries.get(floor).map_or(end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// DeleteRecords over both tiers: moves the log start to `offset` (-1 = high watermark).
    pub async fn delete_records_any(&self, offset: i64) -> Result<i64, BrokerError> {
        let hw = self.high_watermark().min(self.log.read().log_end_offset());
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
        {
            let mut log = self.log.write();
            if target > log.log_start_offset() {
                log.purge_prefix(target).map_err(|e| self.log_err(e))?;
            }
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
        self.log
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
            let log = self.log.read();
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
        self.log
            .write()
            .purge_prefix(boundary)
            .map_err(|e| self.log_err(e))?;
        tracing::debug!(partition = %self.label, local_start = boundary, "deleted offloaded local segments");
        Ok(Some(boundary))
    }

    /// Local bytes not offloaded yet (segments starting at or after `offloaded_end`).
    pub fn local_bytes_from(&self, offloaded_end: i64) -> u64 {
        self.log.read().size_bytes_from(offloaded_end)
    }

    /// Offload backlog: (bytes, sealed segments) on local disk that are not offloaded yet (the
    /// bytes include the active segment).
    pub fn upload_lag(&self) -> Option<(u64, usize)> {
        let remote = self.remote()?;
        let log = self.log.read();
        let end = remote
            .end_offset()
            .unwrap_or_else(|| log.log_start_offset());
        Some((log.size_bytes_from(end), log.sealed_count_from(end)))
    }

    /// Local bytes.
    pub fn local_size(&self) -> u64 {
        self.log.read().size_bytes()
    }

    /// A receiver that changes whenever the high watermark moves.
    pub fn subscribe_end(&self) -> watch::Receiver<i64> {
        self.end_tx.subscribe()
    }

    /// First record at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        self.log
            .read()
            .offset_for_timestamp(ts)
            .map_err(|e| self.log_err(e))
    }

    /// Record with the largest timestamp.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        self.log
            .read()
            .max_timestamp_offset()
            .map_err(|e| self.log_err(e))
    }

    /// OffsetForLeaderEpoch lookup.
    pub fn offset_for_leader_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.read().offset_for_leader_epoch(epoch)
    }

    /// Applies time and size retention (a tiered partition's retention is run by the offload task).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, BrokerError> {
        if self.remote().is_some() && self.settings.read().remote_storage {
            return Ok(0);
        }
        let outcome = self
            .log
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
        Ok(outcome.deleted_segments)
    }

    /// Flushes and closes the log (clean shutdown).
    pub fn close(&self) -> Result<(), BrokerError> {
        self.log.write().close().map_err(|e| self.log_err(e))
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use tiering::{LogConfig, MemoryLog};

    use super::*;
    use crate::topic_config::BrokerLayers;

    fn batch(n: usize) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    fn partition(overrides: &[(&str, &str)]) -> Arc<Partition> {
        let overrides: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = BrokerLayers::default().topic_settings(&overrides);
        Partition::new(
            "t".into(),
            Uuid::new_v4(),
            0,
            Box::new(MemoryLog::new(LogConfig::default())),
            settings,
            Arc::new(DiskGuard::unlimited()),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn records_become_visible_only_once_durable_by_default() {
        let p = partition(&[]);
        let r = p.produce(&batch(3), 1).await.expect("append");
        assert_eq!((r.base_offset, r.last_offset), (0, 2));
        // Appended, not yet fsynced (no flusher runs in this test): readers see nothing.
        assert_eq!(p.high_watermark(), 0);
        assert!(p.read(0, 1 << 20, true).expect("read").is_empty());
        p.sync_once().await;
        assert_eq!(p.high_watermark(), 3);
        assert!(!p.read(0, 1 << 20, true).expect("read").is_empty());
    }

    #[tokio::test]
    async fn relaxed_topics_expose_appends_at_once() {
        let p = partition(&[("flush.ms", "1000")]);
        p.produce(&batch(2), 1).await.expect("append");
        assert_eq!(p.high_watermark(), 2);
        assert!(!p.read(0, 1 << 20, true).expect("read").is_empty());
    }

    #[tokio::test]
    async fn acks_all_returns_after_the_group_commit() {
        let p = partition(&[]);
        let flusher = tokio::spawn(p.clone().run_flusher());
        let r = p.produce(&batch(4), -1).await.expect("acks=all");
        assert_eq!(r.last_offset, 3);
        assert_eq!(
            p.high_watermark(),
            4,
            "acknowledged means durable and visible"
        );
        p.stop();
        flusher.await.expect("flusher");
    }
}
