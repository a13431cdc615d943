//! The broker's shared state: configuration, the metadata store, the hosted partitions, metrics, and the
//! topic-level operations that must change metadata and logs together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use controller::state::{Command, Outcome, PartitionAssignment};
use parking_lot::RwLock;
use tiering::remote::RemotePartition;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cluster::{ClusterLink, ClusterView, TopicView};
use crate::config::RuntimeConfig;
use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
use crate::group::consumer::ConsumerConfig;
use crate::group::{CoordinatorConfig, GroupCoordinator, SystemClock};
use crate::log_manager::LogManager;
use crate::metadata_store::{MetadataStore, PRODUCER_ID_BLOCK};
use crate::metrics::Metrics;
use crate::offload::RemoteTier;
use crate::partition::Partition;
use crate::topic_config::{validate_topic_overrides, BrokerLayers};

/// Topics the broker writes itself; clients may read them but never produce to, create or delete them.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Whether `name` is a broker-internal topic.
pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Longest legal topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Upper bound on partitions per topic, so a request cannot make us create millions of directories.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Everything request handlers share.
pub struct Broker {
    /// Validated configuration.
    pub config: RuntimeConfig,
    /// Hosted partitions.
    pub logs: Arc<LogManager>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The group coordinator (consumer groups and committed offsets).
    pub groups: Arc<GroupCoordinator>,
    /// The metadata quorum: writes, and the metadata view handlers read.
    pub cluster: Arc<ClusterLink>,
    pub(crate) layers: RwLock<BrokerLayers>,
    producer_ids: tokio::sync::Mutex<ProducerIdRange>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.node_id())
            .finish()
    }
}

#[derive(Debug, Default)]
struct ProducerIdRange {
    next: i64,
    end: i64,
}

/// Result of creating one topic.
#[derive(Debug, Clone)]
pub struct CreatedTopic {
    /// Topic id.
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
}

impl Broker {
    /// Starts a broker without tiered storage: its embedded controller, registration, and every
    /// partition it hosts (tests; the binary goes through `Server::start`).
    pub async fn open(config: RuntimeConfig) -> Result<Arc<Self>, BrokerError> {
        let cluster = ClusterLink::start(&config).await?;
        Self::join(config, cluster, None, &CancellationToken::new()).await
    }

    /// Registers with the metadata quorum, initializes the cluster if it is new (importing a
    /// single-node `metadata.json` or the object store's metadata copy), prepares the remote tier
    /// of the partitions this broker hosts, opens them and starts the background tasks.
    pub async fn join(
        config: RuntimeConfig,
        cluster: Arc<ClusterLink>,
        remote: Option<Arc<RemoteTier>>,
        cancel: &CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let index = cluster.register(cancel).await?;
        cluster.wait_applied(index).await?;
        let data_dir = config.broker.data_dir.clone();
        if cluster.read_state(|st| st.cluster_id.is_none()) {
            let legacy = if MetadataStore::exists(&data_dir) {
                Some(MetadataStore::open(&data_dir, None)?.state().clone())
            } else if let Some(tier) = &remote {
                tier.metadata_copy().await?
            } else {
                None
            };
            let import = legacy
                .as_ref()
                .map(|l| crate::cluster::import_from_legacy(l, cluster.broker_id()));
            let cluster_id = legacy
                .as_ref()
                .map(|l| l.cluster_id.clone())
                .or_else(|| config.broker.cluster_id.clone())
                .unwrap_or_else(crate::metadata_store::new_cluster_id);
            let (id, newly, index) = cluster.init_cluster(cluster_id, import).await?;
            cluster.wait_applied(index).await?;
            if newly {
                tracing::info!(cluster_id = %id, imported = legacy.is_some(), "initialized the cluster");
                if MetadataStore::exists(&data_dir) {
                    MetadataStore::retire(&data_dir)?;
                }
            } else if legacy.is_some() {
                tracing::warn!(cluster_id = %id, "another broker initialized the cluster first; the metadata found here was not imported");
            }
        }
        let view = cluster.read_state(|st| ClusterView::from_state(st, index));
        let loaded = match &remote {
            Some(tier) => {
                tier.prepare(&config.broker, &view, cluster.broker_id())
                    .await?
            }
            None => HashMap::new(),
        };
        let config2 = config;
        let cluster2 = cluster.clone();
        tokio::task::spawn_blocking(move || Self::open_logs(config2, cluster2, remote, loaded))
            .await
            .map_err(|e| BrokerError::MetadataIo(format!("storage startup task failed: {e}")))?
    }

