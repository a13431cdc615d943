//! Topic and config administration through the metadata quorum: creating and deleting topics,
//! adding partitions, altering topic and broker configs, and handing out producer ids. Every change
//! is one controller command; the call returns once this broker's metadata view reflects it (the
//! reconciler opens or removes the replicas). Name rules are the state machine's.

use std::collections::BTreeMap;
use std::sync::Arc;

use controller::state::{Command, Outcome, PartitionAssignment};
use uuid::Uuid;

use crate::cluster::ClusterLink;
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata_store::PRODUCER_ID_BLOCK;
use crate::topic_config::{validate_topic_overrides, BrokerLayers};
use crate::topics::{validate_topic_name, MAX_PARTITIONS_PER_TOPIC};

/// How long CreateTopics/CreatePartitions wait for the new partitions' leaders.
const LEADER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

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

#[derive(Debug, Default)]
struct ProducerIdRange {
    next: i64,
    end: i64,
}

/// The admin service.
#[derive(Debug)]
pub struct TopicAdmin {
    cfg: Arc<BrokerConfig>,
    cluster: Arc<ClusterLink>,
    producer_ids: tokio::sync::Mutex<ProducerIdRange>,
}

impl TopicAdmin {
    /// An admin service writing through `cluster`.
    pub fn new(cfg: Arc<BrokerConfig>, cluster: Arc<ClusterLink>) -> Self {
        Self {
            cfg,
            cluster,
            producer_ids: tokio::sync::Mutex::new(ProducerIdRange::default()),
        }
    }

    /// Replica sets for `count` new partitions of replication factor `rf`, balanced over the
    /// unfenced brokers (rack-aware), or checked explicit `assignments`.
    fn assignments(
        &self,
        count: i32,
        rf: i16,
        explicit: Option<Vec<Vec<i32>>>,
    ) -> Result<Vec<PartitionAssignment>, BrokerError> {
        if let Some(sets) = explicit {
            let view = self.cluster.view();
            for (i, set) in sets.iter().enumerate() {
                if set.is_empty() {
                    return Err(BrokerError::InvalidReplicaAssignment(format!(
                        "assignment of partition {i} is empty"
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
        let rf = u16::try_from(rf).map_err(|_| {
            BrokerError::InvalidReplicationFactor(format!("replication factor {rf} is below 1"))
        })?;
        let sets = self
            .cluster
            .read_state(|st| controller::place(st, n, rf, &st.all_replica_sets()))
            .map_err(|e| BrokerError::InvalidReplicationFactor(e.to_string()))?;
        Ok(sets
            .into_iter()
            .map(|replicas| PartitionAssignment { replicas })
            .collect())
    }

    /// The replication factor a topic gets when the request names none: `default`, capped at the
    /// live brokers (so a single node keeps working with a default of 3).
    pub fn capped_replication_factor(&self, default: i16) -> i16 {
        let live = self.cluster.view().live_brokers().count();
        default.min(i16::try_from(live.max(1)).unwrap_or(i16::MAX))
    }

    /// Waits (up to `patience`) until every partition of topic `name` has a leader in this
    /// broker's view: its Raft group elected one and it reported. Clients that produce right after
    /// CreateTopics then find leaders at once.
    pub async fn wait_for_leaders(&self, name: &str, patience: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        let mut applied = self.cluster.subscribe_reconciled();
        loop {
            let ready = self
                .cluster
                .view()
                .topics
                .get(name)
                .is_some_and(|t| t.states.iter().all(|p| p.leader >= 0));
            if ready {
                return;
            }
            if tokio::time::timeout_at(deadline, applied.changed())
                .await
                .map_or(true, |r| r.is_err())
            {
                return;
            }
        }
    }

    /// Creates a topic (or only validates the request with `validate_only`).
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

    /// [`TopicAdmin::create_topic`] with optional explicit replica sets (one per partition).
    pub async fn create_topic_with(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        explicit: Option<Vec<Vec<i32>>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<CreatedTopic, BrokerError> {
        validate_topic_name(name)?;
        let partitions = match &explicit {
            Some(sets) => i32::try_from(sets.len()).unwrap_or(i32::MAX),
            None if num_partitions == -1 => self.cfg.num_partitions,
            None => num_partitions,
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(format!(
                "partition count {partitions} is outside 1..={MAX_PARTITIONS_PER_TOPIC}"
            )));
        }
        let rf = if let Some(first) = explicit.as_ref().and_then(|sets| sets.first()) {
            i16::try_from(first.len().max(1)).unwrap_or(i16::MAX)
        } else if replication_factor == -1 {
            self.capped_replication_factor(self.cfg.default_replication_factor)
        } else {
            replication_factor
        };
        if rf < 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {rf} is below 1"
            )));
        }
        validate_topic_overrides(&configs)?;
        if self.cluster.view().topics.contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
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
        tracing::info!(topic = name, partitions, replication_factor = rf, %id, "created topic");
        self.wait_for_leaders(name, LEADER_PATIENCE).await;
        Ok(CreatedTopic {
            id,
            partitions,
            replication_factor: rf,
        })
    }

    /// Deletes a topic; every broker hosting it removes its data, and the objects in the object
    /// store are removed by the broker that runs the cluster chores (`remote_cleanup`).
    pub async fn delete_topic(
        &self,
        name: &str,
        remote_cleanup: bool,
    ) -> Result<Uuid, BrokerError> {
        let id = self
            .cluster
            .view()
            .topics
            .get(name)
            .map(|t| t.id)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        self.cluster
            .write(Command::DeleteTopic {
                topic_id: id,
                remote_cleanup,
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
            .cluster
            .view()
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
        if let Some(sets) = &explicit {
            if i32::try_from(sets.len()).ok() != Some(count - topic.partitions) {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "{} assignments for {} new partitions",
                    sets.len(),
                    count - topic.partitions
                )));
            }
        }
        let rf = topic
            .states
            .first()
            .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX));
        let assignments = self.assignments(count - topic.partitions, rf, explicit)?;
        if validate_only {
            return Ok(());
        }
        self.cluster
            .write(Command::CreatePartitions {
                topic_id: topic.id,
                assignments,
            })
            .await?;
        self.wait_for_leaders(name, LEADER_PATIENCE).await;
        Ok(())
    }

    /// Replaces or edits a topic's config overrides.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let topic = self
            .cluster
            .view()
            .topics
            .get(name)
            .cloned()
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

    /// Edits dynamic broker configs (`per_broker`: this node's own, else the cluster default).
    pub async fn alter_broker_configs(
        &self,
        per_broker: bool,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), BrokerError>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let view = self.cluster.view();
        let me = self.cfg.node_id;
        let current = if per_broker {
            view.broker_configs_of(me)
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
                broker_id: per_broker.then_some(me),
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
                    broker_id: self.cfg.node_id,
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

    /// Records that a deleted topic's objects are gone from the object store.
    pub async fn finish_remote_deletion(&self, id: Uuid) -> Result<(), BrokerError> {
        self.cluster
            .write(Command::FinishTopicDeletion { topic_id: id })
            .await
            .map(|_| ())
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
