//! The broker's shared state: configuration, the metadata store, the hosted partitions, metrics, and the
//! topic-level operations that must change metadata and logs together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tiering::remote::RemotePartition;
use uuid::Uuid;

use crate::config::RuntimeConfig;
use crate::disk_guard::DiskGuard;
use crate::error::BrokerError;
use crate::group::consumer::ConsumerConfig;
use crate::group::{CoordinatorConfig, GroupCoordinator, SystemClock};
use crate::log_manager::LogManager;
use crate::metadata_store::{MetadataStore, TopicRecord, PRODUCER_ID_BLOCK};
use crate::metrics::Metrics;
use crate::offload::RemoteTier;
use crate::partition::Partition;
use crate::topic_config::{validate_topic_overrides, BrokerLayers, TopicSettings};

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
    metadata: Mutex<MetadataStore>,
    layers: RwLock<BrokerLayers>,
    producer_ids: Mutex<ProducerIdRange>,
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
    /// Opens the metadata store and every partition log under the data dir, without tiered storage.
    pub fn open(config: RuntimeConfig) -> Result<Arc<Self>, BrokerError> {
        Self::open_tiered(config, None, HashMap::new())
    }

    /// Opens the broker with its remote tier (opened and prepared by `RemoteTier::open` and
    /// `RemoteTier::prepare`), and starts the offload task.
    pub fn open_tiered(
        config: RuntimeConfig,
        remote: Option<Arc<RemoteTier>>,
        loaded_remote: HashMap<(Uuid, i32), Arc<RemotePartition>>,
    ) -> Result<Arc<Self>, BrokerError> {
        let data_dir = config.broker.data_dir.clone();
        let store = MetadataStore::open(&data_dir, config.broker.cluster_id.as_deref())?;
        let mut layers = BrokerLayers::from_config(&config.broker);
        layers.dynamic_default = store.state().broker_dynamic_default.clone();
        layers.dynamic_broker = store.state().broker_dynamic.clone();
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
        let known: HashMap<String, Uuid> = store
            .state()
            .topics
            .values()
            .map(|t| (t.name.clone(), t.id))
            .collect();
        logs.clean_orphans(&known)?;
        let topics: Vec<TopicRecord> = store.state().topics.values().cloned().collect();
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
            metadata: Mutex::new(store),
            layers: RwLock::new(layers),
            producer_ids: Mutex::new(ProducerIdRange::default()),
            config,
        });
        for t in topics {
            let settings = broker.layers.read().topic_settings(&t.configs);
            for i in 0..t.partitions {
                broker
                    .logs
                    .open_partition(&t.name, t.id, i, settings.clone())?;
            }
        }
        broker.groups.load(&broker)?;
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

    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.metadata.lock().state().cluster_id.clone()
    }

    /// All topics.
    pub fn topics(&self) -> Vec<TopicRecord> {
        self.metadata
            .lock()
            .state()
            .topics
            .values()
            .cloned()
            .collect()
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<TopicRecord> {
        self.metadata.lock().state().topics.get(name).cloned()
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicRecord> {
        self.metadata
            .lock()
            .state()
            .topics
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// The broker's configuration layers (for DescribeConfigs).
    pub fn layers(&self) -> BrokerLayers {
        self.layers.read().clone()
    }

    /// A hosted partition.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.logs.get(topic, index)
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

    /// Creates a topic (or only validates the request with `validate_only`).
    pub fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<CreatedTopic, BrokerError> {
        Self::validate_topic_name(name)?;
        let partitions = if num_partitions == -1 {
            self.config.broker.num_partitions
        } else {
            num_partitions
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
        if rf != 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {rf} is larger than the 1 available broker"
            )));
        }
        validate_topic_overrides(&configs)?;
        let mut md = self.metadata.lock();
        if md.state().topics.contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        let collides = md
            .state()
            .topics
            .keys()
            .any(|t| t.replace('.', "_") == name.replace('.', "_"));
        if collides {
            return Err(BrokerError::InvalidTopic(format!(
                "topic {name:?} collides with an existing topic ('.' and '_' collide)"
            )));
        }
        let id = Uuid::new_v4();
        if validate_only {
            return Ok(CreatedTopic {
                id,
                partitions,
                replication_factor: rf,
            });
        }
        let settings = self.layers.read().topic_settings(&configs);
        let record = TopicRecord {
            name: name.to_string(),
            id,
            partitions,
            configs,
        };
        md.update(|st| {
            st.topics.insert(name.to_string(), record);
            Ok(())
        })?;
        drop(md);
        for i in 0..partitions {
            self.logs.open_partition(name, id, i, settings.clone())?;
        }
        tracing::info!(topic = name, partitions, %id, "created topic");
        Ok(CreatedTopic {
            id,
            partitions,
            replication_factor: rf,
        })
    }

    /// Deletes a topic and (asynchronously) its data, locally and in the object store.
    pub fn delete_topic(&self, name: &str) -> Result<Uuid, BrokerError> {
        let tiered = self.logs.remote_tier().is_some();
        let id = self.metadata.lock().update(|st| {
            let id = st
                .topics
                .remove(name)
                .map(|t| t.id)
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
            if tiered {
                st.pending_remote_deletions.insert(id);
            }
            Ok(id)
        })?;
        self.logs.delete_topic(name);
        tracing::info!(topic = name, %id, "deleted topic");
        Ok(id)
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let mut md = self.metadata.lock();
        let topic = md
            .state()
            .topics
            .get(name)
            .cloned()
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
        if validate_only {
            return Ok(());
        }
        md.update(|st| {
            if let Some(t) = st.topics.get_mut(name) {
                t.partitions = count;
            }
            Ok(())
        })?;
        drop(md);
        let settings = self.layers.read().topic_settings(&topic.configs);
        for i in topic.partitions..count {
            self.logs
                .open_partition(name, topic.id, i, settings.clone())?;
        }
        Ok(())
    }

    /// Replaces (`incremental == false`) or edits a topic's config overrides.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let mut md = self.metadata.lock();
        let mut configs = md
            .state()
            .topics
            .get(name)
            .map(|t| t.configs.clone())
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        change(&mut configs)?;
        validate_topic_overrides(&configs)?;
        if validate_only {
            return Ok(());
        }
        let saved = configs.clone();
        md.update(|st| {
            if let Some(t) = st.topics.get_mut(name) {
                t.configs = saved;
            }
            Ok(())
        })?;
        drop(md);
        let settings = self.layers.read().topic_settings(&configs);
        for p in self.logs.of_topic(name) {
            p.set_settings(settings.clone());
        }
        Ok(())
    }

    /// Edits dynamic broker configs (`per_broker` = resource name is this node id, else cluster default).
    pub fn alter_broker_configs(
        &self,
        per_broker: bool,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let mut md = self.metadata.lock();
        let mut configs = if per_broker {
            md.state().broker_dynamic.clone()
        } else {
            md.state().broker_dynamic_default.clone()
        };
        change(&mut configs)?;
        for (k, v) in &configs {
            BrokerLayers::validate_broker_value(k, v)?;
        }
        if validate_only {
            return Ok(());
        }
        let saved = configs.clone();
        md.update(|st| {
            if per_broker {
                st.broker_dynamic = saved;
            } else {
                st.broker_dynamic_default = saved;
            }
            Ok(())
        })?;
        let topics: Vec<TopicRecord> = md.state().topics.values().cloned().collect();
        drop(md);
        {
            let mut layers = self.layers.write();
            if per_broker {
                layers.dynamic_broker = configs;
            } else {
                layers.dynamic_default = configs;
            }
        }
        let layers = self.layers.read().clone();
        for t in topics {
            let settings: TopicSettings = layers.topic_settings(&t.configs);
            for p in self.logs.of_topic(&t.name) {
                p.set_settings(settings.clone());
            }
        }
        Ok(())
    }

    /// Hands out a producer id; ids come from persisted blocks so they are never reused after a restart.
    pub fn next_producer_id(&self) -> Result<i64, BrokerError> {
        let mut range = self.producer_ids.lock();
        if range.next >= range.end {
            let start = self.metadata.lock().update(|st| {
                let start = st.producer_id_high_mark;
                st.producer_id_high_mark = start + PRODUCER_ID_BLOCK;
                Ok(start)
            })?;
            range.next = start;
            range.end = start + PRODUCER_ID_BLOCK;
        }
        let id = range.next;
        range.next += 1;
        Ok(id)
    }

    /// Deleted topics whose objects are still to be removed from the object store.
    pub fn pending_remote_deletions(&self) -> Vec<Uuid> {
        self.metadata
            .lock()
            .state()
            .pending_remote_deletions
            .iter()
            .copied()
            .collect()
    }

    /// Records that a deleted topic's objects are gone.
    pub fn finish_remote_deletion(&self, id: Uuid) -> Result<(), BrokerError> {
        self.metadata.lock().update(|st| {
            st.pending_remote_deletions.remove(&id);
            Ok(())
        })
    }

    /// The metadata generation and its encoded state, for the object store copy.
    pub fn metadata_snapshot(&self) -> Result<(u64, Vec<u8>), BrokerError> {
        let md = self.metadata.lock();
        Ok((md.generation(), MetadataStore::encode(md.state())?))
    }

    /// Clean shutdown of the storage side: final fsync and close of every log.
    pub async fn shutdown(&self) {
        self.logs.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
