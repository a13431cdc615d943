//! Three in-process metadata nodes on the real on-disk stores, connected by a direct-call network:
//! elect, write through the leader, see it applied everywhere, lose the leader, elect again, write
//! again.

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use common::{eventually, register_broker};
use controller::state::PartitionAssignment;
use controller::Command;
use controller::MetadataRaft;
use controller::Outcome;
use controller::StateMachineStore;
use controller::TypeConfig;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::Config;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::SnapshotPolicy;
use parking_lot::Mutex;
use tempfile::TempDir;
use uuid::Uuid;

type Vote = controller::store::Vote;
type Snapshot = controller::store::Snapshot;

/// Routes RPCs by node id straight into the target's `Raft` handle; a removed node is unreachable.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<u64, MetadataRaft>>>,
}

impl Router {
    fn get(&self, id: u64) -> Result<MetadataRaft, Unreachable<TypeConfig>> {
        self.nodes
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {id} is down")))
    }
}

struct Conn {
    router: Router,
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Conn {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.get(self.target)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

struct Node {
    raft: MetadataRaft,
    sm: StateMachineStore,
}

/// Start node `id` on the stores in `dir` (new or left by an earlier run) and make it reachable.
async fn start(id: u64, dir: &Path, router: &Router, config: &Arc<Config>) -> Node {
    let (log, sm) = controller::store::open(dir).expect("open stores");
    let raft = MetadataRaft::new(id, config.clone(), router.clone(), log, sm.clone())
        .await
        .expect("raft");
    router.nodes.lock().insert(id, raft.clone());
    Node { raft, sm }
}

/// Make node `id` unreachable and stop it.
async fn stop(id: u64, nodes: &mut BTreeMap<u64, Node>, router: &Router) {
    let node = nodes.remove(&id).expect("running node");
    router.nodes.lock().remove(&id);
    node.raft.shutdown().await.expect("shutdown");
}

/// Start nodes 1..=3 in fresh directories, initialize the cluster and return the agreed leader.
async fn cluster(
    config: &Arc<Config>,
    router: &Router,
) -> (BTreeMap<u64, TempDir>, BTreeMap<u64, Node>, u64) {
    let mut dirs = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let dir = tempfile::tempdir().expect("tempdir");
        nodes.insert(id, start(id, dir.path(), router, config).await);
        dirs.insert(id, dir);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("node-{id}"))))
        .collect();
    nodes[&1]
        .raft
        .initialize(members)
        .await
        .expect("initialize");
    let live: BTreeSet<u64> = (1..=3).collect();
    let leader = eventually("first leader", async || agreed_leader(&nodes, &live).await).await;
    (dirs, nodes, leader)
}

/// The leader all `live` nodes agree on, if any.
async fn agreed_leader(nodes: &BTreeMap<u64, Node>, live: &BTreeSet<u64>) -> Option<u64> {
    let mut seen = BTreeSet::new();
    for id in live {
        seen.insert(nodes[id].raft.current_leader().await?);
    }
    let leader = *seen.iter().next()?;
    (seen.len() == 1 && live.contains(&leader)).then_some(leader)
}

