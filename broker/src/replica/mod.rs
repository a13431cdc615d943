//! Owns every partition hosted by this broker: opening logs at start, creating and deleting them, the
//! per-partition flusher tasks, and the retention loop.
//!
//! Directory layout: `<data-dir>/<topic>-<partition>/` holds one partition's segments plus
//! `partition.json` (topic name, topic id, partition). Deleting a topic first removes it from the metadata
//! store (the commit point), then renames each partition directory to `<name>.<uuid>-delete` and removes it
//! in the background. At start, `*-delete` directories and partition directories whose topic id is not in
//! the metadata store are removed, so a crash at any point of a deletion is finished by the next start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tiering::remote::RemotePartition;
use tiering::SegmentLog;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
use crate::offload::RemoteTier;
use crate::partition::{now_ms, Partition};
use crate::topic_config::TopicSettings;

const PARTITION_META: &str = "partition.json";

#[derive(Debug, Serialize, Deserialize)]
struct PartitionMeta {
    version: u32,
    topic: String,
    topic_id: Uuid,
    partition: i32,
}

/// The partitions of this broker.
pub struct LogManager {
    data_dir: PathBuf,
    partitions: RwLock<HashMap<(String, i32), Arc<Partition>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    remote: Option<Arc<RemoteTier>>,
    /// Remote tiers loaded at start, attached when their partition opens.
    loaded_remote: Mutex<HashMap<(Uuid, i32), Arc<RemotePartition>>>,
    disk: Arc<DiskGuard>,
}

