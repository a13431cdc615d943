//! The broker's metadata cache: an immutable picture of the applied cluster metadata, rebuilt
//! from the controller's state machine whenever it changes, and read lock-free (an `Arc` swap)
//! by every request handler.

use std::collections::{BTreeMap, BTreeSet};

use controller::state::{BrokerRegistration, MetadataState, NO_LEADER};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::topic_config::BrokerLayers;

/// Name of the listener a broker registers for partition replication (not for clients).
pub const REPLICATION_LISTENER: &str = "REPLICATION";

/// The listener clients connect to: the first one that is not the replication listener.
fn client_listener(b: &BrokerRegistration) -> Option<&controller::state::Listener> {
    b.listeners.iter().find(|l| l.name != REPLICATION_LISTENER)
}

/// One partition as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// Replica set; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// Leader, or -1.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// In-sync replicas as the leader reported them.
    pub isr: Vec<i32>,
    /// The reassignment in progress: (original replicas, target replicas). While it lasts,
    /// `replicas` lists the target first, then the other brokers still hosting the partition.
    pub reassignment: Option<(Vec<i32>, Vec<i32>)>,
}

impl PartitionView {
    /// Whether broker `me` hosts this partition only because a reassignment is adding it: its
    /// replica must wait for the leader to add it to the group, never form a group of its own.
    pub fn joining(&self, me: i32) -> bool {
        self.reassignment
            .as_ref()
            .is_some_and(|(original, _)| !original.contains(&me))
    }
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    /// Topic name.
    pub name: String,
    /// Topic id (KIP-516).
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Topic-level config overrides.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub states: Vec<PartitionView>,
}

/// The applied cluster metadata at one log index.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Log index this view reflects.
    pub index: u64,
    /// Cluster id (empty until the cluster is initialized).
    pub cluster_id: String,
    /// Registered brokers.
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicView>,
    /// Cluster-wide dynamic broker configs.
    pub cluster_configs: BTreeMap<String, String>,
    /// Per-broker dynamic configs.
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// Deleted topics whose objects are still to be removed.
    pub pending_remote_deletions: BTreeSet<Uuid>,
    /// Next producer id the controller hands out.
    pub next_producer_id: i64,
}

impl ClusterView {
    /// The view of `state` at log index `index`.
    pub fn from_state(state: &MetadataState, index: u64) -> Self {
        let topics = state
            .topics
            .values()
            .map(|t| {
                let states: Vec<PartitionView> = t
                    .partitions
                    .values()
                    .map(|p| PartitionView {
                        replicas: p.replicas.clone(),
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        isr: p.isr.clone(),
                        reassignment: p
                            .reassignment
                            .as_ref()
                            .map(|r| (r.original.clone(), r.target.clone())),
                    })
                    .collect();
                let view = TopicView {
                    name: t.name.clone(),
                    id: t.topic_id,
                    partitions: i32::try_from(states.len()).unwrap_or(i32::MAX),
                    configs: t.configs.clone(),
                    states,
                };
                (t.name.clone(), view)
            })
            .collect();
        Self {
            index,
            cluster_id: state.cluster_id.clone().unwrap_or_default(),
            brokers: state.brokers.clone(),
            topics,
            cluster_configs: state.cluster_configs.clone(),
            broker_configs: state.broker_configs.clone(),
            pending_remote_deletions: state.pending_remote_deletions.clone(),
            next_producer_id: state.next_producer_id,
        }
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicView> {
        self.topics.values().find(|t| t.id == id)
    }

    /// One partition.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionView> {
        let i = usize::try_from(index).ok()?;
        self.topics.get(topic)?.states.get(i)
    }

    /// The unfenced brokers (the ones clients are told about).
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Host and port of an unfenced broker.
    pub fn endpoint(&self, id: i32) -> Option<(String, i32)> {
        let b = self.brokers.get(&id).filter(|b| !b.fenced)?;
        let l = client_listener(b)?;
        Some((l.host.clone(), i32::from(l.port)))
    }

    /// Every unfenced broker with its client endpoint: (id, host, port, rack).
    pub fn live_endpoints(&self) -> impl Iterator<Item = (i32, &str, i32, Option<&str>)> {
        self.live_brokers().filter_map(|b| {
            let l = client_listener(b)?;
            Some((b.id, l.host.as_str(), i32::from(l.port), b.rack.as_deref()))
        })
    }

