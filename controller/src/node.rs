//! One controller node of the metadata quorum as a running service: the on-disk stores, the
//! `openraft::Raft` over them, and the [`crate::network`] server on its listen address.
//!
//! Start-up order: validate the config, bind the listen address (fail fast on a taken port), open
//! the stores (replaying the log; the state comes from the last snapshot), start Raft, serve RPCs,
//! and then initialize the cluster if this is the first start of the cluster: only the voter with
//! the lowest id does it, and only when its log and vote are empty (`Raft::is_initialized`). The
//! other voters wait to hear from a leader. Initializing twice is harmless (openraft refuses with
//! `NotAllowed`, logged and ignored), but a lowest-id voter that lost its whole data directory
//! would propose the initial membership again; it can only win an election if the others are
//! also empty, since its log is shorter than theirs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::errors::InitializeError;
use openraft::errors::RaftError;
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::network::local_status;
use crate::network::run_server;
use crate::network::write_or_forward;
use crate::network::Peers;
use crate::network::QuorumStatus;
use crate::network::RpcServer;
use crate::network::WriteError;
use crate::network::Written;
use crate::state::Command;
use crate::store::MetadataRaft;
use crate::store::StateMachineStore;

/// Raft timing of the metadata quorum.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears nothing for a random time in [min, max) starts an election.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Timeout of sending (and installing) a whole snapshot.
    pub snapshot_timeout_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot (for followers slightly behind), the rest purged.
    pub keep_entries_after_snapshot: u64,
}

impl Default for RaftTuning {
    /// 100 ms heartbeats and 500-1000 ms election timeouts: a lost leader is replaced in about a
    /// second, and a few slow heartbeats on a busy machine do not cause elections.
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_timeout_ms: 10_000,
            snapshot_every_entries: 5000,
            keep_entries_after_snapshot: 1000,
        }
    }
}

/// Configuration of one controller node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id; must be one of `voters`.
    pub node_id: u64,
    /// Address to serve the controller RPCs on.
    pub listen: SocketAddr,
    /// Every voter of the quorum: id -> `host:port` the others dial.
    pub voters: BTreeMap<u64, String>,
    /// Directory of this node's log and state machine stores.
    pub data_dir: PathBuf,
    /// Raft timing.
    pub raft: RaftTuning,
    /// A broker silent for longer than this is fenced by the leader (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: i64,
}

/// Kafka's default `broker.session.timeout.ms`.
pub const DEFAULT_BROKER_SESSION_TIMEOUT_MS: i64 = 9_000;

impl NodeConfig {
    /// Check the configuration once, with a message naming what is wrong.
    pub fn validate(&self) -> Result<(), ControllerError> {
        if self.broker_session_timeout_ms < 100 {
            return Err(ControllerError::Config(format!(
                "broker session timeout {} ms is below 100 ms",
                self.broker_session_timeout_ms
            )));
        }
        if self.voters.is_empty() {
            return Err(ControllerError::Config("no voters configured".into()));
        }
        if !self.voters.contains_key(&self.node_id) {
            let ids: Vec<String> = self.voters.keys().map(u64::to_string).collect();
            return Err(ControllerError::Config(format!(
                "node id {} is not one of the voters ({})",
                self.node_id,
                ids.join(", ")
            )));
        }
        if let Some((id, _)) = self.voters.iter().find(|(_, addr)| addr.is_empty()) {
            return Err(ControllerError::Config(format!(
                "voter {id} has an empty address"
            )));
        }
        Ok(())
    }

    fn raft_config(&self) -> Result<openraft::Config, ControllerError> {
        openraft::Config {
            cluster_name: "strata-metadata".into(),
            heartbeat_interval: self.raft.heartbeat_interval_ms,
            election_timeout_min: self.raft.election_timeout_min_ms,
            election_timeout_max: self.raft.election_timeout_max_ms,
            install_snapshot_timeout: self.raft.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                self.raft.snapshot_every_entries,
            ),
            max_in_snapshot_log_to_keep: self.raft.keep_entries_after_snapshot,
            // Purge as soon as a snapshot allows: purges happen once per snapshot anyway.
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControllerError::Config(format!("raft timing: {e}")))
    }
}

/// Why a controller node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The configuration is invalid.
    #[error("invalid controller configuration: {0}")]
    Config(String),
    /// The log or state machine store could not be opened.
    #[error("cannot open metadata stores in {dir}: {source}", dir = dir.display())]
    Storage {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// openraft failed to start, initialize or stop.
    #[error("raft {action} failed: {message}")]
    Raft {
        /// What was being done.
        action: &'static str,
        /// openraft's error.
        message: String,
    },
}