impl std::fmt::Debug for LogManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogManager")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl LogManager {
    /// A manager for `data_dir` without tiered storage or disk limits.
    pub fn new(data_dir: &Path) -> Self {
        Self::with_tiers(
            data_dir,
            None,
            HashMap::new(),
            Arc::new(DiskGuard::unlimited()),
        )
    }

    /// A manager for `data_dir` that offloads tiered partitions to `remote` (with the remote tiers
    /// already loaded at start) and refuses produce past the `disk` limits.
    pub fn with_tiers(
        data_dir: &Path,
        remote: Option<Arc<RemoteTier>>,
        loaded_remote: HashMap<(Uuid, i32), Arc<RemotePartition>>,
        disk: Arc<DiskGuard>,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            partitions: RwLock::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            remote,
            loaded_remote: Mutex::new(loaded_remote),
            disk,
        }
    }

    /// The remote tier, if tiered storage is on.
    pub fn remote_tier(&self) -> Option<&Arc<RemoteTier>> {
        self.remote.as_ref()
    }

    /// Re-measures local partition data for the disk limit.
    pub fn refresh_disk_usage(&self) {
        let used: u64 = self.all().iter().map(|p| p.local_size()).sum();
        self.disk.refresh(used);
    }

    /// Runs `task` until shutdown (it must watch the token it is given).
    pub fn spawn_task<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.cancel.child_token()));
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Removes leftovers of interrupted deletions and of topics no longer known (`known` maps topic
    /// name to id).
    pub fn clean_orphans(&self, known: &HashMap<String, Uuid>) -> Result<(), BrokerError> {
        let entries = std::fs::read_dir(&self.data_dir).map_err(|e| {
            BrokerError::MetadataIo(format!("list {}: {e}", self.data_dir.display()))
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let orphan = if name.ends_with("-delete") {
                true
            } else {
                match read_partition_meta(&path) {
                    Some(meta) => known.get(&meta.topic) != Some(&meta.topic_id),
                    None => false,
                }
            };
            if orphan {
                tracing::info!(dir = %path.display(), "removing data of a deleted topic");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove directory");
                }
            }
        }
        Ok(())
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    /// Opens (creating if needed) a partition's log and starts its flusher.
    pub fn open_partition(
        &self,
        topic: &str,
        topic_id: Uuid,
        index: i32,
        settings: TopicSettings,
        leader_epoch: i32,
    ) -> Result<Arc<Partition>, BrokerError> {
        if let Some(p) = self.get(topic, index) {
            return Ok(p);
        }
        let dir = self.partition_dir(topic, index);
        let label = format!("{topic}-{index}");
        let log = SegmentLog::open(&dir, settings.log.clone())
            .map_err(|e| BrokerError::log(label.clone(), e))?;
        write_partition_meta(
            &dir,
            &PartitionMeta {
                version: 1,
                topic: topic.to_string(),
                topic_id,
                partition: index,
            },
        )?;
        let tiered = settings.remote_storage;
        let partition = Partition::new(
            topic.to_string(),
            topic_id,
            index,
            Box::new(log),
            settings,
            self.disk.clone(),
            leader_epoch,
        );
        if let (true, Some(tier)) = (tiered, &self.remote) {
            let remote = self
                .loaded_remote
                .lock()
                .remove(&(topic_id, index))
                .unwrap_or_else(|| tier.new_partition(topic_id, index, partition.leader_epoch()));
            partition.attach_remote(remote);
        }
        self.tasks
            .spawn(partition.clone().run_flusher(self.cancel.child_token()));
        self.partitions
            .write()
            .insert((topic.to_string(), index), partition.clone());
        Ok(partition)
    }

    /// A hosted partition.
    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Every hosted partition of `topic`.
    pub fn of_topic(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .values()
            .filter(|p| p.topic == topic)
            .cloned()
            .collect()
    }

    /// Stops serving `topic` and removes its data in the background.
    pub fn delete_topic(&self, topic: &str) {
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write();
            let keys: Vec<_> = map.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for p in removed {
            let dir = self.partition_dir(&p.topic, p.index);
            let doomed = self.data_dir.join(format!(
                "{}-{}.{}-delete",
                p.topic,
                p.index,
                Uuid::new_v4().simple()
            ));
            if let Err(e) = std::fs::rename(&dir, &doomed) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot rename partition for deletion");
                continue;
            }
            self.tasks.spawn_blocking(move || {
                if let Err(e) = std::fs::remove_dir_all(&doomed) {
                    tracing::warn!(dir = %doomed.display(), error = %e, "cannot remove deleted partition");
                }
            });
        }
    }

    /// Runs `pass` every `interval` until shutdown.
    fn spawn_periodic<F, Fut>(self: &Arc<Self>, interval: Duration, mut pass: F)
    where
        F: FnMut(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let this = self.clone();
        let cancel = self.cancel.child_token();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                pass(this.clone()).await;
            }
        });
    }

    /// Re-measures local disk use for the disk limit every `interval` until shutdown.
    pub fn spawn_disk_refresh(self: &Arc<Self>, interval: Duration) {
        self.spawn_periodic(interval, |logs| async move {
            if let Err(e) = tokio::task::spawn_blocking(move || logs.refresh_disk_usage()).await {
                tracing::warn!(error = %e, "disk usage refresh failed");
            }
        });
    }

    /// Runs retention on every partition every `interval` until shutdown.
    pub fn spawn_retention(self: &Arc<Self>, interval: Duration) {
        self.spawn_periodic(interval, |logs| async move {
            let now = now_ms();
            for p in logs.all() {
                let p2 = p.clone();
                match tokio::task::spawn_blocking(move || p2.apply_retention(now)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(partition = %p.label(), error = %e, "retention failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "retention task failed"),
                }
            }
        });
    }

    /// Stops flushers (each fsyncs one last time) and closes every log.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        for p in self.all() {
            if let Err(e) = p.close() {
                tracing::error!(partition = %p.label(), error = %e, "close failed");
            }
        }
    }
}

fn read_partition_meta(dir: &Path) -> Option<PartitionMeta> {
    let bytes = std::fs::read(dir.join(PARTITION_META)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_partition_meta(dir: &Path, meta: &PartitionMeta) -> Result<(), BrokerError> {
    let path = dir.join(PARTITION_META);
    if read_partition_meta(dir).is_some_and(|m| m.topic_id == meta.topic_id) {
        return Ok(());
    }
    let bytes = serde_json::to_vec(meta)
        .map_err(|e| BrokerError::MetadataIo(format!("encode {}: {e}", path.display())))?;
    let tmp = dir.join(format!("{PARTITION_META}.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| BrokerError::MetadataIo(format!("write {}: {e}", path.display())))
}
