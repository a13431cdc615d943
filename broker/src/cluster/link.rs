//! The broker's link to the metadata quorum: the embedded controller node, metadata writes (with
//! retries across elections), registration and heartbeats, and the published metadata view.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::state::{BrokerId, ClusterImport, Command, CommandError, Listener, Outcome};
use controller::{ControllerNode, NodeConfig, QuorumStatus, RaftTuning, WriteError, Written};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::remote::RemoteQuorum;
use super::view::ClusterView;
use crate::config::RuntimeConfig;
use crate::error::BrokerError;

/// Directory of the controller's log and snapshots inside the data dir.
pub const METADATA_DIR: &str = "__cluster_metadata";
/// File in the data dir holding the id that identifies this data dir to the controller.
const INCARNATION_FILE: &str = "broker.incarnation";
/// How long a metadata write may wait for a leader and a commit.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the metadata quorum is: embedded in this process (combined mode), or on other nodes
/// (`--roles broker`).
enum Quorum {
    Embedded(ControllerNode),
    Remote(Arc<RemoteQuorum>),
}

/// The link; shared by the broker and its background tasks.
pub struct ClusterLink {
    quorum: Quorum,
    broker_id: BrokerId,
    incarnation: Uuid,
    epoch: AtomicI64,
    listener: Listener,
    /// The partition replication endpoint registered beside the client listener.
    replication_listener: RwLock<Option<Listener>>,
    rack: Option<String>,
    view: RwLock<Arc<ClusterView>>,
    reconciled: watch::Sender<u64>,
    heartbeat_interval: Duration,
    stopping: AtomicBool,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("broker_id", &self.broker_id)
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish()
    }
}

