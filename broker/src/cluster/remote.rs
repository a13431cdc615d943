//! A broker-only node's view of a metadata quorum it is not part of (`--roles broker`): writes go
//! to the controllers over their RPC port (a follower forwards to the leader), and the metadata is
//! followed with a long poll (`follow_state`) of the leader, or of any voter that answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use controller::state::{Command, MetadataState};
use controller::{AdminClient, QuorumStatus, WriteError, Written};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one `follow_state` long poll may wait for news.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// Timeout of one RPC (connect, status, write) to a controller.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The followed metadata and the connections to the voters.
pub struct RemoteQuorum {
    voters: BTreeMap<u64, String>,
    clients: tokio::sync::Mutex<BTreeMap<u64, Arc<AdminClient>>>,
    state: RwLock<(u64, Arc<MetadataState>)>,
    applied: watch::Sender<u64>,
    status: RwLock<Option<QuorumStatus>>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RemoteQuorum {
    /// Starts following the quorum of `voters`.
    pub fn start(voters: BTreeMap<u64, String>) -> Arc<Self> {
        let this = Arc::new(Self {
            voters,
            clients: tokio::sync::Mutex::new(BTreeMap::new()),
            state: RwLock::new((0, Arc::new(MetadataState::default()))),
            applied: watch::Sender::new(0),
            status: RwLock::new(None),
            cancel: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(this.clone().follow());
        *this.task.lock() = Some(task);
        this
    }

    async fn client(&self, id: u64) -> Result<Arc<AdminClient>, String> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(&id) {
            return Ok(c.clone());
        }
        let addr = self
            .voters
            .get(&id)
            .ok_or_else(|| format!("controller {id} is not a voter"))?;
        let c = Arc::new(
            AdminClient::connect(addr, RPC_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?,
        );
        clients.insert(id, c.clone());
        Ok(c)
    }

    async fn drop_client(&self, id: u64) {
        self.clients.lock().await.remove(&id);
    }

    /// Voters in the order to try: the known leader first.
    fn candidates(&self) -> Vec<u64> {
        let leader = self.status.read().as_ref().and_then(|s| s.current_leader);
        let mut ids: Vec<u64> = self.voters.keys().copied().collect();
        if let Some(l) = leader {
            ids.retain(|i| *i != l);
            ids.insert(0, l);
        }
        ids
    }

    async fn follow(self: Arc<Self>) {
        let mut turn = 0usize;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let ids = self.candidates();
            let id = ids[turn % ids.len()];
            let after = self.state.read().0;
            let polled = async {
                let client = self.client(id).await?;
                let status = client.status().await.map_err(|e| e.to_string())?;
                let leader = status.current_leader;
                *self.status.write() = Some(status);
                if leader.is_some_and(|l| l != id) {
                    // Follow the leader itself: it is never behind.
                    return Ok(false);
                }
                let (index, state) = client
                    .follow_state(after, POLL_WAIT)
                    .await
                    .map_err(|e| e.to_string())?;
                if index > after {
                    *self.state.write() = (index, Arc::new(state));
                    self.applied.send_replace(index);
                }
                Ok::<bool, String>(true)
            };
            let outcome = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = polled => r,
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => turn = 0,
                Err(e) => {
                    tracing::debug!(controller = id, error = %e, "cannot follow the metadata at this controller");
                    self.drop_client(id).await;
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Proposes `command` at the leader (or a voter that forwards it).
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        let mut last = WriteError::Unavailable("no controller reachable".into());
        for id in self.candidates() {
            let client = match self.client(id).await {
                Ok(c) => c,
                Err(e) => {
                    last = WriteError::Unavailable(e);
                    continue;
                }
            };
            match client.write_indexed(command.clone()).await {
                Ok(w) => return Ok(w),
                Err(controller::AdminError::Write { source, .. }) => {
                    if !source.is_retriable() {
                        return Err(source);
                    }
                    last = source;
                }
                Err(e) => {
                    self.drop_client(id).await;
                    last = WriteError::Unavailable(e.to_string());
                }
            }
        }
        Err(last)
    }

    /// Reads the followed metadata.
    pub fn read<T>(&self, f: impl FnOnce(&MetadataState) -> T) -> T {
        let state = self.state.read().1.clone();
        f(&state)
    }

    /// Index of the followed metadata.
    pub fn applied_index(&self) -> u64 {
        self.state.read().0
    }

    /// Watches the followed index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The last status a controller gave.
    pub fn status(&self) -> Option<QuorumStatus> {
        self.status.read().clone()
    }

    /// The leader's view of the quorum.
    pub async fn leader_status(&self) -> Result<QuorumStatus, String> {
        let leader = self
            .status()
            .and_then(|s| s.current_leader)
            .ok_or("no controller leader is known")?;
        let client = self.client(leader).await?;
        client.status().await.map_err(|e| e.to_string())
    }

    /// Stops following.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}
