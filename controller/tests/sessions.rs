//! The leader fences a broker whose heartbeats stop, and a new registration unfences it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use controller::node::NodeConfig;
use controller::state::{Command, Outcome};
use controller::{ControllerNode, RaftTuning};
use openraft::async_runtime::watch::WatchReceiver;

mod common;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn register(id: i32) -> Command {
    common::register_broker_at(id, now_ms())
}

async fn wait_for(
    node: &ControllerNode,
    what: &str,
    f: impl Fn(&controller::MetadataState) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.state().read(&f) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn silent_brokers_are_fenced_and_a_restart_unfences_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ControllerNode::start(NodeConfig {
        node_id: 1,
        listen: "127.0.0.1:0".parse().expect("addr"),
        voters: BTreeMap::from([(1, "127.0.0.1:1".to_string())]),
        data_dir: dir.path().to_path_buf(),
        raft: RaftTuning::default(),
        broker_session_timeout_ms: 400,
    })
    .await
    .expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.raft().metrics().borrow_watched().current_leader != Some(1) {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in [1, 2] {
        let r = node.raft().client_write(register(id)).await.expect("write");
        assert!(
            matches!(r.data, Ok(Outcome::BrokerRegistered { .. })),
            "{:?}",
            r.data
        );
    }
    // Broker 2 keeps heartbeating; broker 1 goes silent.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let epoch = node.state().read(|s| s.brokers[&2].epoch);
        node.raft()
            .client_write(Command::BrokerHeartbeat {
                broker_id: 2,
                broker_epoch: epoch,
                now_ms: now_ms(),
            })
            .await
            .expect("heartbeat")
            .data
            .expect("heartbeat applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(&node, "broker 1 to be fenced", |s| s.brokers[&1].fenced).await;
    assert!(
        node.state().read(|s| !s.brokers[&2].fenced),
        "a live broker was fenced"
    );
    // Its restart registers again and is unfenced.
    node.raft()
        .client_write(register(1))
        .await
        .expect("re-register")
        .data
        .expect("applied");
    assert!(node.state().read(|s| !s.brokers[&1].fenced));
    node.shutdown().await.expect("shutdown");
}
