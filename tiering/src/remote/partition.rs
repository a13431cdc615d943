//! One partition's remote tier: uploading sealed segments, reading offloaded history, and moving
//! the remote log start (DeleteRecords, total retention) with deletion of the objects it frees.
//!
//! Invariants: the manifest in memory is the last one successfully written (or read at open);
//! every manifest write happens under `writer` and starts from that copy, so uploads, retention
//! and garbage collection of one partition never interleave their read-modify-write cycles.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use super::bundle::IndexesBundle;
use super::cache::ChunkCache;
use super::keys::{ObjectKeys, SegmentId};
use super::manifest::{ManifestStore, RemoteEpoch, RemoteManifest, RemoteSegment};
use super::store::{delete_objects, get_bytes};
use super::throttle::Throttle;
use super::RemoteError;
use crate::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::leader_epoch::EpochEntry;
use crate::record_search;
use crate::segment_log::{SealedSegment, SegmentLog};

/// Bytes read from a segment per cache request while scanning batches.
const SCAN_WINDOW: u64 = 1 << 20;
/// Most bytes one cache request asks for (a fetch's `max_bytes` beyond it takes several).
const MAX_READ_WINDOW: u64 = 16 << 20;
/// A read ending this close to its segment's end prefetches the next segment.
const PREFETCH_WHEN_WITHIN: u64 = 16 << 20;
/// How much of the next segment a prefetch reads (the cache's read-ahead continues from there).
const PREFETCH_BYTES: u64 = 8 << 20;
/// Parsed index bundles kept per partition.
const MAX_CACHED_INDEXES: usize = 64;

/// What every partition's remote tier shares (one per broker).
#[derive(Debug)]
pub struct RemoteContext {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// Key layout.
    pub keys: ObjectKeys,
    /// Read cache in front of `store`.
    pub cache: Arc<ChunkCache>,
    /// Upload bandwidth limit.
    pub throttle: Throttle,
    /// Segments up to this size are uploaded with one PUT; larger ones in parts of this size.
    pub part_bytes: u64,
}

/// Result of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    /// Base offset of the uploaded segment.
    pub base_offset: i64,
    /// One past its last offset (the new remote end).
    pub next_offset: i64,
    /// Bytes uploaded (log and indexes).
    pub bytes: u64,
}

/// A partition's remote tier.
#[derive(Debug)]
pub struct RemotePartition {
    ctx: Arc<RemoteContext>,
    topic_id: Uuid,
    partition: i32,
    manifest: RwLock<RemoteManifest>,
    writer: tokio::sync::Mutex<ManifestStore>,
    indexes: Mutex<HashMap<SegmentId, Arc<IndexesBundle>>>,
    /// The segment whose start was last prefetched for a sequential reader.
    prefetched: Mutex<Option<SegmentId>>,
    /// Whether the manifest was read from the store (false for [`RemotePartition::new_empty`]
    /// until [`RemotePartition::ensure_loaded`] succeeds).
    loaded: std::sync::atomic::AtomicBool,
}

