//! The replica manager: owns every partition replica this broker hosts, keyed by (topic id,
//! partition). The reconciler (`cluster::reconcile`) feeds it explicit [`Transition`]s computed from
//! metadata deltas; it opens and removes replicas (each one a member of its partition's Raft
//! group, see `crate::replication`) and runs the retention loop. Leadership comes from the Raft
//! groups: subscribers (the group coordinator, the offload task) watch
//! [`ReplicaManager::subscribe_leadership`] and re-read [`ReplicaManager::led`] when it moves.
//!
//! Directory layout: `<data-dir>/<topic>-<partition>/` holds one partition's segments plus
//! `partition.json` (topic name, topic id, partition). Removing a replica (its topic was deleted,
//! or it moved to other brokers) first drops it from the map (the in-memory commit point: no
//! request finds it any more), then renames the directory to `<name>.<uuid>-delete` and removes it
//! in the background. At start, `*-delete` directories and partition directories whose topic id is
//! not in the metadata are removed, so a crash at any point of a removal is finished by the next
//! start.

pub mod partition;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tiering::remote::{RemoteContext, RemotePartition};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
use crate::replication::log::ReplicaLog;
use crate::replication::types::GroupId;
use crate::replication::Replication;
use crate::topic_config::TopicSettings;

pub use partition::{now_ms, Partition, ProduceResult};

const PARTITION_META: &str = "partition.json";

/// Identifies a partition across renames and re-creations of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
}