    /// Every registered broker's partition replication endpoint (`host:port`), by node id.
    pub fn replication_endpoints(&self) -> BTreeMap<u64, String> {
        self.brokers
            .values()
            .filter_map(|b| {
                let l = b
                    .listeners
                    .iter()
                    .find(|l| l.name == REPLICATION_LISTENER)?;
                Some((u64::try_from(b.id).ok()?, format!("{}:{}", l.host, l.port)))
            })
            .collect()
    }

    /// The fenced brokers, as node ids.
    pub fn fenced_brokers(&self) -> BTreeSet<u64> {
        self.brokers
            .values()
            .filter(|b| b.fenced)
            .filter_map(|b| u64::try_from(b.id).ok())
            .collect()
    }

    /// Whether `id` is registered and unfenced.
    pub fn is_live(&self, id: i32) -> bool {
        id != NO_LEADER && self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// The dynamic configs of broker `id`.
    pub fn broker_configs_of(&self, id: i32) -> BTreeMap<String, String> {
        self.broker_configs.get(&id).cloned().unwrap_or_default()
    }

    /// The config layers of broker `broker_id`: its static configuration under this view's dynamic
    /// cluster-wide and per-broker configs.
    pub fn layers(&self, cfg: &BrokerConfig, broker_id: i32) -> BrokerLayers {
        let mut layers = cfg.layers();
        layers.dynamic_default = self.cluster_configs.clone();
        layers.dynamic_broker = self.broker_configs_of(broker_id);
        layers
    }

    /// Whether `other` differs from this view in anything the broker acts on (topics, configs);
    /// heartbeats only move timestamps and do not count.
    pub fn same_assignments(&self, other: &ClusterView) -> bool {
        self.topics == other.topics
            && self.cluster_configs == other.cluster_configs
            && self.broker_configs == other.broker_configs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use controller::state::{apply, Command, LeadershipReport, Listener, PartitionAssignment};

    #[test]
    fn view_follows_state() {
        let mut st = MetadataState::default();
        for id in [1, 2] {
            apply(
                &mut st,
                Command::RegisterBroker {
                    broker_id: id,
                    incarnation_id: Uuid::from_u128(id as u128),
                    listeners: vec![Listener {
                        name: "PLAINTEXT".into(),
                        host: "h".into(),
                        port: 9000 + id as u16,
                    }],
                    rack: None,
                    now_ms: 0,
                },
            )
            .expect("register");
        }
        apply(
            &mut st,
            Command::CreateTopic {
                name: "t".into(),
                topic_id: Uuid::from_u128(7),
                partitions: vec![
                    PartitionAssignment { replicas: vec![1] },
                    PartitionAssignment { replicas: vec![2] },
                ],
                configs: BTreeMap::new(),
            },
        )
        .expect("create");
        let created = ClusterView::from_state(&st, 3);
        assert_eq!(
            created.partition("t", 1).map(|p| p.leader),
            Some(NO_LEADER),
            "a new partition has no leader until its group elects one"
        );
        let topic_id = Uuid::from_u128(7);
        let epoch2 = st.brokers[&2].epoch;
        apply(
            &mut st,
            Command::ReportLeadership {
                broker_id: 2,
                broker_epoch: epoch2,
                partitions: vec![LeadershipReport {
                    topic_id,
                    partition: 1,
                    leader_epoch: 1,
                    isr: vec![2],
                }],
            },
        )
        .expect("report");
        let v = ClusterView::from_state(&st, 3);
        assert_eq!(v.topics["t"].partitions, 2);
        assert_eq!(v.partition("t", 1).map(|p| p.leader), Some(2));
        assert_eq!(v.partition("t", 1).map(|p| p.isr.clone()), Some(vec![2]));
        assert_eq!(v.endpoint(2), Some(("h".into(), 9002)));
        assert!(v.partition("t", 2).is_none());
        assert!(v.partition("t", -1).is_none());
        let e = st.brokers[&2].epoch;
        apply(
            &mut st,
            Command::FenceBroker {
                broker_id: 2,
                broker_epoch: e,
            },
        )
        .expect("fence");
        let w = ClusterView::from_state(&st, 4);
        assert_eq!(w.partition("t", 1).map(|p| p.leader), Some(NO_LEADER));
        assert_eq!(w.endpoint(2), None);
        assert!(!v.same_assignments(&w));
        assert_eq!(w.live_brokers().count(), 1);
    }
}