    fn open_logs(
        config: RuntimeConfig,
        cluster: Arc<ClusterLink>,
        remote: Option<Arc<RemoteTier>>,
        loaded_remote: HashMap<(Uuid, i32), Arc<RemotePartition>>,
    ) -> Result<Arc<Self>, BrokerError> {
        let data_dir = config.broker.data_dir.clone();
        let index = cluster.applied_index();
        let view = cluster.read_state(|st| ClusterView::from_state(st, index));
        let layers = view.layers(&config.broker, config.broker.node_id);
        let disk = Arc::new(DiskGuard::new(
            &data_dir,
            config.broker.local_disk_limit_bytes,
            config.broker.local_disk_min_free_bytes,
        ));
        let logs = Arc::new(LogManager::with_tiers(
            &data_dir,
            remote.clone(),
            loaded_remote,
            disk,
        ));
        let known: HashMap<String, Uuid> = view
            .topics
            .values()
            .map(|t| (t.name.clone(), t.id))
            .collect();
        logs.clean_orphans(&known)?;
        let groups = Arc::new(GroupCoordinator::new(
            CoordinatorConfig {
                offsets_topic_num_partitions: config.broker.offsets_topic_num_partitions,
                initial_rebalance_delay_ms: i64::try_from(
                    config.broker.group_initial_rebalance_delay_ms,
                )
                .unwrap_or(i64::MAX),
                offsets_retention_ms: config
                    .broker
                    .offsets_retention_minutes
                    .saturating_mul(60_000),
                consumer: ConsumerConfig {
                    heartbeat_interval_ms: config.broker.group_consumer_heartbeat_interval_ms,
                    session_timeout_ms: config.broker.group_consumer_session_timeout_ms,
                },
            },
            Arc::new(SystemClock),
        ));
        let broker = Arc::new(Self {
            metrics: Metrics::new(),
            groups,
            logs,
            cluster,
            layers: RwLock::new(layers),
            producer_ids: tokio::sync::Mutex::new(ProducerIdRange::default()),
            config,
        });
        crate::cluster::reconcile(&broker, None, &view)?;
        broker.cluster.publish(view);
        broker.groups.load(&broker)?;
        {
            let b = broker.clone();
            broker
                .logs
                .spawn_task(move |cancel| crate::cluster::run_reconciler(b, cancel));
            let link = broker.cluster.clone();
            broker
                .logs
                .spawn_task(move |cancel| link.run_heartbeats(cancel));
        }
        broker.logs.spawn_retention(Duration::from_millis(
            broker.config.broker.log_retention_check_interval_ms,
        ));
        broker.logs.refresh_disk_usage();
        broker.logs.spawn_disk_refresh(Duration::from_secs(1));
        if let Some(tier) = remote {
            let b = broker.clone();
            broker.logs.spawn_task(move |cancel| tier.run(b, cancel));
        }
        Ok(broker)
    }

    /// This broker's node id.
    pub fn node_id(&self) -> i32 {
        self.config.broker.node_id
    }

