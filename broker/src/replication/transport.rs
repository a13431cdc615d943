//! The replication transport (RFC 0006): one TCP connection per ordered broker pair carries every
//! Raft message of every partition group between them, plus Strata's coalesced heartbeats.
//!
//! Client side ([`Transport`]): a connection to a peer is dialled lazily, re-dialled with backoff
//! after a failure, and multiplexed: requests carry ids, a reader task routes responses back, and
//! a writer task writes every frame queued meanwhile with one write (the batching that keeps
//! thousands of groups cheap). Openraft's `RaftNetworkV2` for a (group, peer) pair
//! ([`GroupClient`]) sends over it.
//!
//! Server side ([`serve`]): each accepted connection reads frames and hands each request to a
//! [`Dispatch`] (the replication runtime), which answers it; responses go back over the same
//! connection through its writer. A frame that does not decode closes that connection only.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::snapshot::SnapshotData;
use super::types::{GroupId, PartitionRaftConfig, Snapshot, SnapshotMeta, Vote};
use super::wire::{self, Frame, Kind, WireError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Frames queued per connection before senders wait.
const QUEUE: usize = 4096;
/// Bytes one write gathers at most.
const WRITE_BATCH: usize = 4 << 20;

/// Answers requests that arrive over the transport.
pub trait Dispatch: Send + Sync + 'static {
    /// Handles one request frame; returns the response body (a postcard `Result`).
    fn handle(self: Arc<Self>, frame: Frame) -> BoxFuture<'static, Bytes>;
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection (or it broke); retry after a backoff.
    #[error("node {node} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        node: u64,
        /// Why.
        reason: String,
    },
    /// No response in time.
    #[error("node {node} did not answer within {after:?}")]
    Timeout {
        /// The peer.
        node: u64,
        /// The timeout.
        after: Duration,
    },
    /// The peer answered with an error.
    #[error("node {node} refused: {reason}")]
    Remote {
        /// The peer.
        node: u64,
        /// Its message.
        reason: String,
    },
    /// The message could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
}

struct ConnState {
    writer: Option<mpsc::Sender<Bytes>>,
    generation: u64,
    backoff: Duration,
    next_attempt: Option<Instant>,
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Bytes>>>;

/// One peer's connection.
struct Peer {
    from: u64,
    id: u64,
    addr: String,
    state: tokio::sync::Mutex<ConnState>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
}

impl Peer {
    async fn writer(&self) -> Result<(mpsc::Sender<Bytes>, u64), TransportError> {
        let mut st = self.state.lock().await;
        if let Some(w) = st.writer.as_ref().filter(|w| !w.is_closed()) {
            return Ok((w.clone(), st.generation));
        }
        let unreachable = |reason: String| TransportError::Unreachable {
            node: self.id,
            reason,
        };
        if let Some(at) = st.next_attempt {
            if Instant::now() < at {
                return Err(unreachable(format!(
                    "{} (next dial in {:?})",
                    self.addr,
                    at - Instant::now()
                )));
            }
        }
        let dialled = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await;
        let stream = match dialled {
            Ok(Ok(s)) => s,
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                };
                if st.backoff == MIN_BACKOFF {
                    tracing::warn!(from = self.from, to = self.id, addr = %self.addr, reason = %reason, "cannot reach replication peer; retrying with backoff");
                }
                st.next_attempt = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
                return Err(unreachable(format!("{}: {reason}", self.addr)));
            }
        };
        let _ = stream.set_nodelay(true);
        st.generation += 1;
        st.backoff = MIN_BACKOFF;
        st.next_attempt = None;
        let (tx, rx) = mpsc::channel(QUEUE);
        st.writer = Some(tx.clone());
        let (rd, wr) = stream.into_split();
        tokio::spawn(write_loop(wr, rx));
        tokio::spawn(read_responses(rd, self.pending.clone(), self.id));
        tracing::info!(from = self.from, to = self.id, addr = %self.addr, "connected to replication peer");
        Ok((tx, st.generation))
    }

    async fn disconnect(&self, generation: u64) {
        let mut st = self.state.lock().await;
        if st.generation == generation && st.writer.take().is_some() {
            tracing::info!(from = self.from, to = self.id, addr = %self.addr, "replication connection lost");
            st.next_attempt = Some(Instant::now() + st.backoff);
            st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sends a request and waits (up to `ttl`) for its response body.
    async fn request(
        &self,
        kind: Kind,
        body: &[u8],
        ttl: Duration,
    ) -> Result<Bytes, TransportError> {
        let (writer, generation) = self.writer().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let mut frame = BytesMut::new();
        Frame::encode(kind, false, id, body, &mut frame);
        if writer.send(frame.freeze()).await.is_err() {
            self.pending.lock().remove(&id);
            self.disconnect(generation).await;
            return Err(TransportError::Unreachable {
                node: self.id,
                reason: "connection closed".into(),
            });
        }
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => {
                self.disconnect(generation).await;
                Err(TransportError::Unreachable {
                    node: self.id,
                    reason: "connection lost before the response".into(),
                })
            }
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(TransportError::Timeout {
                    node: self.id,
                    after: ttl,
                })
            }
        }
    }
}