/// A running controller node.
pub struct ControllerNode {
    node_id: u64,
    raft: MetadataRaft,
    sm: StateMachineStore,
    peers: Peers,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl ControllerNode {
    /// Open the stores, start Raft and the RPC server, and initialize the cluster if this node is
    /// the lowest-id voter and has never been initialized.
    pub async fn start(config: NodeConfig) -> Result<Self, ControllerError> {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ControllerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ControllerError::Bind {
                addr: config.listen,
                source,
            })?;
        let (log, sm) =
            crate::store::open(&config.data_dir).map_err(|source| ControllerError::Storage {
                dir: config.data_dir.clone(),
                source,
            })?;
        let peers = Peers::new(config.node_id);
        let raft = MetadataRaft::new(config.node_id, raft_config, peers.clone(), log, sm.clone())
            .await
            .map_err(|e| ControllerError::Raft {
                action: "start",
                message: e.to_string(),
            })?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run_server(
            listener,
            RpcServer {
                node_id: config.node_id,
                raft: raft.clone(),
                sm: sm.clone(),
                peers: peers.clone(),
            },
            shutdown.clone(),
        ));
        let sessions = tokio::spawn(crate::sessions::run_session_timer(
            config.node_id,
            raft.clone(),
            sm.clone(),
            config.broker_session_timeout_ms,
            shutdown.clone(),
        ));
        let node = Self {
            node_id: config.node_id,
            raft,
            sm,
            peers,
            local_addr,
            shutdown,
            tasks: parking_lot::Mutex::new(vec![server, sessions]),
        };
        tracing::info!(node_id = node.node_id, listen = %local_addr, voters = ?config.voters, "controller node started");
        if let Err(e) = node.initialize_once(&config.voters).await {
            node.shutdown().await.ok();
            return Err(e);
        }
        Ok(node)
    }

    async fn initialize_once(&self, voters: &BTreeMap<u64, String>) -> Result<(), ControllerError> {
        let lowest = voters.keys().next().copied();
        if lowest != Some(self.node_id) {
            return Ok(());
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ControllerError::Raft {
                action: "state check",
                message: e.to_string(),
            })?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(node_id = self.node_id, "initialized the metadata quorum");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                tracing::info!(node_id = self.node_id, reason = %e, "metadata quorum already initialized");
                Ok(())
            }
            Err(e) => Err(ControllerError::Raft {
                action: "initialize",
                message: e.to_string(),
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The address the RPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Raft handle (metrics, `client_write` on the leader).
    pub fn raft(&self) -> &MetadataRaft {
        &self.raft
    }

    /// The applied metadata.
    pub fn state(&self) -> &StateMachineStore {
        &self.sm
    }

    /// Propose `command` (forwarded once to the leader if this node is a follower) and wait until
    /// it is committed, or until `timeout`.
    pub async fn write(&self, command: Command, timeout: Duration) -> Result<Written, WriteError> {
        let ctx = crate::network::context(timeout);
        match tokio::time::timeout(
            timeout,
            write_or_forward(self.node_id, &self.raft, &self.peers, ctx, command, true),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(WriteError::Unavailable(format!(
                "no commit within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// This node's view of the quorum.
    pub fn status(&self) -> QuorumStatus {
        local_status(self.node_id, &self.raft)
    }

    /// The leader's view of the quorum (with replication progress): local if this node leads,
    /// else asked of the leader.
    pub async fn leader_status(&self, timeout: Duration) -> Result<QuorumStatus, String> {
        let local = self.status();
        if local.is_leader() {
            return Ok(local);
        }
        let Some(leader) = local.current_leader else {
            return Err("no controller leader is known".into());
        };
        let addr = local
            .voters
            .get(&leader)
            .cloned()
            .ok_or_else(|| format!("leader {leader} has no known address"))?;
        let (client, _) = self.peers.get(leader, &addr).client().await?;
        let status = client
            .status(crate::network::context(timeout))
            .await
            .map_err(|e| format!("status request to controller {leader} at {addr}: {e}"))?;
        Ok(status)
    }

    /// Stop serving RPCs and stop Raft. Every acknowledged write is already durable in the log.
    /// Calling it again is harmless.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "controller task failed");
            }
        }
        self.raft
            .shutdown()
            .await
            .map_err(|e| ControllerError::Raft {
                action: "shutdown",
                message: e.to_string(),
            })?;
        tracing::info!(node_id = self.node_id, "controller node stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: u64, voters: &[(u64, &str)]) -> NodeConfig {
        NodeConfig {
            node_id,
            listen: "127.0.0.1:0".parse().expect("addr"),
            voters: voters.iter().map(|(id, a)| (*id, a.to_string())).collect(),
            data_dir: PathBuf::from("unused"),
            raft: RaftTuning::default(),
            broker_session_timeout_ms: DEFAULT_BROKER_SESSION_TIMEOUT_MS,
        }
    }

    #[test]
    fn validate_names_the_problem() {
        assert!(config(1, &[(1, "h:1"), (2, "h:2")]).validate().is_ok());
        let e = config(3, &[(1, "h:1"), (2, "h:2")])
            .validate()
            .expect_err("not a voter");
        assert_eq!(
            e.to_string(),
            "invalid controller configuration: node id 3 is not one of the voters (1, 2)"
        );
        assert!(config(1, &[]).validate().is_err());
        assert!(config(1, &[(1, "")]).validate().is_err());
        let mut bad = config(1, &[(1, "h:1")]);
        bad.raft.election_timeout_min_ms = 50;
        assert!(
            bad.raft_config().is_err(),
            "election timeout below heartbeat"
        );
    }
}