impl ClusterLink {
    /// Starts the embedded controller node (its log and snapshots in `<data-dir>/__cluster_metadata`).
    pub async fn start(config: &RuntimeConfig) -> Result<Arc<Self>, BrokerError> {
        let cfg = &config.broker;
        let node_id = u64::try_from(cfg.node_id)
            .map_err(|_| BrokerError::InvalidConfig(format!("node id {} < 0", cfg.node_id)))?;
        let mut voters = config.voters.clone();
        // A single node's only voter is itself: nobody dials the address, it only has to be valid.
        for addr in voters.values_mut().filter(|a| a.is_empty()) {
            *addr = config.controller_listen.to_string();
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            BrokerError::MetadataIo(format!("create data dir {}: {e}", cfg.data_dir.display()))
        })?;
        let incarnation = load_incarnation(&cfg.data_dir)?;
        let quorum = if config.roles.controller {
            Quorum::Embedded(
                ControllerNode::start(controller_config(config, node_id, voters))
                    .await
                    .map_err(|e| BrokerError::ControllerUnavailable(e.to_string()))?,
            )
        } else {
            Quorum::Remote(RemoteQuorum::start(voters))
        };
        let link = Self {
            quorum,
            broker_id: cfg.node_id,
            incarnation,
            epoch: AtomicI64::new(-1),
            listener: Listener {
                name: "PLAINTEXT".into(),
                host: config.advertised_host.clone(),
                port: u16::try_from(config.advertised_port).unwrap_or_default(),
            },
            replication_listener: RwLock::new(None),
            rack: cfg.rack.clone(),
            view: RwLock::new(Arc::new(ClusterView::default())),
            reconciled: watch::Sender::new(0),
            heartbeat_interval: Duration::from_millis(cfg.broker_heartbeat_interval_ms),
            stopping: AtomicBool::new(false),
        };
        let index = link.applied_index();
        let view = link.read_state(|st| ClusterView::from_state(st, index));
        *link.view.write() = Arc::new(view);
        Ok(Arc::new(link))
    }

    /// Sets the partition replication endpoint registered with the quorum (before `register`).
    pub fn set_replication_endpoint(&self, host: String, port: u16) {
        *self.replication_listener.write() = Some(Listener {
            name: super::view::REPLICATION_LISTENER.into(),
            host,
            port,
        });
    }

    /// This broker's id.
    pub fn broker_id(&self) -> BrokerId {
        self.broker_id
    }

    /// The broker epoch of the current registration (-1 before it).
    pub fn broker_epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current metadata view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().clone()
    }

    /// The active controller's id, as this node knows it.
    pub fn controller_id(&self) -> Option<i32> {
        self.quorum_status()
            .current_leader
            .and_then(|id| i32::try_from(id).ok())
    }

    /// The controller id clients are told (Metadata, DescribeCluster): the active controller when it
    /// is a live broker (combined mode), else the lowest-id live broker, as KRaft brokers do.
    pub fn reported_controller_id(&self) -> i32 {
        let view = self.view();
        self.controller_id()
            .filter(|id| view.is_live(*id))
            .or_else(|| view.live_brokers().next().map(|b| b.id))
            .unwrap_or(-1)
    }

    /// Whether this broker runs the cluster-wide chores (the object store metadata copy, deleting
    /// deleted topics' objects): the broker reported as controller, so exactly one live broker.
    pub fn runs_cluster_chores(&self) -> bool {
        self.reported_controller_id() == self.broker_id
    }

    /// This node's view of the quorum (a broker-only node: the last one a controller gave).
    pub fn quorum_status(&self) -> QuorumStatus {
        match &self.quorum {
            Quorum::Embedded(node) => node.status(),
            Quorum::Remote(remote) => remote.status().unwrap_or_else(|| QuorumStatus {
                node_id: u64::try_from(self.broker_id).unwrap_or_default(),
                role: "Observer".into(),
                current_leader: None,
                term: 0,
                last_log_index: None,
                committed: None,
                last_applied: None,
                voters: Default::default(),
                matched: None,
            }),
        }
    }

    /// The active controller's view of the quorum, with each voter's replication progress.
    pub async fn leader_status(&self) -> Result<QuorumStatus, String> {
        match &self.quorum {
            Quorum::Embedded(node) => node.leader_status(Duration::from_secs(3)).await,
            Quorum::Remote(remote) => remote.leader_status().await,
        }
    }

    /// Index of the last metadata log entry this node has (applied, or followed).
    pub fn applied_index(&self) -> u64 {
        match &self.quorum {
            Quorum::Embedded(node) => node.state().last_applied().map_or(0, |l| l.index),
            Quorum::Remote(remote) => remote.applied_index(),
        }
    }

    /// The applied metadata state, read in place.
    pub fn read_state<T>(&self, f: impl FnOnce(&controller::MetadataState) -> T) -> T {
        match &self.quorum {
            Quorum::Embedded(node) => node.state().read(f),
            Quorum::Remote(remote) => remote.read(f),
        }
    }

    /// Watches the applied (or followed) metadata index.
    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        match &self.quorum {
            Quorum::Embedded(node) => node.state().subscribe(),
            Quorum::Remote(remote) => remote.subscribe(),
        }
    }

    async fn write_once(&self, command: Command, timeout: Duration) -> Result<Written, WriteError> {
        match &self.quorum {
            Quorum::Embedded(node) => node.write(command, timeout).await,
            Quorum::Remote(remote) => {
                match tokio::time::timeout(timeout, remote.write(command)).await {
                    Ok(r) => r,
                    Err(_) => Err(WriteError::Unavailable("no commit in time".into())),
                }
            }
        }
    }

    /// Makes `view` the one handlers see, after the broker acted on it.
    pub fn publish(&self, view: ClusterView) {
        let index = view.index;
        *self.view.write() = Arc::new(view);
        self.reconciled.send_replace(index);
    }

    /// Proposes `command` and waits for its commit, retrying while there is no leader (elections)
    /// until the write timeout.
    pub async fn propose(&self, command: Command) -> Result<Written, BrokerError> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut delay = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match self.write_once(command.clone(), left).await {
                Ok(w) => return Ok(w),
                Err(e) => e,
            };
            match err {
                WriteError::Indeterminate { .. } => {
                    return Err(BrokerError::ControllerUnavailable(format!(
                        "{command}: {err}"
                    )))
                }
                e if e.is_retriable() && Instant::now() + delay < deadline => {
                    tracing::debug!(command = %command, error = %e, "metadata write not committed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                e => {
                    return Err(BrokerError::ControllerUnavailable(format!(
                        "{command}: {e}"
                    )))
                }
            }
        }
    }

    /// Proposes `command`, waits until this broker acted on it (its view includes the write), and
    /// returns the command's outcome.
    pub async fn write(&self, command: Command) -> Result<Outcome, BrokerError> {
        let written = self.propose(command).await?;
        self.wait_reconciled(written.index).await?;
        written.response.map_err(command_error)
    }

    /// Records that the published view is still right at log index `index` (the entries after
    /// the view's own index changed nothing it shows: broker heartbeats).
    pub fn mark_reconciled(&self, index: u64) {
        self.reconciled.send_if_modified(|at| {
            let newer = index > *at;
            if newer {
                *at = index;
            }
            newer
        });
    }

    /// The log index the published view reflects (see [`ClusterLink::mark_reconciled`]).
    pub fn reconciled_index(&self) -> u64 {
        *self.reconciled.borrow()
    }

    /// A receiver that changes whenever a new view is published.
    pub fn subscribe_reconciled(&self) -> watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    /// Waits until the published view reflects log index `index`.
    pub async fn wait_reconciled(&self, index: u64) -> Result<(), BrokerError> {
        wait_for_index(self.reconciled.subscribe(), index).await
    }

    /// Waits until the local state machine applied (or a broker-only node followed) log index `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), BrokerError> {
        wait_for_index(self.subscribe_applied(), index).await
    }

    /// Registers this broker, retrying until the quorum answers and any live registration of an
    /// earlier process with another data dir has expired. Returns the log index of the registration.
    pub async fn register(&self, cancel: &CancellationToken) -> Result<u64, BrokerError> {
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let command = Command::RegisterBroker {
                broker_id: self.broker_id,
                incarnation_id: self.incarnation,
                listeners: std::iter::once(self.listener.clone())
                    .chain(self.replication_listener.read().clone())
                    .collect(),
                rack: self.rack.clone(),
                now_ms: now_ms(),
            };
            let outcome = match self.propose(command).await {
                Ok(w) => match w.response {
                    Ok(Outcome::BrokerRegistered { broker_epoch }) => {
                        self.epoch.store(broker_epoch, Ordering::Release);
                        tracing::info!(
                            broker_id = self.broker_id,
                            broker_epoch,
                            "registered with the metadata quorum"
                        );
                        return Ok(w.index);
                    }
                    Ok(other) => format!("unexpected outcome {other:?}"),
                    Err(e) if e.is_retriable() => e.to_string(),
                    Err(e) => return Err(command_error(e)),
                },
                Err(e) => e.to_string(),
            };
            if attempts == 1 || attempts.is_multiple_of(20) {
                tracing::warn!(broker_id = self.broker_id, reason = %outcome, "cannot register with the metadata quorum yet; retrying");
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(BrokerError::ShuttingDown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Sets the cluster id (importing `import` into a cluster that has none yet); returns the id
    /// in effect and the log index.
    pub async fn init_cluster(
        &self,
        cluster_id: String,
        import: Option<ClusterImport>,
    ) -> Result<(String, bool, u64), BrokerError> {
        let w = self
            .propose(Command::InitCluster { cluster_id, import })
            .await?;
        match w.response.map_err(command_error)? {
            Outcome::ClusterInitialized { cluster_id, newly } => Ok((cluster_id, newly, w.index)),
            other => Err(BrokerError::ControllerUnavailable(format!(
                "unexpected init outcome {other:?}"
            ))),
        }
    }

    /// Heartbeats until `cancel`: unfences this broker when the controller fenced it while it was
    /// alive (a pause, a partition), and registers again if its registration was replaced.
    pub async fn run_heartbeats(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.heartbeat_interval) => {}
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let epoch = self.broker_epoch();
            let beat = Command::BrokerHeartbeat {
                broker_id: self.broker_id,
                broker_epoch: epoch,
                now_ms: now_ms(),
            };
            // One attempt, bounded by the interval: a heartbeat that waited out an election would
            // arrive with a stale timestamp; the next one carries a fresh one.
            let attempt = self.heartbeat_interval.max(Duration::from_millis(500));
            match self.write_once(beat, attempt).await.map(|w| w.response) {
                Ok(Ok(Outcome::HeartbeatAccepted { fenced: true })) => {
                    let unfence = Command::UnfenceBroker {
                        broker_id: self.broker_id,
                        broker_epoch: epoch,
                    };
                    match self.propose(unfence).await.map(|w| w.response) {
                        Ok(Ok(_)) => tracing::info!(
                            broker_id = self.broker_id,
                            "unfenced after heartbeats resumed"
                        ),
                        Ok(Err(e)) => tracing::warn!(error = %e, "unfence rejected"),
                        Err(e) => tracing::warn!(error = %e, "unfence not committed"),
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(
                    e @ (CommandError::StaleBrokerEpoch { .. } | CommandError::UnknownBroker(_)),
                )) => {
                    tracing::warn!(error = %e, "registration replaced; registering again");
                    if let Err(e) = self.register(&cancel).await {
                        tracing::warn!(error = %e, "registering again failed");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat rejected"),
                Err(e) => tracing::debug!(error = %e, "heartbeat not committed"),
            }
        }
    }

    /// Controlled shutdown: fences this broker so that clients stop being sent to it at once
    /// instead of after the session timeout. Best effort, bounded.
    pub async fn fence_self(&self) {
        self.stopping.store(true, Ordering::Release);
        let epoch = self.broker_epoch();
        if epoch < 0 {
            return;
        }
        let fence = Command::FenceBroker {
            broker_id: self.broker_id,
            broker_epoch: epoch,
        };
        let ctx = tokio::time::timeout(
            Duration::from_secs(2),
            self.write_once(fence, Duration::from_secs(2)),
        );
        match ctx.await {
            Ok(Ok(_)) => tracing::info!(broker_id = self.broker_id, "fenced for shutdown"),
            Ok(Err(e)) => tracing::info!(error = %e, "could not fence for shutdown"),
            Err(_) => tracing::info!("could not fence for shutdown in time"),
        }
    }

    /// Stops the embedded controller node (or stops following the remote one).
    pub async fn shutdown(&self) {
        match &self.quorum {
            Quorum::Embedded(node) => {
                if let Err(e) = node.shutdown().await {
                    tracing::warn!(error = %e, "controller node did not stop cleanly");
                }
            }
            Quorum::Remote(remote) => remote.shutdown().await,
        }
    }
}

/// Waits (up to the write timeout) until the index `rx` watches reaches `index`.
async fn wait_for_index(mut rx: watch::Receiver<u64>, index: u64) -> Result<(), BrokerError> {
    tokio::time::timeout(WRITE_TIMEOUT, rx.wait_for(|i| *i >= index))
        .await
        .map_err(|_| BrokerError::RequestTimedOut)?
        .map_err(|_| BrokerError::ShuttingDown)?;
    Ok(())
}

/// The controller node configuration of a node with the controller role.
pub fn controller_config(
    config: &RuntimeConfig,
    node_id: u64,
    voters: std::collections::BTreeMap<u64, String>,
) -> NodeConfig {
    NodeConfig {
        node_id,
        listen: config.controller_listen,
        voters,
        data_dir: config.broker.data_dir.join(METADATA_DIR),
        raft: RaftTuning::default(),
        broker_session_timeout_ms: config.broker.broker_session_timeout_ms,
    }
}

/// The id that identifies this data dir's broker to the controller: generated once, kept across
/// restarts, so a restart after a crash re-registers at once while a second process with the same
/// node id and another data dir is refused until the first one's session expires.
fn load_incarnation(data_dir: &std::path::Path) -> Result<Uuid, BrokerError> {
    let path = data_dir.join(INCARNATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim())
            .map_err(|e| BrokerError::MetadataIo(format!("{} is not valid: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            crate::metadata_store::write_atomically(
                data_dir,
                INCARNATION_FILE,
                id.to_string().as_bytes(),
            )?;
            Ok(id)
        }
        Err(e) => Err(BrokerError::MetadataIo(format!(
            "read {}: {e}",
            path.display()
        ))),
    }
}

/// Wall clock in ms (heartbeat and registration timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The broker error for a rejected metadata command.
pub fn command_error(e: CommandError) -> BrokerError {
    match e {
        CommandError::TopicAlreadyExists(name) => BrokerError::TopicAlreadyExists(name),
        CommandError::TopicIdAlreadyExists(id) => BrokerError::TopicAlreadyExists(id.to_string()),
        CommandError::UnknownTopicId(id) => BrokerError::UnknownTopicId(id),
        CommandError::UnknownPartition {
            topic_id,
            partition,
        } => BrokerError::UnknownTopicOrPartition(format!("{topic_id}-{partition}")),
        CommandError::InvalidTopicName { .. } => BrokerError::InvalidTopic(e.to_string()),
        CommandError::InvalidPartitions(m) => BrokerError::InvalidPartitions(m),
        CommandError::InvalidReplicaAssignment(_) | CommandError::UnknownBroker(_) => {
            BrokerError::InvalidReplicaAssignment(e.to_string())
        }
        CommandError::InvalidConfig(m) => BrokerError::InvalidConfig(m),
        other => BrokerError::ControllerUnavailable(other.to_string()),
    }
}