impl RemotePartition {
    /// Loads the partition's manifest (an empty one if nothing was offloaded yet).
    pub async fn open(
        ctx: Arc<RemoteContext>,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
    ) -> Result<RemotePartition, RemoteError> {
        let key = ctx.keys.manifest(topic_id, partition);
        let (writer, manifest) = ManifestStore::load(ctx.store.clone(), key).await?;
        let manifest =
            manifest.unwrap_or_else(|| RemoteManifest::new(topic_id, partition, leader_epoch));
        Ok(RemotePartition {
            ctx,
            topic_id,
            partition,
            manifest: RwLock::new(manifest),
            writer: tokio::sync::Mutex::new(writer),
            indexes: Mutex::new(HashMap::new()),
            prefetched: Mutex::new(None),
            loaded: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// The remote tier of a partition that has never offloaded anything (a new topic): no request
    /// is made until the first upload.
    pub fn new_empty(
        ctx: Arc<RemoteContext>,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
    ) -> RemotePartition {
        let key = ctx.keys.manifest(topic_id, partition);
        RemotePartition {
            writer: tokio::sync::Mutex::new(ManifestStore::new_absent(ctx.store.clone(), key)),
            ctx,
            topic_id,
            partition,
            manifest: RwLock::new(RemoteManifest::new(topic_id, partition, leader_epoch)),
            indexes: Mutex::new(HashMap::new()),
            prefetched: Mutex::new(None),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reads the manifest from the store if this tier was created without reading it (a new
    /// partition, or one whose manifest could not be read at start). One GET, then never again.
    pub async fn ensure_loaded(&self) -> Result<(), RemoteError> {
        use std::sync::atomic::Ordering;
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut writer = self.writer.lock().await;
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(stored) = writer.reload().await? {
            *self.manifest.write() = stored;
        }
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads the manifest from the store again (this broker just became the partition's leader;
    /// an earlier leader may have written it since).
    pub async fn refresh(&self) -> Result<(), RemoteError> {
        let mut writer = self.writer.lock().await;
        if let Some(stored) = writer.reload().await? {
            *self.manifest.write() = stored;
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// A copy of the current manifest.
    pub fn manifest(&self) -> RemoteManifest {
        self.manifest.read().clone()
    }

    /// One past the last offloaded offset.
    pub fn end_offset(&self) -> Option<i64> {
        self.manifest.read().end_offset()
    }

    /// The first readable offloaded offset, if any history is offloaded.
    pub fn readable_start(&self) -> Option<i64> {
        self.manifest.read().readable_start()
    }

    /// The log start recorded remotely.
    pub fn log_start_offset(&self) -> i64 {
        self.manifest.read().log_start_offset
    }

    /// Bytes held remotely.
    pub fn size_bytes(&self) -> u64 {
        self.manifest.read().size_bytes()
    }

    /// Number of offloaded segments.
    pub fn segment_count(&self) -> usize {
        self.manifest.read().segments.len()
    }

    /// Leader epochs of the offloaded history.
    pub fn epochs(&self) -> Vec<EpochEntry> {
        self.manifest
            .read()
            .epochs()
            .into_iter()
            .map(|e| EpochEntry {
                epoch: e.epoch,
                start_offset: e.start_offset,
            })
            .collect()
    }

    /// Uploads one sealed segment (its `.log` and its indexes bundle) and records it in the
    /// manifest. The segment must start at the remote end (or be the first). Returns `None` if it
    /// was already offloaded.
    pub async fn upload(
        &self,
        segment: &SealedSegment,
        leader_epoch: i32,
    ) -> Result<Option<Uploaded>, RemoteError> {
        self.upload_above(segment, leader_epoch, i64::MIN).await
    }

    /// [`RemotePartition::upload`], recording a log start of at least `log_start` in the same
    /// manifest write (the first upload of a log whose start is inside its first segment, after
    /// DeleteRecords or retention ran before tiering was enabled).
    pub async fn upload_above(
        &self,
        segment: &SealedSegment,
        leader_epoch: i32,
        log_start: i64,
    ) -> Result<Option<Uploaded>, RemoteError> {
        if self
            .end_offset()
            .is_some_and(|end| end >= segment.next_offset)
        {
            return Ok(None);
        }
        let id = SegmentId::new(segment.base_offset, leader_epoch);
        let log_key = self
            .ctx
            .keys
            .segment_log(self.topic_id, self.partition, &id);
        let idx_key = self
            .ctx
            .keys
            .segment_indexes(self.topic_id, self.partition, &id);
        let bundle = IndexesBundle::encode(
            &segment.offset_index,
            &segment.time_index,
            segment.producer_snapshot.as_deref(),
        );
        let indexes_bytes = bundle.len() as u64;
        let result = async {
            self.put_log(segment, &log_key).await?;
            self.ctx.throttle.acquire(indexes_bytes).await;
            self.ctx
                .store
                .put(&idx_key, PutPayload::from(bundle))
                .await
                .map_err(RemoteError::store(format!("put {idx_key}")))?;
            let remote = RemoteSegment {
                id,
                next_offset: segment.next_offset,
                size_bytes: segment.size,
                indexes_bytes,
                max_timestamp: segment.max_timestamp,
                max_timestamp_batch: segment.max_timestamp_batch,
                epochs: segment
                    .epochs
                    .iter()
                    .copied()
                    .map(RemoteEpoch::from)
                    .collect(),
                uploaded_at_ms: now_ms(),
            };
            self.update_manifest(leader_epoch, |m| {
                m.push(remote.clone())?;
                m.log_start_offset = m.log_start_offset.max(log_start);
                Ok(())
            })
            .await
        }
        .await;
        if let Err(e) = result {
            // The objects are not in the manifest: nobody will read them. Remove them now if we
            // can; otherwise they stay as unreferenced garbage under the topic's prefix, which
            // topic deletion removes.
            if let Err(cleanup) =
                delete_objects(&self.ctx.store, vec![log_key.clone(), idx_key.clone()]).await
            {
                tracing::debug!(key = %log_key, error = %cleanup, "could not remove objects of a failed upload");
            }
            return Err(e);
        }
        Ok(Some(Uploaded {
            base_offset: segment.base_offset,
            next_offset: segment.next_offset,
            bytes: segment.size + indexes_bytes,
        }))
    }

    async fn put_log(&self, segment: &SealedSegment, key: &Path) -> Result<(), RemoteError> {
        let part = self.ctx.part_bytes.max(5 << 20);
        if segment.size <= part {
            let data = read_blocking(segment, 0, segment.size as usize).await?;
            self.ctx.throttle.acquire(segment.size).await;
            self.ctx
                .store
                .put(key, PutPayload::from(data))
                .await
                .map_err(RemoteError::store(format!("put {key}")))?;
            return Ok(());
        }
        let mut upload = self
            .ctx
            .store
            .put_multipart(key)
            .await
            .map_err(RemoteError::store(format!("start multipart upload {key}")))?;
        let mut position = 0u64;
        let result = async {
            while position < segment.size {
                let len = part.min(segment.size - position);
                let data = read_blocking(segment, position, len as usize).await?;
                self.ctx.throttle.acquire(len).await;
                upload
                    .put_part(PutPayload::from(data))
                    .await
                    .map_err(RemoteError::store(format!(
                        "put part at {position} of {key}"
                    )))?;
                position += len;
            }
            upload.complete().await.map_err(RemoteError::store(format!(
                "complete multipart upload {key}"
            )))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            if let Err(e) = upload.abort().await {
                tracing::debug!(key = %key, error = %e, "abort of a failed multipart upload failed");
            }
        }
        result
    }

    /// Applies `change` to the manifest as `leader_epoch` and writes it conditionally. If another
    /// writer at the same or an older epoch changed it meanwhile, `change` is re-applied on top of
    /// the stored version (so nothing it recorded is lost); a newer epoch fences us.
    async fn update_manifest(
        &self,
        leader_epoch: i32,
        mut change: impl FnMut(&mut RemoteManifest) -> Result<(), RemoteError>,
    ) -> Result<(), RemoteError> {
        let mut writer = self.writer.lock().await;
        let mut base = self.manifest.read().clone();
        for _ in 0..5 {
            if leader_epoch < base.leader_epoch {
                return Err(RemoteError::Fenced {
                    key: writer.key().to_string(),
                    current: base.leader_epoch,
                    ours: leader_epoch,
                });
            }
            let mut next = base.clone();
            next.leader_epoch = leader_epoch;
            change(&mut next)?;
            match writer.save(&next).await? {
                None => {
                    *self.manifest.write() = next;
                    return Ok(());
                }
                Some(current) => {
                    *self.manifest.write() = current.clone();
                    base = current;
                }
            }
        }
        Err(RemoteError::Corrupt {
            key: writer.key().to_string(),
            reason: "conditional manifest update kept conflicting".into(),
        })
    }

    /// Raises the remote log start to `new_start` (DeleteRecords, or total retention); segments
    /// entirely below it become garbage. Returns how many segments that freed.
    pub async fn advance_start(
        &self,
        new_start: i64,
        leader_epoch: i32,
    ) -> Result<usize, RemoteError> {
        if new_start <= self.log_start_offset() {
            return Ok(0);
        }
        let mut freed = 0;
        self.update_manifest(leader_epoch, |m| {
            freed = m.advance_start(new_start);
            Ok(())
        })
        .await?;
        Ok(freed)
    }

    /// Total retention over the remote and local tiers: removes the oldest offloaded segments
    /// older than `retention_ms` (by their newest timestamp) or beyond `retention_bytes` of total
    /// size, where `local_only_bytes` is the local data not offloaded yet. Returns the new log
    /// start if it moved.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        local_only_bytes: u64,
        leader_epoch: i32,
    ) -> Result<Option<i64>, RemoteError> {
        let new_start = {
            let m = self.manifest.read();
            let mut count = 0;
            if retention_ms >= 0 {
                let cutoff = now_ms.saturating_sub(retention_ms);
                count = m
                    .segments
                    .iter()
                    .take_while(|s| {
                        let ts = if s.max_timestamp >= 0 {
                            s.max_timestamp
                        } else {
                            s.uploaded_at_ms
                        };
                        ts < cutoff
                    })
                    .count();
            }
            if retention_bytes >= 0 {
                let limit = retention_bytes as u64;
                let mut total: u64 = m.segments[count..]
                    .iter()
                    .map(|s| s.size_bytes)
                    .sum::<u64>()
                    + local_only_bytes;
                while count < m.segments.len() && total - m.segments[count].size_bytes >= limit {
                    total -= m.segments[count].size_bytes;
                    count += 1;
                }
            }
            if count == 0 {
                return Ok(None);
            }
            m.segments[count - 1].next_offset
        };
        self.advance_start(new_start, leader_epoch).await?;
        Ok(Some(new_start))
    }

    /// Deletes the objects of segments removed from the manifest, then forgets them. Idempotent;
    /// survives restarts because the garbage list is in the manifest. Returns segments collected.
    pub async fn collect_garbage(&self, leader_epoch: i32) -> Result<usize, RemoteError> {
        let garbage = self.manifest.read().garbage.clone();
        if garbage.is_empty() {
            return Ok(0);
        }
        let keys = &self.ctx.keys;
        let paths = garbage
            .iter()
            .flat_map(|id| {
                [
                    keys.segment_log(self.topic_id, self.partition, id),
                    keys.segment_indexes(self.topic_id, self.partition, id),
                ]
            })
            .collect();
        delete_objects(&self.ctx.store, paths).await?;
        {
            let mut cached = self.indexes.lock();
            for id in &garbage {
                cached.remove(id);
            }
        }
        self.update_manifest(leader_epoch, |m| {
            m.garbage.retain(|id| !garbage.contains(id));
            Ok(())
        })
        .await?;
        Ok(garbage.len())
    }

    /// Seeds an empty local partition directory so the local log continues at the remote end,
    /// with the producer state and leader epochs of the offloaded history. Returns whether it did.
    pub async fn restore_into(&self, dir: &std::path::Path) -> Result<bool, RemoteError> {
        let Some(last) = self.manifest.read().segments.last().cloned() else {
            return Ok(false);
        };
        let bundle = self.indexes_for(&last).await?;
        let epochs = self.epochs();
        let snapshot = bundle.producer_snapshot.clone();
        let dir = dir.to_path_buf();
        let end = last.next_offset;
        let seeded = tokio::task::spawn_blocking(move || {
            SegmentLog::seed_empty_dir(&dir, end, snapshot.as_deref(), &epochs)
        })
        .await
        .map_err(|e| RemoteError::Cache(format!("seed task failed: {e}")))??;
        Ok(seeded)
    }

    async fn indexes_for(
        &self,
        segment: &RemoteSegment,
    ) -> Result<Arc<IndexesBundle>, RemoteError> {
        if let Some(b) = self.indexes.lock().get(&segment.id) {
            return Ok(b.clone());
        }
        let key = self
            .ctx
            .keys
            .segment_indexes(self.topic_id, self.partition, &segment.id);
        let bytes = if segment.indexes_bytes > 0 {
            self.ctx
                .cache
                .read(&key, segment.indexes_bytes, 0..segment.indexes_bytes)
                .await?
        } else {
            get_bytes(&self.ctx.store, &key).await?
        };
        let bundle = Arc::new(IndexesBundle::decode(key.as_ref(), bytes)?);
        let mut cached = self.indexes.lock();
        if cached.len() >= MAX_CACHED_INDEXES {
            cached.clear();
        }
        cached.insert(segment.id, bundle.clone());
        Ok(bundle)
    }

    fn segment_for(&self, offset: i64) -> Result<RemoteSegment, RemoteError> {
        let m = self.manifest.read();
        match (m.readable_start(), m.segment_for(offset)) {
            (Some(start), Some(seg)) if offset >= start => Ok(seg.clone()),
            _ => Err(RemoteError::NotOffloaded {
                offset,
                range: m.readable_start().zip(m.end_offset()),
            }),
        }
    }

    fn cursor(&self, segment: &RemoteSegment, position: u64) -> Cursor<'_> {
        Cursor {
            cache: &self.ctx.cache,
            key: self
                .ctx
                .keys
                .segment_log(self.topic_id, self.partition, &segment.id),
            size: segment.size_bytes,
            position,
            window_start: position,
            window: Bytes::new(),
        }
    }

    /// Whole batches from the one containing `offset`, within one offloaded segment, at most
    /// `max_bytes` (at least one batch with `min_one`).
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Bytes, RemoteError> {
        let segment = self.segment_for(offset)?;
        let bundle = self.indexes_for(&segment).await?;
        let relative = u32::try_from(offset - segment.base_offset()).unwrap_or(u32::MAX);
        let mut cursor = self.cursor(&segment, bundle.position_for(relative));
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut taken = 0usize;
        while let Some(header) = cursor.next_header(max_bytes as u64).await? {
            let size = header.total_size();
            if header.last_offset() < offset {
                cursor.skip(size);
                continue;
            }
            if taken + size > max_bytes && !(min_one && taken == 0) {
                break;
            }
            let batch = cursor.take(size).await?;
            taken += size;
            match pieces.last_mut() {
                Some(last) if last.len() + batch.len() <= (SCAN_WINDOW as usize) * 4 => {
                    let mut joined = BytesMut::with_capacity(last.len() + batch.len());
                    joined.extend_from_slice(last);
                    joined.extend_from_slice(&batch);
                    *last = joined.freeze();
                }
                _ => pieces.push(batch),
            }
        }
        if segment.size_bytes.saturating_sub(cursor.position) < PREFETCH_WHEN_WITHIN {
            self.prefetch_after(&segment);
        }
        Ok(match pieces.len() {
            0 => Bytes::new(),
            1 => pieces.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(taken);
                for p in pieces {
                    out.extend_from_slice(&p);
                }
                out.freeze()
            }
        })
    }

    /// A sequential reader is near the end of `segment`: warms the cache with the start of the next
    /// segment and its indexes in the background (the cache's own read-ahead stops at an object's
    /// end), so the reader does not stall on a cold GET at every segment boundary.
    fn prefetch_after(&self, segment: &RemoteSegment) {
        let Some(next) = self
            .manifest
            .read()
            .segment_for(segment.next_offset)
            .cloned()
        else {
            return;
        };
        {
            let mut last = self.prefetched.lock();
            if *last == Some(next.id) {
                return;
            }
            *last = Some(next.id);
        }
        let cache = self.ctx.cache.clone();
        let keys = &self.ctx.keys;
        let log = keys.segment_log(self.topic_id, self.partition, &next.id);
        let idx = keys.segment_indexes(self.topic_id, self.partition, &next.id);
        tokio::spawn(async move {
            let first = next.size_bytes.min(PREFETCH_BYTES);
            let (a, b) = futures::join!(
                cache.read(&idx, next.indexes_bytes, 0..next.indexes_bytes),
                cache.read(&log, next.size_bytes, 0..first)
            );
            if let Err(e) = a.and(b) {
                tracing::debug!(key = %log, error = %e, "prefetch of the next segment failed");
            }
        });
    }

    /// `(offset, timestamp)` of the first offloaded record at or after `timestamp` and at or
    /// after `log_start`, or `None` if the offloaded history has none.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
        log_start: i64,
    ) -> Result<Option<(i64, i64)>, RemoteError> {
        let candidates: Vec<RemoteSegment> = self
            .manifest
            .read()
            .segments
            .iter()
            .filter(|s| s.next_offset > log_start && s.max_timestamp >= timestamp)
            .cloned()
            .collect();
        for segment in candidates {
            let bundle = self.indexes_for(&segment).await?;
            let mut cursor = self.cursor(&segment, bundle.position_for_timestamp(timestamp));
            while let Some(header) = cursor.next_header(SCAN_WINDOW).await? {
                let size = header.total_size();
                if header.max_timestamp >= timestamp && header.last_offset() >= log_start {
                    let batch = cursor.take(size).await?;
                    if let Some((offset, ts)) = record_search::first_at_or_after(&batch, timestamp)?
                    {
                        return Ok(Some((offset.max(log_start), ts)));
                    }
                } else {
                    cursor.skip(size);
                }
            }
        }
        Ok(None)
    }

    /// `(offset, timestamp)` of the offloaded record with the largest timestamp at or after
    /// `log_start`.
    pub async fn max_timestamp_offset(
        &self,
        log_start: i64,
    ) -> Result<Option<(i64, i64)>, RemoteError> {
        let best = self
            .manifest
            .read()
            .segments
            .iter()
            .filter(|s| s.next_offset > log_start && s.max_timestamp_batch.is_some())
            .fold(None::<RemoteSegment>, |best, s| match best {
                Some(b) if b.max_timestamp >= s.max_timestamp => Some(b),
                _ => Some(s.clone()),
            });
        let Some(segment) = best else {
            return Ok(None);
        };
        let Some(batch_base) = segment.max_timestamp_batch else {
            return Ok(None);
        };
        let bundle = self.indexes_for(&segment).await?;
        let relative = u32::try_from(batch_base - segment.base_offset()).unwrap_or(u32::MAX);
        let mut cursor = self.cursor(&segment, bundle.position_for(relative));
        while let Some(header) = cursor.next_header(SCAN_WINDOW).await? {
            let size = header.total_size();
            if header.base_offset == batch_base {
                let batch = cursor.take(size).await?;
                return Ok(record_search::max_timestamp_record(&batch)?
                    .map(|(offset, ts)| (offset.max(log_start), ts)));
            }
            if header.base_offset > batch_base {
                break;
            }
            cursor.skip(size);
        }
        Ok(None)
    }
}

/// Walks the batches of one remote segment through the cache, a window at a time.
struct Cursor<'a> {
    cache: &'a ChunkCache,
    key: Path,
    size: u64,
    position: u64,
    window_start: u64,
    window: Bytes,
}

impl Cursor<'_> {
    fn window_end(&self) -> u64 {
        self.window_start + self.window.len() as u64
    }

    /// Makes `[position, position + len)` available in the window, reading at least `hint` bytes.
    async fn ensure(&mut self, len: u64, hint: u64) -> Result<(), RemoteError> {
        if self.position >= self.window_start && self.position + len <= self.window_end() {
            return Ok(());
        }
        let want = len.max(hint.clamp(64 << 10, MAX_READ_WINDOW));
        let end = self.size.min(self.position + want);
        self.window = self
            .cache
            .read(&self.key, self.size, self.position..end)
            .await?;
        self.window_start = self.position;
        if (self.window.len() as u64) < len {
            return Err(RemoteError::Corrupt {
                key: self.key.to_string(),
                reason: format!(
                    "segment ends inside a batch at position={} (size={})",
                    self.position, self.size
                ),
            });
        }
        Ok(())
    }

    /// The header of the batch at the cursor, or `None` at the end of the segment.
    async fn next_header(&mut self, hint: u64) -> Result<Option<BatchHeader>, RemoteError> {
        if self.position >= self.size {
            return Ok(None);
        }
        self.ensure(BATCH_HEADER_LEN as u64, hint).await?;
        let at = (self.position - self.window_start) as usize;
        let header = BatchHeader::parse(&self.window[at..]).map_err(|e| RemoteError::Corrupt {
            key: self.key.to_string(),
            reason: format!("bad batch at position={}: {e}", self.position),
        })?;
        Ok(Some(header))
    }

    fn skip(&mut self, size: usize) {
        self.position += size as u64;
    }

    /// The batch of `size` bytes at the cursor; advances past it.
    async fn take(&mut self, size: usize) -> Result<Bytes, RemoteError> {
        self.ensure(size as u64, size as u64).await?;
        let at = (self.position - self.window_start) as usize;
        let batch = self.window.slice(at..at + size);
        self.position += size as u64;
        Ok(batch)
    }
}

async fn read_blocking(
    segment: &SealedSegment,
    position: u64,
    len: usize,
) -> Result<Bytes, RemoteError> {
    let reader = segment.reader();
    let data = tokio::task::spawn_blocking(move || reader.read_at(position, len))
        .await
        .map_err(|e| RemoteError::Cache(format!("read task failed: {e}")))??;
    Ok(Bytes::from(data))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