/// A change the reconciler asks of the replica manager.
#[derive(Debug, Clone)]
pub enum Transition {
    /// Host a replica of this partition (open or create its log and join its Raft group).
    Open {
        /// The partition.
        key: PartitionKey,
        /// Its topic's name (the directory is named after it).
        topic: String,
        /// Topic settings in effect.
        settings: TopicSettings,
        /// The replica set (the first is the preferred leader).
        replicas: Vec<i32>,
        /// This broker is being added by a reassignment: its replica waits for the group's
        /// leader to add it, and never initializes a group of its own.
        joining: bool,
    },
    /// The partition's replica set changed (a reassignment).
    Replicas {
        /// The partition.
        key: PartitionKey,
        /// The new replica set.
        replicas: Vec<i32>,
    },
    /// The topic's settings changed.
    Reconfigure {
        /// The partition.
        key: PartitionKey,
        /// New settings.
        settings: TopicSettings,
    },
    /// Stop hosting the replica and delete its local data (its topic was deleted, or it moved to
    /// other brokers).
    Remove {
        /// The partition.
        key: PartitionKey,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct PartitionMeta {
    version: u32,
    topic: String,
    topic_id: Uuid,
    partition: i32,
}

#[derive(Default)]
struct Hosted {
    by_key: HashMap<PartitionKey, Arc<Partition>>,
    by_name: HashMap<(String, i32), PartitionKey>,
}

/// The partition replicas of this broker.
pub struct ReplicaManager {
    data_dir: PathBuf,
    hosted: RwLock<Hosted>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    remote: Option<Arc<RemoteContext>>,
    /// Remote tiers loaded at start, attached when their partition opens.
    loaded_remote: Mutex<HashMap<(Uuid, i32), Arc<RemotePartition>>>,
    disk: Arc<DiskGuard>,
    replication: Arc<Replication>,
}

impl std::fmt::Debug for ReplicaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaManager")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl ReplicaManager {
    /// A manager for `data_dir` whose replicas join their groups through `replication`, whose
    /// tiered partitions get a remote tier in `remote` (with the remote tiers already loaded at
    /// start), and that refuses produce past the `disk` limits.
    pub fn new(
        data_dir: &Path,
        replication: Arc<Replication>,
        remote: Option<Arc<RemoteContext>>,
        loaded_remote: HashMap<(Uuid, i32), Arc<RemotePartition>>,
        disk: Arc<DiskGuard>,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            hosted: RwLock::new(Hosted::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            remote,
            loaded_remote: Mutex::new(loaded_remote),
            disk,
            replication,
        }
    }

    /// The replication runtime.
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    /// Whether tiered storage is on.
    pub fn tiered(&self) -> bool {
        self.remote.is_some()
    }

    /// The shared remote tier context, if tiered storage is on.
    pub fn remote_context(&self) -> Option<&Arc<RemoteContext>> {
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

    /// Removes leftovers of interrupted removals and of topics no longer known (`known` maps topic
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

    /// Applies the reconciler's transitions in order. Blocking (opens logs): run it on the
    /// blocking pool. Every transition is attempted; the first error is returned.
    pub fn apply(&self, transitions: Vec<Transition>) -> Result<(), BrokerError> {
        let mut first_error = None;
        let mut leadership_moved = false;
        for t in transitions {
            let result = match t {
                Transition::Open {
                    key,
                    topic,
                    settings,
                    replicas,
                    joining,
                } => self
                    .open(key, &topic, settings, &replicas, joining)
                    .map(|_| ()),
                Transition::Replicas { key, replicas } => {
                    if let Some(p) = self.get(key) {
                        p.group().set_replicas(to_node_ids(&replicas));
                    }
                    Ok(())
                }
                Transition::Reconfigure { key, settings } => {
                    if let Some(p) = self.get(key) {
                        p.set_settings(settings);
                    }
                    Ok(())
                }
                Transition::Remove { key } => {
                    leadership_moved |= self.remove(key);
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot apply a metadata change to a replica");
                first_error.get_or_insert(e);
            }
        }
        if leadership_moved {
            self.replication.leadership_changed();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Opens (creating if needed) a partition's log and joins its Raft group. Blocking: run it on
    /// the blocking pool (it waits for the group to start).
    fn open(
        &self,
        key: PartitionKey,
        topic: &str,
        settings: TopicSettings,
        replicas: &[i32],
        joining: bool,
    ) -> Result<Arc<Partition>, BrokerError> {
        if let Some(p) = self.get(key) {
            return Ok(p);
        }
        let index = key.partition;
        let dir = self.partition_dir(topic, index);
        let label = format!("{topic}-{index}");
        let log = Arc::new(ReplicaLog::open(
            label.clone(),
            &dir,
            settings.log.clone(),
            !settings.fsync_before_ack(),
            settings
                .flush_ms
                .map_or(0, |ms| u64::try_from(ms.max(1)).unwrap_or(u64::MAX)),
        )?);
        write_partition_meta(
            &dir,
            &PartitionMeta {
                version: 1,
                topic: topic.to_string(),
                topic_id: key.topic_id,
                partition: index,
            },
        )?;
        let tiered = settings.remote_storage;
        let group_id = GroupId {
            topic_id: key.topic_id,
            partition: index,
        };
        let group = tokio::runtime::Handle::current().block_on(self.replication.open_group(
            group_id,
            log,
            to_node_ids(replicas),
            !joining,
        ))?;
        let partition = Partition::new(
            topic.to_string(),
            key.topic_id,
            index,
            group,
            self.replication.clone(),
            settings,
            self.disk.clone(),
        );
        if let (true, Some(ctx)) = (tiered, &self.remote) {
            let remote = self
                .loaded_remote
                .lock()
                .remove(&(key.topic_id, index))
                .unwrap_or_else(|| {
                    Arc::new(RemotePartition::new_empty(
                        ctx.clone(),
                        key.topic_id,
                        index,
                        partition.leader_epoch(),
                    ))
                });
            partition.attach_remote(remote);
        }
        let mut hosted = self.hosted.write();
        hosted.by_name.insert((topic.to_string(), index), key);
        hosted.by_key.insert(key, partition.clone());
        Ok(partition)
    }

    /// Stops serving a replica and removes its data in the background. Returns whether it led.
    fn remove(&self, key: PartitionKey) -> bool {
        let removed = {
            let mut hosted = self.hosted.write();
            let p = hosted.by_key.remove(&key);
            if let Some(p) = &p {
                hosted.by_name.remove(&(p.topic.clone(), p.index));
            }
            p
        };
        let Some(p) = removed else {
            return false;
        };
        let led = p.is_leader();
        let group_id = GroupId {
            topic_id: key.topic_id,
            partition: key.partition,
        };
        tokio::runtime::Handle::current().block_on(self.replication.close_group(group_id));
        let dir = self.partition_dir(&p.topic, p.index);
        let doomed = self.data_dir.join(format!(
            "{}-{}.{}-delete",
            p.topic,
            p.index,
            Uuid::new_v4().simple()
        ));
        tracing::info!(partition = %p.label(), "removing local replica");
        if let Err(e) = std::fs::rename(&dir, &doomed) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot rename partition for deletion");
            return led;
        }
        self.tasks.spawn_blocking(move || {
            if let Err(e) = std::fs::remove_dir_all(&doomed) {
                tracing::warn!(dir = %doomed.display(), error = %e, "cannot remove deleted partition");
            }
        });
        led
    }

    /// A hosted replica.
    pub fn get(&self, key: PartitionKey) -> Option<Arc<Partition>> {
        self.hosted.read().by_key.get(&key).cloned()
    }

    /// A hosted replica by topic name.
    pub fn get_by_name(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let hosted = self.hosted.read();
        let key = hosted.by_name.get(&(topic.to_string(), index))?;
        hosted.by_key.get(key).cloned()
    }

    /// Every hosted replica.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.hosted.read().by_key.values().cloned().collect()
    }

    /// The hosted replicas of `topic` this broker leads, as (partition, leader epoch).
    pub fn led(&self, topic: &str) -> Vec<(i32, i32)> {
        let mut out: Vec<(i32, i32)> = self
            .hosted
            .read()
            .by_key
            .values()
            .filter(|p| p.topic == topic && p.is_raft_leader())
            .map(|p| (p.index, p.leader_epoch()))
            .collect();
        out.sort_unstable();
        out
    }

    /// A receiver that changes whenever this broker gains or loses the leadership of a replica.
    pub fn subscribe_leadership(&self) -> watch::Receiver<u64> {
        self.replication.subscribe_leadership()
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
        self.spawn_periodic(interval, |replicas| async move {
            if let Err(e) = tokio::task::spawn_blocking(move || replicas.refresh_disk_usage()).await
            {
                tracing::warn!(error = %e, "disk usage refresh failed");
            }
        });
    }

    /// Runs retention on every partition every `interval` until shutdown.
    pub fn spawn_retention(self: &Arc<Self>, interval: Duration) {
        self.spawn_periodic(interval, |replicas| async move {
            let now = now_ms();
            for p in replicas.all() {
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

    /// Stops the Raft groups and the flushers (each fsyncs one last time) and closes every log.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        // Tasks stop at their next cancellation point; one stuck in a metadata write to a quorum
        // that is gone (the whole cluster stopping at once) must not hold the shutdown.
        if tokio::time::timeout(TASK_STOP_PATIENCE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "background tasks still running at shutdown; stopping without them"
            );
        }
        self.replication.shutdown().await;
        for p in self.all() {
            if let Err(e) = p.close() {
                tracing::error!(partition = %p.label(), error = %e, "close failed");
            }
        }
    }
}

/// How long shutdown waits for background tasks to notice the cancellation.
const TASK_STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Broker ids as Raft node ids (negative ids are not valid brokers and are dropped).
fn to_node_ids(replicas: &[i32]) -> Vec<u64> {
    replicas
        .iter()
        .filter_map(|r| u64::try_from(*r).ok())
        .collect()
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
