//! Three real `strata controller` processes on loopback, talking Raft over TCP (tarpc):
//! elect a leader, write through a follower (it forwards to the leader), kill -9 the leader and
//! measure the failover, restart the killed node on its data directory and watch it catch up,
//! then stop all three with SIGTERM and restart them: the metadata survives.
//!
//! Each node's log is in `<tempdir>/node-<id>.log` (set `STRATA_LOG` to change the filter); the
//! tempdir is kept and printed when the test fails.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Child;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use controller::network::AdminError;
use controller::state::Listener;
use controller::state::PartitionAssignment;
use controller::AdminClient;
use controller::Command;
use controller::MetadataState;
use controller::Outcome;
use controller::QuorumStatus;
use controller::WriteError;
use uuid::Uuid;

const RPC_TIMEOUT: Duration = Duration::from_secs(2);

struct Cluster {
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Child>,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", common::free_port())))
            .collect();
        Self {
            dir,
            addrs,
            procs: BTreeMap::new(),
        }
    }

    fn voters(&self) -> String {
        self.addrs
            .iter()
            .map(|(id, addr)| format!("{id}@{addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    fn start(&mut self, id: u64) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("controller")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &self.addrs[&id]])
            .args(["--controller-voters", &self.voters()])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("data-{id}")))
            .env(
                "STRATA_LOG",
                std::env::var("STRATA_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn strata controller");
        self.procs.insert(id, child);
    }

    fn kill9(&mut self, id: u64) {
        let mut child = self.procs.remove(&id).expect("running node");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }

    /// SIGTERM node `id` and wait (bounded) for a clean exit.
    fn terminate(&mut self, id: u64) {
        let mut child = self.procs.remove(&id).expect("running node");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "node {id} exited with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {id} did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn live(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    async fn client(&self, id: u64) -> Result<AdminClient, AdminError> {
        AdminClient::connect(&self.addrs[&id], RPC_TIMEOUT).await
    }

    async fn status(&self, id: u64) -> Option<QuorumStatus> {
        self.client(id).await.ok()?.status().await.ok()
    }

    async fn state(&self, id: u64) -> Option<MetadataState> {
        self.client(id).await.ok()?.read_state().await.ok()
    }

    /// The leader every live node agrees on (and that says it leads), if any.
    async fn agreed_leader(&self) -> Option<u64> {
        let live = self.live();
        let mut leader = None;
        for id in &live {
            let status = self.status(*id).await?;
            let l = status.current_leader?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        let leader = leader?;
        let status = self.status(leader).await?;
        (live.contains(&leader) && status.role == "Leader").then_some(leader)
    }

    /// Write `command` starting at node `via`, following leader hints and retrying retriable
    /// errors for up to `bound`.
    async fn write(&self, via: u64, command: Command, bound: Duration) -> Outcome {
        let deadline = Instant::now() + bound;
        let mut addr = self.addrs[&via].clone();
        loop {
            let attempt = async {
                let client = AdminClient::connect(&addr, RPC_TIMEOUT).await?;
                client.write(command.clone()).await
            };
            let error = match attempt.await {
                Ok(Ok(outcome)) => return outcome,
                Ok(Err(rejected)) => panic!("command rejected: {rejected}"),
                Err(e) => e,
            };
            if let AdminError::Write {
                source: WriteError::Indeterminate { .. },
                ..
            } = &error
            {
                panic!("write outcome unknown: {error}");
            }
            assert!(
                Instant::now() < deadline,
                "write not committed within {bound:?}: {error}"
            );
            match error.leader_hint() {
                Some((_, leader)) => addr = leader.to_string(),
                None => {
                    // No leader known yet: try the next live node after a short pause.
                    let live = self.live();
                    let next = live
                        .iter()
                        .find(|id| self.addrs[*id] != addr)
                        .unwrap_or(&via);
                    addr = self.addrs[next].clone();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Wait until every live node's applied state equals the state of `reference`.
    async fn converged(&self, reference: u64, bound: Duration) -> MetadataState {
        let what = format!("live nodes converge on node {reference}'s state");
        eventually(&what, bound, async || {
            let expected = self.state(reference).await?;
            for id in self.live() {
                if self.state(id).await? != expected {
                    return None;
                }
            }
            Some(expected)
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.procs.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let kept = dir.keep();
            eprintln!("controller logs kept in {}", kept.display());
            for id in 1..=3u64 {
                if let Ok(mut f) = File::open(kept.join(format!("node-{id}.log"))) {
                    let mut text = String::new();
                    let _ = std::io::Read::read_to_string(&mut f, &mut text);
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("--- node {id} (last lines) ---");
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `bound` naming `what`.
async fn eventually<T>(what: &str, bound: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn register_broker(broker_id: i32) -> Command {
    Command::RegisterBroker {
        broker_id,
        incarnation_id: Uuid::new_v4(),
        listeners: vec![Listener {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        }],
        rack: None,
        now_ms: 0,
    }
}

fn create_topic(name: &str) -> Command {
    Command::CreateTopic {
        name: name.to_string(),
        topic_id: Uuid::new_v4(),
        partitions: vec![PartitionAssignment { replicas: vec![1] }],
        configs: BTreeMap::new(),
    }
}

fn assert_created(outcome: &Outcome) {
    assert!(
        matches!(outcome, Outcome::TopicCreated { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_elect_replicate_fail_over_and_restart() {
    let mut cluster = Cluster::new();
    tokio::time::timeout(Duration::from_secs(55), scenario(&mut cluster))
        .await
        .expect("scenario finished within 55 s");
}

async fn scenario(cluster: &mut Cluster) {
    let started = Instant::now();
    for id in 1..=3 {
        cluster.start(id);
    }
    let leader = eventually("first leader", Duration::from_secs(20), async || {
        cluster.agreed_leader().await
    })
    .await;
    println!(
        "leader {leader} elected {} ms after start",
        started.elapsed().as_millis()
    );
    let status = cluster.status(leader).await.expect("leader status");
    assert_eq!(status.voters.len(), 3, "{status:?}");
    assert!(
        status.matched.is_some(),
        "leader reports replication progress"
    );

    // Write through a follower: it forwards to the leader.
    let follower = *cluster
        .live()
        .iter()
        .find(|id| **id != leader)
        .expect("a follower");
    let follower_client = cluster.client(follower).await.expect("connect follower");
    let registered = follower_client
        .write(register_broker(1))
        .await
        .expect("register via follower");
    assert_eq!(
        registered,
        Ok(Outcome::BrokerRegistered { broker_epoch: 1 })
    );
    let created = follower_client
        .write(create_topic("orders"))
        .await
        .expect("create via follower")
        .expect("created");
    assert_created(&created);
    let state = cluster.converged(leader, Duration::from_secs(10)).await;
    assert!(state.topic_by_name("orders").is_some());

    // kill -9 the leader; time until the survivors agree on a new leader and commit a write.
    cluster.kill9(leader);
    let killed_at = Instant::now();
    let new_leader = eventually("new leader", Duration::from_secs(15), async || {
        cluster.agreed_leader().await
    })
    .await;
    let elected = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    let survivor = cluster.live()[0];
    let outcome = cluster
        .write(survivor, create_topic("payments"), Duration::from_secs(10))
        .await;
    let committed = killed_at.elapsed();
    assert_created(&outcome);
    println!(
        "failover: kill -9 of leader {leader} -> node {new_leader} elected in {} ms -> first write committed at {} ms",
        elected.as_millis(),
        committed.as_millis()
    );
    cluster.converged(new_leader, Duration::from_secs(10)).await;

    // Restart the killed node on its data directory: it catches up.
    cluster.start(leader);
    let restarted_at = Instant::now();
    let state = cluster.converged(new_leader, Duration::from_secs(15)).await;
    println!(
        "catch-up: restarted node {leader} has the leader's state {} ms after restart",
        restarted_at.elapsed().as_millis()
    );
    assert!(state.topic_by_name("orders").is_some());
    assert!(state.topic_by_name("payments").is_some());

    // Full cluster restart: SIGTERM all three, start all three, same metadata.
    for id in 1..=3 {
        cluster.terminate(id);
    }
    let before = state;
    let restarted_at = Instant::now();
    for id in 1..=3 {
        cluster.start(id);
    }
    let leader = eventually(
        "leader after full restart",
        Duration::from_secs(20),
        async || cluster.agreed_leader().await,
    )
    .await;
    let after = cluster.converged(leader, Duration::from_secs(10)).await;
    assert_eq!(after, before, "metadata survived a full cluster restart");
    println!(
        "full restart: leader {leader} elected and state identical on all three {} ms after restart",
        restarted_at.elapsed().as_millis()
    );
    let outcome = cluster
        .write(
            leader,
            create_topic("after-restart"),
            Duration::from_secs(10),
        )
        .await;
    assert_created(&outcome);
    let state = cluster.converged(leader, Duration::from_secs(10)).await;
    assert_eq!(state.topics.len(), 3);
    println!("total {} ms", started.elapsed().as_millis());
    for id in 1..=3 {
        cluster.terminate(id);
    }
}