    /// The current metadata view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.cluster.view()
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.view().cluster_id.clone()
    }

    /// The controller id clients are told (Metadata, DescribeCluster): the active controller when it
    /// is a live broker (combined mode), else the lowest-id live broker, as KRaft brokers do.
    pub fn reported_controller_id(&self) -> i32 {
        let view = self.view();
        self.cluster
            .controller_id()
            .filter(|id| view.is_live(*id))
            .or_else(|| view.live_brokers().next().map(|b| b.id))
            .unwrap_or(-1)
    }

    /// Whether this broker runs the cluster-wide chores (the object store metadata copy, deleting
    /// deleted topics' objects): the broker reported as controller, so exactly one live broker.
    pub fn runs_cluster_chores(&self) -> bool {
        self.reported_controller_id() == self.node_id()
    }

    /// All topics.
    pub fn topics(&self) -> Vec<TopicView> {
        self.view().topics.values().cloned().collect()
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<TopicView> {
        self.view().topics.get(name).cloned()
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicView> {
        self.view().topic_by_id(id).cloned()
    }

    /// The broker's configuration layers (for DescribeConfigs).
    pub fn layers(&self) -> BrokerLayers {
        self.layers.read().clone()
    }

    /// A partition hosted here, led or not.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.logs.get(topic, index)
    }

    /// A partition this broker leads: UNKNOWN_TOPIC_OR_PARTITION if the cluster has no such
    /// partition, NOT_LEADER_OR_FOLLOWER if another broker (or none) leads it.
    pub fn leader_partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let view = self.view();
        let label = || format!("{topic}-{index}");
        let p = view
            .partition(topic, index)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(label()))?;
        if p.leader != self.node_id() {
            return Err(BrokerError::NotLeader(label()));
        }
        self.logs
            .get(topic, index)
            .ok_or_else(|| BrokerError::NotLeader(label()))
    }

    /// Checks a topic name the way Kafka does.
    pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
        if name.is_empty() || name == "." || name == ".." {
            return Err(BrokerError::InvalidTopic(format!(
                "topic name {name:?} is illegal"
            )));
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(BrokerError::InvalidTopic(format!(
                "topic name is longer than {MAX_TOPIC_NAME_LEN} characters"
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(BrokerError::InvalidTopic(format!(
                "topic name {name:?} contains {c:?}; only ASCII alphanumerics, '.', '_' and '-' are legal"
            )));
        }
        Ok(())
    }

    /// Replica sets for `count` new partitions of replication factor `rf`, balanced over the
    /// unfenced brokers, or checked explicit `assignments`.
    fn assignments(
        &self,
        count: i32,
        rf: i16,
        explicit: Option<Vec<Vec<i32>>>,
    ) -> Result<Vec<PartitionAssignment>, BrokerError> {
        if rf != 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {rf}: partition replication is not implemented yet, use 1"
            )));
        }
        if let Some(sets) = explicit {
            let view = self.view();
            for (i, set) in sets.iter().enumerate() {
                if set.len() != 1 {
                    return Err(BrokerError::InvalidReplicationFactor(format!(
                        "assignment of partition {i} has {} replicas: partition replication is not implemented yet, use 1",
                        set.len()
                    )));
                }
                if let Some(b) = set.iter().find(|b| !view.brokers.contains_key(b)) {
                    return Err(BrokerError::InvalidReplicaAssignment(format!(
                        "assignment of partition {i} names broker {b}, which is not registered"
                    )));
                }
            }
            return Ok(sets
                .into_iter()
                .map(|replicas| PartitionAssignment { replicas })
                .collect());
        }
        let n = u32::try_from(count).map_err(|_| {
            BrokerError::InvalidPartitions(format!("partition count {count} is negative"))
        })?;
        let sets = self
            .cluster
            .read_state(|st| controller::place(st, n, 1, &st.all_replica_sets()))
            .map_err(|e| BrokerError::InvalidReplicationFactor(e.to_string()))?;
        Ok(sets
            .into_iter()
            .map(|replicas| PartitionAssignment { replicas })
            .collect())
    }

    /// Creates a topic (or only validates the request with `validate_only`). `assignments` gives
    /// explicit replica sets (one per partition) instead of a count.
    pub async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<CreatedTopic, BrokerError> {
        self.create_topic_with(
            name,
            num_partitions,
            replication_factor,
            None,
            configs,
            validate_only,
        )
        .await
    }

    /// [`Broker::create_topic`] with optional explicit replica sets.
    pub async fn create_topic_with(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        explicit: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<CreatedTopic, BrokerError> {
        Self::validate_topic_name(name)?;
        let partitions = match &explicit {
            Some(sets) => i32::try_from(sets.len()).unwrap_or(i32::MAX),
            None if num_partitions == -1 => self.config.broker.num_partitions,
            None => num_partitions,
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(format!(
                "partition count {partitions} is outside 1..={MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        let rf = if replication_factor == -1 {
            1
        } else {
            replication_factor
        };
        validate_topic_overrides(&configs)?;
        let view = self.view();
        if view.topics.contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        let collides = view
            .topics
            .keys()
            .any(|t| t.replace('.', "_") == name.replace('.', "_"));
        if collides {
            return Err(BrokerError::InvalidTopic(format!(
                "topic {name:?} collides with an existing topic ('.' and '_' collide)"
            )));
        }
        let assignments = self.assignments(partitions, rf, explicit)?;
        let id = Uuid::new_v4();
        if validate_only {
            return Ok(CreatedTopic {
                id,
                partitions,
                replication_factor: rf,
            });
        }
        self.cluster
            .write(Command::CreateTopic {
                name: name.to_string(),
                topic_id: id,
                partitions: assignments,
                configs,
            })
            .await?;
        tracing::info!(topic = name, partitions, %id, "created topic");
        Ok(CreatedTopic {
            id,
            partitions,
            replication_factor: rf,
        })
    }

    /// Deletes a topic; every broker hosting it removes its data, and the objects in the object
    /// store are removed by the active controller's broker.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let id = self
            .topic(name)
            .map(|t| t.id)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let tiered = self.logs.remote_tier().is_some();
        self.cluster
            .write(Command::DeleteTopic {
                topic_id: id,
                remote_cleanup: tiered,
            })
            .await?;
        tracing::info!(topic = name, %id, "deleted topic");
        Ok(id)
    }

    /// Grows a topic to `count` partitions (explicit replica sets for the new ones optional).
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        explicit: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        if count <= topic.partitions {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic {name} has {} partitions; the new count {count} must be larger",
                topic.partitions
            )));
        }
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(BrokerError::InvalidPartitions(format!(
                "partition count {count} is above {MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        if let Some(sets) = &explicit {
            if i32::try_from(sets.len()).ok() != Some(count - topic.partitions) {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "{} assignments for {} new partitions",
                    sets.len(),
                    count - topic.partitions
                )));
            }
        }
        let assignments = self.assignments(count - topic.partitions, 1, explicit)?;
        if validate_only {
            return Ok(());
        }
        self.cluster
            .write(Command::CreatePartitions {
                topic_id: topic.id,
                assignments,
            })
            .await?;
        Ok(())
    }

    /// Replaces (`incremental == false`) or edits a topic's config overrides.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let mut configs = topic.configs.clone();
        change(&mut configs)?;
        validate_topic_overrides(&configs)?;
        if validate_only {
            return Ok(());
        }
        let (set, delete) = config_diff(&topic.configs, &configs);
        if set.is_empty() && delete.is_empty() {
            return Ok(());
        }
        self.cluster
            .write(Command::AlterTopicConfigs {
                topic_id: topic.id,
                set,
                delete,
            })
            .await?;
        Ok(())
    }

    /// Edits dynamic broker configs (`per_broker` = resource name is this node id, else cluster default).
    pub async fn alter_broker_configs(
        &self,
        per_broker: bool,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let view = self.view();
        let current = if per_broker {
            view.broker_configs_of(self.node_id())
        } else {
            view.cluster_configs.clone()
        };
        let mut configs = current.clone();
        change(&mut configs)?;
        for (k, v) in &configs {
            BrokerLayers::validate_broker_value(k, v)?;
        }
        if validate_only {
            return Ok(());
        }
        let (set, delete) = config_diff(&current, &configs);
        if set.is_empty() && delete.is_empty() {
            return Ok(());
        }
        self.cluster
            .write(Command::AlterBrokerConfigs {
                broker_id: per_broker.then(|| self.node_id()),
                set,
                delete,
            })
            .await?;
        Ok(())
    }

    /// Hands out a producer id from a block the controller allocated to this broker, so ids are
    /// unique across the cluster and never reused after a restart.
    pub async fn next_producer_id(&self) -> Result<i64, BrokerError> {
        let mut range = self.producer_ids.lock().await;
        if range.next >= range.end {
            let outcome = self
                .cluster
                .write(Command::AllocateProducerIds {
                    broker_id: self.node_id(),
                    broker_epoch: self.cluster.broker_epoch(),
                    count: u32::try_from(PRODUCER_ID_BLOCK).unwrap_or(1000),
                })
                .await?;
            let Outcome::ProducerIds(block) = outcome else {
                return Err(BrokerError::ControllerUnavailable(format!(
                    "unexpected producer id outcome {outcome:?}"
                )));
            };
            range.next = block.start;
            range.end = block.start + i64::from(block.len);
        }
        let id = range.next;
        range.next += 1;
        Ok(id)
    }

    /// Deleted topics whose objects are still to be removed from the object store.
    pub fn pending_remote_deletions(&self) -> Vec<Uuid> {
        self.view()
            .pending_remote_deletions
            .iter()
            .copied()
            .collect()
    }

    /// Records that a deleted topic's objects are gone.
    pub async fn finish_remote_deletion(&self, id: Uuid) -> Result<(), BrokerError> {
        self.cluster
            .write(Command::FinishTopicDeletion { topic_id: id })
            .await
            .map(|_| ())
    }

    /// The metadata index and the metadata in the `metadata.json` format, for the object store copy.
    pub fn metadata_snapshot(&self) -> Result<(u64, Vec<u8>), BrokerError> {
        let view = self.view();
        let copy = crate::cluster::legacy_copy(&view, self.node_id());
        Ok((view.index, MetadataStore::encode(&copy)?))
    }

    /// Clean shutdown: leave the cluster (fence this broker so clients go elsewhere at once), then
    /// fsync and close every log and stop the embedded controller.
    pub async fn shutdown(&self) {
        self.cluster.fence_self().await;
        self.logs.shutdown().await;
        self.cluster.shutdown().await;
    }
}

