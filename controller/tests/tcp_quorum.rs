//! Three `ControllerNode`s in one process, talking over real TCP through the tarpc transport:
//! one-time initialization, leader hints, forwarding, per-voter progress on the leader, and
//! re-election after the leader stops; a follower that missed a purged stretch of the log catches up
//! by a snapshot sent over TCP.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{eventually, register_broker};
use controller::network::AdminError;
use controller::AdminClient;
use controller::Command;
use controller::ControllerNode;
use controller::NodeConfig;
use controller::Outcome;
use controller::RaftTuning;
use controller::WriteError;
use openraft::async_runtime::watch::WatchReceiver;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(2);

async fn leader_of(nodes: &BTreeMap<u64, ControllerNode>) -> Option<u64> {
    let mut leaders = Vec::new();
    for node in nodes.values() {
        leaders.push(node.raft().current_leader().await?);
    }
    let first = leaders[0];
    (leaders.iter().all(|l| *l == first) && nodes.contains_key(&first)).then_some(first)
}

/// Three free loopback addresses as the voter set 1..=3.
fn voters() -> BTreeMap<u64, String> {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    (1..=3)
        .zip(&listeners)
        .map(|(id, l)| (id, l.local_addr().expect("addr").to_string()))
        .collect()
}

async fn start(
    id: u64,
    voters: &BTreeMap<u64, String>,
    dir: &Path,
    raft: &RaftTuning,
) -> ControllerNode {
    ControllerNode::start(NodeConfig {
        node_id: id,
        listen: voters[&id].parse().expect("addr"),
        voters: voters.clone(),
        data_dir: dir.to_path_buf(),
        raft: raft.clone(),
        broker_session_timeout_ms: controller::node::DEFAULT_BROKER_SESSION_TIMEOUT_MS,
    })
    .await
    .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let voters = voters();
    let mut nodes = BTreeMap::new();
    for (id, dir) in (1..=3).zip(&dirs) {
        let node = start(id, &voters, dir.path(), &RaftTuning::default()).await;
        nodes.insert(id, node);
    }
    let leader = eventually("a leader", async || leader_of(&nodes).await).await;
    let follower = *nodes.keys().find(|id| **id != leader).expect("follower");

    // Without forwarding, a follower names the leader.
    let at_follower = AdminClient::connect(&voters[&follower], TIMEOUT)
        .await
        .expect("connect");
    match at_follower.write_here(register_broker(1)).await {
        Err(AdminError::Write {
            source:
                WriteError::NotLeader {
                    leader_id,
                    leader_addr,
                },
            ..
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(leader_addr.as_deref(), Some(voters[&leader].as_str()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // With forwarding, it commits through the leader.
    let out = at_follower
        .write(register_broker(1))
        .await
        .expect("forwarded");
    assert_eq!(out, Ok(Outcome::BrokerRegistered { broker_epoch: 1 }));

    // The leader reports every voter and its matched index; followers report none.
    let at_leader = AdminClient::connect(&voters[&leader], TIMEOUT)
        .await
        .expect("connect");
    let status = eventually("leader sees every voter caught up", async || {
        let s = at_leader.status().await.ok()?;
        let matched = s.matched.as_ref()?;
        (matched.len() == 3 && matched.values().all(|m| *m == s.last_log_index)).then_some(s)
    })
    .await;
    assert_eq!(status.role, "Leader");
    assert_eq!(status.voters, voters);
    let follower_status = at_follower.status().await.expect("status");
    assert_eq!(follower_status.current_leader, Some(leader));
    assert!(follower_status.matched.is_none());
    // Matched is replicated, not applied: the follower applies the registration once it learns
    // the commit index (the next append or heartbeat), so its local state may lag a moment.
    eventually(
        "the follower applied the forwarded registration",
        async || {
            let state = at_follower.read_state().await.ok()?;
            state.brokers.contains_key(&1).then_some(())
        },
    )
    .await;

    // The leader stops; the other two elect a new one and take writes.
    nodes
        .remove(&leader)
        .expect("leader")
        .shutdown()
        .await
        .expect("shutdown");
    let new_leader = eventually("a new leader", async || leader_of(&nodes).await).await;
    assert_ne!(new_leader, leader);
    let at_new = AdminClient::connect(&voters[&new_leader], TIMEOUT)
        .await
        .expect("connect");
    let out = at_new.write(register_broker(2)).await.expect("write");
    assert_eq!(out, Ok(Outcome::BrokerRegistered { broker_epoch: 2 }));

    for node in nodes.into_values() {
        node.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot_over_tcp() {
    let tuning = RaftTuning {
        snapshot_every_entries: 5,
        keep_entries_after_snapshot: 0,
        ..RaftTuning::default()
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let voters = voters();
    let mut nodes = BTreeMap::new();
    for (id, dir) in (1..=3).zip(&dirs) {
        nodes.insert(id, start(id, &voters, dir.path(), &tuning).await);
    }
    let leader = eventually("a leader", async || leader_of(&nodes).await).await;
    let at_leader = AdminClient::connect(&voters[&leader], TIMEOUT)
        .await
        .expect("connect");
    let out = at_leader.write(register_broker(1)).await.expect("register");
    assert_eq!(out, Ok(Outcome::BrokerRegistered { broker_epoch: 1 }));
    let follower = *nodes.keys().find(|id| **id != leader).expect("follower");
    let sm = nodes[&follower].state().clone();
    eventually("follower applied the registration", async || {
        sm.read(|s| s.brokers.contains_key(&1)).then_some(())
    })
    .await;
    let follower_applied = sm.last_applied().expect("applied").index;
    nodes
        .remove(&follower)
        .expect("follower")
        .shutdown()
        .await
        .expect("shutdown");

    for i in 0..20 {
        let out = at_leader
            .write(Command::CreateTopic {
                name: format!("t{i}"),
                topic_id: Uuid::new_v4(),
                partitions: vec![controller::state::PartitionAssignment { replicas: vec![1] }],
                configs: BTreeMap::new(),
            })
            .await
            .expect("create");
        assert!(matches!(out, Ok(Outcome::TopicCreated { .. })), "{out:?}");
    }
    let metrics = nodes[&leader].raft().metrics();
    eventually("leader purged past the follower's log", async || {
        let purged = metrics.borrow_watched().purged;
        purged.filter(|p| p.index > follower_applied).map(|_| ())
    })
    .await;

    let dir = dirs[usize::try_from(follower - 1).expect("index")].path();
    let restarted = start(follower, &voters, dir, &tuning).await;
    let expected = nodes[&leader].state().read(Clone::clone);
    let sm = restarted.state().clone();
    eventually("restarted follower has the leader's state", async || {
        (sm.read(Clone::clone) == expected).then_some(())
    })
    .await;
    let installed = restarted.raft().metrics().borrow_watched().snapshot;
    assert!(
        installed.is_some_and(|s| s.index > follower_applied),
        "snapshot installed: {installed:?}"
    );
    nodes.insert(follower, restarted);
    for node in nodes.into_values() {
        node.shutdown().await.expect("shutdown");
    }
}