/// Writes queued frames, gathering every frame already queued into one write.
async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            tracing::debug!(error = %e, "replication write failed");
            return;
        }
        buf.clear();
    }
}

/// Reads frames from `rd` until it fails or closes, handing each to `on_frame`.
async fn read_frames(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut on_frame: impl FnMut(Frame),
) -> Result<(), String> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match Frame::decode(&mut buf) {
                Ok(Some(frame)) => on_frame(frame),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn read_responses(rd: tokio::net::tcp::OwnedReadHalf, pending: Arc<Pending>, peer: u64) {
    let result = read_frames(rd, |frame| {
        if !frame.response {
            return;
        }
        if let Some(tx) = pending.lock().remove(&frame.request_id) {
            let _ = tx.send(frame.body);
        }
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(peer, error = %e, "replication connection closed");
    }
    // Wake every waiter: their responses will not come on this connection.
    pending.lock().clear();
}

/// The client side: connections to every peer.
pub struct Transport {
    node_id: u64,
    addresses: parking_lot::RwLock<BTreeMap<u64, String>>,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Transport {
    /// A transport for node `node_id` with no known peers yet.
    pub fn new(node_id: u64) -> Self {
        Self {
            node_id,
            addresses: parking_lot::RwLock::new(BTreeMap::new()),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Replaces the peers' replication endpoints (from the cluster metadata).
    pub fn set_addresses(&self, addresses: BTreeMap<u64, String>) {
        *self.addresses.write() = addresses;
    }

    /// The known peers.
    pub fn peers(&self) -> Vec<u64> {
        self.addresses
            .read()
            .keys()
            .copied()
            .filter(|id| *id != self.node_id)
            .collect()
    }

    fn peer(&self, id: u64) -> Result<Arc<Peer>, TransportError> {
        let addr =
            self.addresses
                .read()
                .get(&id)
                .cloned()
                .ok_or_else(|| TransportError::Unreachable {
                    node: id,
                    reason: "no replication endpoint known".into(),
                })?;
        let mut peers = self.peers.lock();
        match peers.get(&id) {
            Some(p) if p.addr == addr => Ok(p.clone()),
            _ => {
                let p = Arc::new(Peer {
                    from: self.node_id,
                    id,
                    addr,
                    state: tokio::sync::Mutex::new(ConnState {
                        writer: None,
                        generation: 0,
                        backoff: MIN_BACKOFF,
                        next_attempt: None,
                    }),
                    pending: Arc::new(Mutex::new(HashMap::new())),
                    next_id: AtomicU64::new(1),
                });
                peers.insert(id, p.clone());
                Ok(p)
            }
        }
    }

    /// Sends a request to `node` and decodes its `Result<T, String>` response.
    pub async fn call<T: DeserializeOwned>(
        &self,
        node: u64,
        kind: Kind,
        body: &[u8],
        ttl: Duration,
    ) -> Result<T, TransportError> {
        let peer = self.peer(node)?;
        let resp = peer.request(kind, body, ttl).await?;
        let r: Result<T, String> = wire::from_bytes(&resp)?;
        r.map_err(|reason| TransportError::Remote { node, reason })
    }
}

/// openraft's network factory for one group.
#[derive(Clone)]
pub struct GroupNetwork {
    group: GroupId,
    transport: Arc<Transport>,
}

impl GroupNetwork {
    /// The network of `group` over `transport`.
    pub fn new(group: GroupId, transport: Arc<Transport>) -> Self {
        Self { group, transport }
    }
}

impl RaftNetworkFactory<PartitionRaftConfig> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, _node: &openraft::EmptyNode) -> GroupClient {
        GroupClient {
            group: self.group,
            target,
            transport: self.transport.clone(),
        }
    }
}

/// openraft's client of one peer in one group.
pub struct GroupClient {
    group: GroupId,
    target: u64,
    transport: Arc<Transport>,
}

fn rpc_error(
    e: TransportError,
    action: RPCTypes,
    from: u64,
    target: u64,
) -> RPCError<PartitionRaftConfig> {
    match e {
        TransportError::Timeout { after, .. } => RPCError::Timeout(Timeout {
            action,
            id: from,
            target,
            timeout: after,
        }),
        TransportError::Wire(w) => RPCError::Network(NetworkError::new(&w)),
        other => RPCError::Unreachable(Unreachable::new(&other)),
    }
}

impl GroupClient {
    async fn call<T: DeserializeOwned>(
        &self,
        kind: Kind,
        body: &[u8],
        ttl: Duration,
        action: RPCTypes,
    ) -> Result<T, RPCError<PartitionRaftConfig>> {
        self.transport
            .call(self.target, kind, body, ttl)
            .await
            .map_err(|e| rpc_error(e, action, self.transport.node_id, self.target))
    }
}

impl RaftNetworkV2<PartitionRaftConfig> for GroupClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: wire::AppendRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaftConfig>, RPCError<PartitionRaftConfig>> {
        let body = wire::encode_append(self.group, &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(
            Kind::Append,
            &body,
            option.soft_ttl(),
            RPCTypes::AppendEntries,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<PartitionRaftConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaftConfig>, RPCError<PartitionRaftConfig>> {
        let body = wire::encode_group_request(self.group, &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(Kind::Vote, &body, option.soft_ttl(), RPCTypes::Vote)
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<PartitionRaftConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaftConfig>, RPCError<PartitionRaftConfig>> {
        let body = wire::encode_group_request(self.group, &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(Kind::PreVote, &body, option.soft_ttl(), RPCTypes::Vote)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaftConfig>, StreamingError<PartitionRaftConfig>> {
        let request: (Vote, SnapshotMeta, SnapshotData) = (vote, snapshot.meta, snapshot.snapshot);
        let json = serde_json::to_vec(&request)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut body = BytesMut::new();
        wire::put_group(&mut body, self.group);
        body.extend_from_slice(&json);
        let call = self
            .transport
            .call::<SnapshotResponse<PartitionRaftConfig>>(
                self.target,
                Kind::Snapshot,
                &body,
                option.hard_ttl(),
            );
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r,
        };
        result.map_err(|e| {
            match rpc_error(
                e,
                RPCTypes::InstallSnapshot,
                self.transport.node_id,
                self.target,
            ) {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => {
                    StreamingError::Unreachable(Unreachable::from_string(r))
                }
            }
        })
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<PartitionRaftConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<PartitionRaftConfig>, RPCError<PartitionRaftConfig>> {
        let body = wire::encode_group_request(self.group, &req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.call(
            Kind::TransferLeader,
            &body,
            option.soft_ttl(),
            RPCTypes::TransferLeader,
        )
        .await
    }
}

/// Accepts replication connections until `cancel`, handing each request to `dispatch`.
pub async fn serve(listener: TcpListener, dispatch: Arc<dyn Dispatch>, cancel: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "replication accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let dispatch = dispatch.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let (rd, wr) = stream.into_split();
            let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
            tokio::spawn(write_loop(wr, rx));
            let read = read_frames(rd, |frame| {
                if frame.response {
                    return;
                }
                let (kind, id) = (frame.kind, frame.request_id);
                let tx = tx.clone();
                let fut = dispatch.clone().handle(frame);
                tokio::spawn(async move {
                    let body = fut.await;
                    let mut out = BytesMut::new();
                    Frame::encode(kind, true, id, &body, &mut out);
                    let _ = tx.send(out.freeze()).await;
                });
            });
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = read => if let Err(e) = r {
                    tracing::warn!(%peer, error = %e, "closing a replication connection after a bad frame");
                },
            }
        });
    }
}