/// The keys to set and delete to turn `old` into `new`.
fn config_diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let set = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    (set, delete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    fn single_node(dir: &std::path::Path) -> RuntimeConfig {
        BrokerConfig {
            data_dir: dir.to_path_buf(),
            metrics_listen: "off".into(),
            object_store: "off".into(),
            node_id: 3,
            ..Default::default()
        }
        .validate()
        .expect("config")
    }

    /// A data dir written before the metadata quorum (its `metadata.json`) is imported: the topics
    /// keep their ids, configs and partitions, the producer ids continue above the old high mark,
    /// and the file is retired so a restart does not import it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn single_node_metadata_json_is_imported_into_the_quorum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Uuid::from_u128(42);
        {
            let mut legacy = MetadataStore::open(dir.path(), Some("legacy-cluster")).expect("open");
            legacy
                .update(|st| {
                    st.topics.insert(
                        "old".into(),
                        crate::metadata_store::TopicRecord {
                            name: "old".into(),
                            id,
                            partitions: 2,
                            configs: BTreeMap::from([("retention.ms".into(), "1234".into())]),
                        },
                    );
                    st.producer_id_high_mark = 5_000;
                    st.broker_dynamic_default =
                        BTreeMap::from([("log.retention.bytes".into(), "999".into())]);
                    Ok(())
                })
                .expect("update");
        }
        let broker = Broker::open(single_node(dir.path())).await.expect("open");
        assert_eq!(broker.cluster_id(), "legacy-cluster");
        let t = broker.topic("old").expect("imported topic");
        assert_eq!((t.id, t.partitions), (id, 2));
        assert_eq!(t.configs["retention.ms"], "1234");
        assert_eq!(
            t.states[1].leader, 3,
            "imported partitions are led by the importing broker"
        );
        assert!(broker.leader_partition("old", 1).is_ok());
        assert_eq!(broker.view().cluster_configs["log.retention.bytes"], "999");
        assert!(broker.next_producer_id().await.expect("pid") >= 5_000);
        assert!(
            !MetadataStore::exists(dir.path()),
            "metadata.json is retired"
        );
        broker.shutdown().await;

        let again = Broker::open(single_node(dir.path())).await.expect("reopen");
        assert_eq!(again.cluster_id(), "legacy-cluster");
        assert_eq!(again.topic("old").map(|t| t.id), Some(id));
        again.shutdown().await;
    }

    /// Partitions led elsewhere (or by nobody) are refused with NOT_LEADER_OR_FOLLOWER, unknown
    /// ones with UNKNOWN_TOPIC_OR_PARTITION; replication factors other than 1 are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routing_and_replication_factor_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(single_node(dir.path())).await.expect("open");
        broker
            .create_topic("t", 2, -1, BTreeMap::new(), false)
            .await
            .expect("create");
        assert!(broker.leader_partition("t", 0).is_ok());
        assert_eq!(
            broker
                .leader_partition("t", 2)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err(3)
        );
        assert_eq!(
            broker
                .leader_partition("u", 0)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err(3)
        );
        let rf = broker
            .create_topic("r", 1, 3, BTreeMap::new(), false)
            .await
            .expect_err("rf 3");
        assert_eq!(rf.code(), 38, "INVALID_REPLICATION_FACTOR");
        let unknown = broker
            .create_topic_with("x", -1, -1, Some(vec![vec![9]]), BTreeMap::new(), false)
            .await
            .expect_err("unknown broker");
        assert_eq!(unknown.code(), 39, "INVALID_REPLICA_ASSIGNMENT");
        // Fence this broker (as a controlled shutdown does): its partitions lose their leader.
        broker.cluster.fence_self().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while broker.view().partition("t", 0).map(|p| p.leader) != Some(-1) {
            assert!(std::time::Instant::now() < deadline, "fencing not applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            broker
                .leader_partition("t", 0)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err(6)
        );
        broker.shutdown().await;
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(Broker::validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            let e = Broker::validate_topic_name(bad).expect_err(bad);
            assert_eq!(e.code(), 17, "{bad:?}");
        }
        assert!(Broker::validate_topic_name(&"a".repeat(250)).is_err());
    }
}