fn create_topic(name: &str, replicas: Vec<i32>) -> Command {
    Command::CreateTopic {
        name: name.to_string(),
        topic_id: Uuid::new_v4(),
        partitions: vec![PartitionAssignment { replicas }],
        configs: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_leader_loss() {
    let config = Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        }
        .validate()
        .expect("config"),
    );
    let router = Router::default();
    let (_dirs, mut nodes, leader) = cluster(&config, &router).await;
    let mut live: BTreeSet<u64> = (1..=3).collect();

    // Register a broker and create a topic on it, through the leader.
    let registered = nodes[&leader]
        .raft
        .client_write(register_broker(1))
        .await
        .expect("register");
    assert_eq!(
        registered.data,
        Ok(Outcome::BrokerRegistered { broker_epoch: 1 })
    );
    let created = nodes[&leader]
        .raft
        .client_write(create_topic("orders", vec![1]))
        .await
        .expect("create");
    assert!(
        matches!(created.data, Ok(Outcome::TopicCreated { .. })),
        "{:?}",
        created.data
    );
    // A rejected command is committed too, and its rejection comes back to the proposer.
    let duplicate = nodes[&leader]
        .raft
        .client_write(create_topic("orders", vec![1]))
        .await
        .expect("write");
    assert_eq!(
        duplicate.data,
        Err(controller::CommandError::TopicAlreadyExists(
            "orders".into()
        ))
    );

    for id in &live {
        let sm = &nodes[id].sm;
        eventually("topic applied on every node", async || {
            sm.read(|s| s.topic_by_name("orders").is_some())
                .then_some(())
        })
        .await;
    }

    // Lose the leader: stop it and make it unreachable.
    stop(leader, &mut nodes, &router).await;
    live.remove(&leader);

    // A node that just won may still lose its lease on a loaded machine: retry on the current
    // leader until a write commits (bounded by `eventually`).
    let payments = create_topic("payments", vec![1]);
    let created = eventually("a write on the new leader", async || {
        let new_leader = agreed_leader(&nodes, &live).await?;
        assert_ne!(new_leader, leader);
        nodes[&new_leader]
            .raft
            .client_write(payments.clone())
            .await
            .ok()
    })
    .await;
    assert!(
        matches!(created.data, Ok(Outcome::TopicCreated { .. })),
        "{:?}",
        created.data
    );
    for id in &live {
        let sm = &nodes[id].sm;
        eventually("second topic applied on the survivors", async || {
            sm.read(|s| {
                (s.topic_by_name("orders").is_some() && s.topic_by_name("payments").is_some())
                    .then_some(())
            })
        })
        .await;
    }
    // Every survivor applied the same log to the same state.
    let states: Vec<_> = live
        .iter()
        .map(|id| nodes[id].sm.read(Clone::clone))
        .collect();
    assert!(states.windows(2).all(|w| w[0] == w[1]));

    for node in nodes.values() {
        node.raft.shutdown().await.expect("shutdown");
    }
}

/// A follower misses writes while down; the leader snapshots and purges its log past them; the
/// follower restarts on its own directory and catches up by installing the leader's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_from_a_snapshot() {
    let config = Arc::new(
        Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .expect("config"),
    );
    let router = Router::default();
    let (dirs, mut nodes, leader) = cluster(&config, &router).await;
    nodes[&leader]
        .raft
        .client_write(register_broker(1))
        .await
        .expect("register");
    let follower = *nodes.keys().find(|id| **id != leader).expect("a follower");
    let sm = nodes[&follower].sm.clone();
    eventually("follower applied the registration", async || {
        sm.read(|s| s.brokers.contains_key(&1)).then_some(())
    })
    .await;
    let follower_applied = sm.last_applied().expect("applied").index;
    stop(follower, &mut nodes, &router).await;

    for i in 0..20 {
        let out = nodes[&leader]
            .raft
            .client_write(create_topic(&format!("t{i}"), vec![1]))
            .await
            .expect("create");
        assert!(
            matches!(out.data, Ok(Outcome::TopicCreated { .. })),
            "{:?}",
            out.data
        );
    }
    let metrics = nodes[&leader].raft.metrics();
    eventually("leader purged past the follower's log", async || {
        let purged = metrics.borrow_watched().purged;
        purged.filter(|p| p.index > follower_applied).map(|_| ())
    })
    .await;

    let restarted = start(follower, dirs[&follower].path(), &router, &config).await;
    let sm = restarted.sm.clone();
    eventually("restarted follower caught up", async || {
        sm.read(|s| (s.topics.len() == 20).then_some(()))
    })
    .await;
    let installed = restarted.raft.metrics().borrow_watched().snapshot;
    assert!(
        installed.is_some_and(|s| s.index > follower_applied),
        "snapshot installed: {installed:?}"
    );
    nodes.insert(follower, restarted);
    let leader_state = nodes[&leader].sm.read(Clone::clone);
    eventually("follower state equals leader state", async || {
        (nodes[&follower].sm.read(Clone::clone) == leader_state).then_some(())
    })
    .await;

    for node in nodes.values() {
        node.raft.shutdown().await.expect("shutdown");
    }
}
