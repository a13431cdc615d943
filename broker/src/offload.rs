//! The broker side of tiered storage: opening the object store and the read cache, restoring an
//! empty data directory from the object store at start, and the offload task that uploads sealed
//! segments, applies total and local retention, collects garbage objects, deletes the objects of
//! deleted topics and keeps a copy of the broker metadata in the object store.
//!
//! Design and failure behaviour: `docs/rfcs/0004-tiered-storage.md`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use tiering::remote::cache::{ChunkCache, ChunkCacheConfig};
use tiering::remote::store::{delete_prefix, get_bytes};
use tiering::remote::{
    open_object_store, ObjectKeys, ObjectStoreConfig, RemoteContext, RemoteError, RemotePartition,
    StoreStats, Throttle,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::admin::TopicAdmin;
use crate::cluster::{ClusterLink, ClusterView};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata_store::{MetadataState as LegacyState, MetadataStore};
use crate::replica::{now_ms, Partition, ReplicaManager};

/// Sealed segments uploaded per partition per pass (the rest wait for the next pass).
const UPLOADS_PER_PASS: usize = 16;
/// Longest wait between retries of a failing partition.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long start-up waits for the object store when a partition must be restored from it.
const RESTORE_PATIENCE: Duration = Duration::from_secs(60);

/// A partition's remote tier loaded at start, by (topic id, partition).
type LoadedRemote = ((Uuid, i32), Arc<RemotePartition>);

/// Counters of the offload task, exported as metrics.
#[derive(Debug, Default)]
pub struct OffloadStats {
    /// Segments uploaded.
    pub segments_uploaded: AtomicU64,
    /// Bytes uploaded (segments and indexes).
    pub bytes_uploaded: AtomicU64,
    /// Upload attempts that failed.
    pub upload_errors: AtomicU64,
    /// Sum of upload times (first PUT to manifest recorded), in milliseconds.
    pub upload_ms_total: AtomicU64,
    /// Sum of seal-to-upload-recorded times (segment's last write to manifest recorded), in ms.
    pub seal_to_upload_ms_total: AtomicU64,
    /// Remote segments removed by retention or DeleteRecords and collected.
    pub segments_deleted: AtomicU64,
}

/// The broker's remote tier.
#[derive(Debug)]
pub struct RemoteTier {
    /// Shared by every partition's remote tier.
    pub ctx: Arc<RemoteContext>,
    /// Object store request counters.
    pub store_stats: Arc<StoreStats>,
    /// Offload counters.
    pub stats: OffloadStats,
    /// Where the objects go (for logs).
    pub description: String,
    concurrency: usize,
    interval: Duration,
    published_generation: AtomicU64,
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    /// The leader epoch in which each partition's manifest was last read here.
    refreshed: Mutex<HashMap<String, i32>>,
}

impl RemoteTier {
    /// Opens the configured object store and read cache; `None` when tiering is off.
    pub async fn open(cfg: &BrokerConfig) -> Result<Option<Arc<RemoteTier>>, BrokerError> {
        let url = match cfg.object_store.trim() {
            "off" | "none" => return Ok(None),
            "" => {
                std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
                    BrokerError::MetadataIo(format!("create {}: {e}", cfg.data_dir.display()))
                })?;
                let abs = std::fs::canonicalize(&cfg.data_dir).map_err(|e| {
                    BrokerError::MetadataIo(format!("resolve {}: {e}", cfg.data_dir.display()))
                })?;
                format!("file://{}", abs.join("remote").display())
            }
            url => url.to_string(),
        };
        let opened = open_object_store(&ObjectStoreConfig {
            url,
            endpoint: cfg.object_store_endpoint.clone(),
            region: cfg.object_store_region.clone(),
            path_style: cfg.object_store_path_style,
            allow_http: cfg.object_store_allow_http,
            credentials: None,
        })
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let cache_dir = cfg
            .remote_cache_dir
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("remote-cache"));
        let disk_bytes = disk_cache_bytes(
            &cache_dir,
            cfg.remote_cache_disk_bytes,
            cfg.remote_cache_disk_max_percent,
        )?;
        let cache = ChunkCache::new(
            ChunkCacheConfig {
                chunk_size: cfg.remote_cache_chunk_bytes,
                memory_bytes: usize::try_from(cfg.remote_cache_memory_bytes).unwrap_or(usize::MAX),
                disk_dir: (disk_bytes > 0).then_some(cache_dir),
                disk_bytes,
                read_ahead_chunks: cfg.remote_cache_read_ahead_chunks,
            },
            opened.store.clone(),
        )
        .await
        .map_err(|e| BrokerError::InvalidConfig(format!("remote read cache: {e}")))?;
        tracing::info!(store = %opened.description, disk_cache_bytes = disk_bytes, "tiered storage enabled");
        Ok(Some(Arc::new(RemoteTier {
            ctx: Arc::new(RemoteContext {
                store: opened.store,
                keys: ObjectKeys::new(&opened.prefix),
                cache: Arc::new(cache),
                throttle: Throttle::new(Some(cfg.remote_upload_bytes_per_sec)),
                part_bytes: cfg.remote_upload_part_bytes,
            }),
            store_stats: opened.stats,
            stats: OffloadStats::default(),
            description: opened.description,
            concurrency: cfg.remote_upload_concurrency,
            interval: Duration::from_millis(cfg.remote_task_interval_ms),
            published_generation: AtomicU64::new(0),
            backoff: Mutex::new(HashMap::new()),
            refreshed: Mutex::new(HashMap::new()),
        })))
    }

    /// The cluster metadata copy kept in the object store, if there is one: a cluster that starts
    /// with no metadata at all imports it (a broker or a whole cluster that lost its disks).
    pub async fn metadata_copy(&self) -> Result<Option<LegacyState>, BrokerError> {
        let key = self.ctx.keys.cluster_metadata();
        match get_bytes(&self.ctx.store, &key).await {
            Ok(bytes) => {
                let state = MetadataStore::decode_copy(&bytes)?;
                tracing::info!(topics = state.topics.len(), store = %self.description, "found a metadata copy in the object store");
                Ok(Some(state))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(BrokerError::MetadataIo(format!(
                "the cluster has no metadata and the object store copy cannot be read: {e}"
            ))),
        }
    }

    /// Start-up, before the broker opens its partitions: loads the manifest of every tiered
    /// partition this broker hosts and seeds the directories of those missing locally so they
    /// continue where the offloaded history ends. Returns the loaded remote tiers by (topic id,
    /// partition).
    pub async fn prepare(
        &self,
        cfg: &BrokerConfig,
        view: &ClusterView,
        broker_id: i32,
    ) -> Result<HashMap<(Uuid, i32), Arc<RemotePartition>>, BrokerError> {
        let data_dir = &cfg.data_dir;
        let layers = view.layers(cfg, broker_id);
        let mut wanted = Vec::new();
        for t in view.topics.values() {
            if !layers.topic_settings(&t.configs).remote_storage {
                continue;
            }
            for (i, state) in t.states.iter().enumerate() {
                if state.replicas.contains(&broker_id) {
                    wanted.push((t.name.clone(), t.id, i32::try_from(i).unwrap_or(i32::MAX)));
                }
            }
        }
        let results: Vec<Result<Option<LoadedRemote>, BrokerError>> =
            futures::stream::iter(wanted.into_iter().map(|(name, id, i)| async move {
                let dir = data_dir.join(format!("{name}-{i}"));
                let missing = !dir.join(tiering::LOG_START_OFFSET_FILE).exists();
                let deadline = Instant::now() + RESTORE_PATIENCE;
                let mut delay = Duration::from_millis(200);
                loop {
                    match RemotePartition::open(self.ctx.clone(), id, i, 0).await {
                        Ok(remote) => {
                            if missing && remote.restore_into(&dir).await.map_err(|e| {
                                BrokerError::Remote {
                                    partition: format!("{name}-{i}"),
                                    source: e,
                                }
                            })? {
                                tracing::info!(partition = %format!("{name}-{i}"), start = ?remote.end_offset(), "restored an empty partition from the object store");
                            }
                            return Ok(Some(((id, i), Arc::new(remote))));
                        }
                        Err(e) if !missing => {
                            tracing::warn!(partition = %format!("{name}-{i}"), error = %e, "cannot load the remote manifest; offloaded history is unavailable until the next upload");
                            return Ok(None);
                        }
                        Err(e) if Instant::now() >= deadline => {
                            return Err(BrokerError::Remote {
                                partition: format!("{name}-{i}"),
                                source: e,
                            })
                        }
                        Err(e) => {
                            tracing::warn!(partition = %format!("{name}-{i}"), error = %e, "object store unavailable; retrying to restore the partition");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        let mut out = HashMap::new();
        for r in results {
            if let Some((k, v)) = r? {
                out.insert(k, v);
            }
        }
        Ok(out)
    }

    /// A remote tier for a partition with nothing offloaded yet.
    pub fn new_partition(
        &self,
        topic_id: Uuid,
        index: i32,
        leader_epoch: i32,
    ) -> Arc<RemotePartition> {
        Arc::new(RemotePartition::new_empty(
            self.ctx.clone(),
            topic_id,
            index,
            leader_epoch,
        ))
    }

    /// The cumulative counters exported as metrics, in `metrics::REMOTE_TOTALS` order.
    pub fn totals(&self) -> [u64; 16] {
        let s = &self.store_stats;
        let o = &self.stats;
        let c = self.ctx.cache.stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            load(&s.puts),
            load(&s.put_bytes),
            load(&s.gets),
            load(&s.get_bytes),
            load(&s.deletes),
            load(&s.errors),
            load(&o.segments_uploaded),
            load(&o.bytes_uploaded),
            load(&o.upload_errors),
            load(&o.upload_ms_total),
            load(&o.seal_to_upload_ms_total),
            load(&o.segments_deleted),
            c.hits,
            c.misses,
            c.gets,
            c.get_latency_micros_total,
        ]
    }

    /// Runs the offload task until `cancel` fires.
    pub async fn run(
        self: Arc<Self>,
        replicas: Arc<ReplicaManager>,
        cluster: Arc<ClusterLink>,
        admin: Arc<TopicAdmin>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.pass(&replicas, &cluster, &admin).await;
        }
    }

    /// One pass over every partition, the pending topic deletions and the metadata copy.
    pub async fn pass(&self, replicas: &ReplicaManager, cluster: &ClusterLink, admin: &TopicAdmin) {
        let partitions: Vec<Arc<Partition>> = replicas
            .all()
            .into_iter()
            .filter(|p| p.settings().remote_storage || p.remote().is_some())
            .collect();
        for p in &partitions {
            if p.remote().is_none() {
                p.attach_remote(self.new_partition(p.topic_id, p.index, p.leader_epoch()));
            }
        }
        // Only a partition's leader uploads and runs total retention; a follower keeps its view
        // of the manifest up to the agreed offloaded end (so it serves the whole history when it
        // is read from, or leads); every replica trims its local copy of what all agreed is
        // offloaded.
        futures::stream::iter(partitions.into_iter().map(|p| async move {
            if p.is_leader() {
                self.offload_partition(p.clone()).await;
            } else if !self.backing_off(p.label()) {
                if let Err(e) = p.sync_remote_view().await {
                    self.failed(p.label(), "reading the remote manifest", &e);
                }
            }
            self.local_retention(&p).await;
        }))
        .buffer_unordered(self.concurrency)
        .collect::<Vec<()>>()
        .await;
        // Offloading may have freed local space: let produce in again without waiting.
        replicas.refresh_disk_usage();
        // Cluster-wide chores, done by one broker.
        if cluster.runs_cluster_chores() {
            self.delete_pending_topics(cluster, admin).await;
            self.publish_metadata(cluster).await;
        }
    }

    fn backing_off(&self, label: &str) -> bool {
        self.backoff
            .lock()
            .get(label)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn failed(&self, label: &str, what: &str, e: &dyn std::fmt::Display) {
        let mut backoff = self.backoff.lock();
        let delay = backoff
            .get(label)
            .map_or(self.interval, |(_, d)| (*d * 2).min(MAX_BACKOFF));
        backoff.insert(label.to_string(), (Instant::now() + delay, delay));
        tracing::warn!(partition = label, error = %e, retry_in = ?delay, "{what} failed");
    }

    async fn offload_partition(&self, p: Arc<Partition>) {
        let label = p.label().to_string();
        let Some(remote) = p.remote() else { return };
        if self.backing_off(&label) {
            return;
        }
        let epoch = p.leader_epoch();
        // A new leader reads the manifest its predecessors wrote before it writes its own.
        let refreshed = self.refreshed.lock().get(&label).copied();
        if refreshed != Some(epoch) {
            if let Err(e) = remote.refresh().await {
                return self.failed(&label, "loading the remote manifest", &e);
            }
            self.refreshed.lock().insert(label.clone(), epoch);
        }
        if let Err(e) = remote.ensure_loaded().await {
            return self.failed(&label, "loading the remote manifest", &e);
        }
        // 1. Upload sealed, durable segments in order.
        // With nothing offloaded yet, start from the first sealed segment, even if the log start
        // lies inside it; the manifest then records that log start with the first upload.
        // A topic that turned `remote.storage.enable` off keeps its offloaded history readable and
        // subject to total retention, but uploads nothing more (local retention applies as usual).
        let settings = p.settings();
        let uploading = settings.remote_storage;
        let from = remote.end_offset().unwrap_or(0);
        let log_start = p.log_start_offset();
        let segments = if uploading {
            match p.sealed_for_upload(from, UPLOADS_PER_PASS) {
                Ok(s) => s,
                Err(e) => return self.failed(&label, "listing sealed segments", &e),
            }
        } else {
            Vec::new()
        };
        if let (Some(end), Some(first)) = (remote.end_offset(), segments.first()) {
            if first.base_offset != end {
                return self.failed(
                    &label,
                    "offload",
                    &format!(
                        "the next local segment starts at {} but the remote log ends at {end}",
                        first.base_offset
                    ),
                );
            }
        }
        for segment in &segments {
            let started = now_ms();
            match remote.upload_above(segment, epoch, log_start).await {
                Ok(Some(up)) => {
                    self.stats.segments_uploaded.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_uploaded
                        .fetch_add(up.bytes, Ordering::Relaxed);
                    let done = now_ms();
                    self.stats.upload_ms_total.fetch_add(
                        u64::try_from(done - started).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    if let Some(sealed) = segment.sealed_at_ms {
                        self.stats.seal_to_upload_ms_total.fetch_add(
                            u64::try_from(done - sealed).unwrap_or(0),
                            Ordering::Relaxed,
                        );
                    }
                    tracing::debug!(partition = %label, base_offset = up.base_offset, next_offset = up.next_offset, bytes = up.bytes, "offloaded segment");
                }
                Ok(None) => {}
                Err(e) => {
                    self.stats.upload_errors.fetch_add(1, Ordering::Relaxed);
                    return self.failed(&label, "upload", &e);
                }
            }
        }
        self.backoff.lock().remove(&label);
        let Some(end) = remote.end_offset() else {
            return;
        };
        // 2. Every replica agrees on what is offloaded through the partition's log.
        if p.agreed_offloaded_end().is_none_or(|agreed| agreed < end) {
            if let Err(e) = p.record_offloaded(end).await {
                return self.failed(&label, "recording the offloaded end", &e);
            }
        }
        // 3. Total retention over both tiers.
        // Local bytes counted by total retention besides the remote ones: those not offloaded yet,
        // or all of them once uploads stopped.
        let local_only = if uploading {
            p.local_bytes_from(end)
        } else {
            p.local_size()
        };
        let now = now_ms();
        if let Err(e) = remote
            .apply_retention(
                now,
                settings.log.retention_ms,
                settings.log.retention_bytes,
                local_only,
                epoch,
            )
            .await
        {
            return self.failed(&label, "remote retention", &e);
        }
        // 4. Delete the objects of segments that left the log.
        match remote.collect_garbage(epoch).await {
            Ok(n) => {
                self.stats
                    .segments_deleted
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => self.failed(&label, "remote garbage collection", &e),
        }
    }

    /// Local retention of one replica: segments below the offloaded end every replica agreed on,
    /// past local retention, are deleted once the replica's Raft log no longer needs them (its
    /// snapshot boundary moves to the offloaded end, so a new replica copies only the local tail).
    async fn local_retention(&self, p: &Arc<Partition>) {
        let settings = p.settings();
        if !settings.remote_storage {
            return;
        }
        let Some(end) = p.agreed_offloaded_end() else {
            return;
        };
        p.request_purge(end);
        let label = p.label().to_string();
        let now = now_ms();
        let log_start = p.log_start_offset();
        let p2 = p.clone();
        match tokio::task::spawn_blocking(move || p2.apply_local_retention(now, end, log_start))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.failed(&label, "local retention", &e),
            Err(e) => self.failed(&label, "local retention task", &e),
        }
    }

    async fn delete_pending_topics(&self, cluster: &ClusterLink, admin: &TopicAdmin) {
        let pending = cluster.view().pending_remote_deletions.clone();
        for id in pending {
            let prefix = self.ctx.keys.topic_prefix(id);
            match delete_prefix(&self.ctx.store, &prefix).await {
                Ok(n) => {
                    tracing::info!(topic_id = %id, objects = n, "deleted the objects of a deleted topic");
                    if let Err(e) = admin.finish_remote_deletion(id).await {
                        tracing::warn!(topic_id = %id, error = %e, "cannot record a finished topic deletion");
                    }
                }
                Err(e) => {
                    tracing::warn!(topic_id = %id, error = %e, "cannot delete the objects of a deleted topic; will retry");
                }
            }
        }
    }

    async fn publish_metadata(&self, cluster: &ClusterLink) {
        let copy = crate::cluster::legacy_copy(&cluster.view(), cluster.broker_id());
        let bytes = match MetadataStore::encode(&copy) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode metadata for the object store");
                return;
            }
        };
        // Heartbeats move the metadata index without changing the copy: publish changed content only.
        let generation = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        if generation == self.published_generation.load(Ordering::Acquire) {
            return;
        }
        let key = self.ctx.keys.cluster_metadata();
        match self.ctx.store.put(&key, PutPayload::from(bytes)).await {
            Ok(_) => self
                .published_generation
                .store(generation, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %RemoteError::store(format!("put {key}"))(e), "cannot publish metadata to the object store; will retry")
            }
        }
    }
}

/// The disk cache size: the configured bytes, capped at a share of the filesystem.
fn disk_cache_bytes(dir: &Path, configured: u64, max_percent: u8) -> Result<u64, BrokerError> {
    if configured == 0 {
        return Ok(0);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| BrokerError::MetadataIo(format!("create {}: {e}", dir.display())))?;
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| BrokerError::MetadataIo(format!("statvfs {}: {e}", dir.display())))?;
    let total = (st.blocks() as u64).saturating_mul(st.fragment_size() as u64);
    let cap = total / 100 * u64::from(max_percent);
    Ok(configured.min(cap))
}
