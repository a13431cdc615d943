//! Client side: one tarpc connection per peer, dialled lazily, re-dialled with backoff after a
//! failure, and openraft's `RaftNetworkV2` on top of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Timeout;
use openraft::errors::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::network::RPCTypes;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use tarpc::client::RpcError;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::context;
use super::transport;
use super::ControllerRpcClient;
use crate::store::Snapshot;
use crate::store::TypeConfig;
use crate::store::Vote;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The connections of one node to its peers: one [`Peer`] (one TCP connection) per peer id, shared
/// by openraft's replication streams and by forwarded writes. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    self_id: u64,
    peers: Arc<parking_lot::Mutex<BTreeMap<u64, Arc<Peer>>>>,
}

impl Peers {
    /// No connections yet; `self_id` is the local node (named in errors).
    pub fn new(self_id: u64) -> Self {
        Self {
            self_id,
            peers: Arc::default(),
        }
    }

    /// The connection to node `id` at `addr`; a new one if the address changed.
    pub fn get(&self, id: u64, addr: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock();
        match peers.get(&id) {
            Some(peer) if peer.addr == addr => peer.clone(),
            _ => {
                let peer = Arc::new(Peer::new(self.self_id, id, addr.to_string()));
                peers.insert(id, peer.clone());
                peer
            }
        }
    }
}

/// A lazily dialled, multiplexed connection to one peer.
pub struct Peer {
    self_id: u64,
    id: u64,
    addr: String,
    conn: tokio::sync::Mutex<ConnState>,
}

struct ConnState {
    client: Option<ControllerRpcClient>,
    /// Bumped on every new connection, so a failure seen on an old one does not drop a newer one.
    generation: u64,
    backoff: Duration,
    next_attempt: Option<Instant>,
}

impl Peer {
    fn new(self_id: u64, id: u64, addr: String) -> Self {
        Self {
            self_id,
            id,
            addr,
            conn: tokio::sync::Mutex::new(ConnState {
                client: None,
                generation: 0,
                backoff: MIN_BACKOFF,
                next_attempt: None,
            }),
        }
    }

    /// The peer's node id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer's controller address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The connected client and its generation, dialling if there is none and the backoff allows.
    pub async fn client(&self) -> Result<(ControllerRpcClient, u64), String> {
        let mut st = self.conn.lock().await;
        if let Some(client) = &st.client {
            return Ok((client.clone(), st.generation));
        }
        if let Some(at) = st.next_attempt {
            if Instant::now() < at {
                return Err(format!(
                    "node {} at {} is unreachable (next dial in {:?})",
                    self.id,
                    self.addr,
                    at - Instant::now()
                ));
            }
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.addr)).await {
            Ok(Ok(client)) => {
                tracing::info!(from = self.self_id, to = self.id, addr = %self.addr, "connected to peer");
                st.generation += 1;
                st.client = Some(client.clone());
                st.backoff = MIN_BACKOFF;
                st.next_attempt = None;
                Ok((client, st.generation))
            }
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                };
                if st.backoff == MIN_BACKOFF {
                    // Once per outage; openraft's own per-RPC warnings are filtered by default.
                    tracing::warn!(from = self.self_id, to = self.id, addr = %self.addr, reason = %reason, "cannot reach peer; retrying with backoff");
                }
                st.next_attempt = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
                Err(format!(
                    "cannot connect to node {} at {}: {reason}",
                    self.id, self.addr
                ))
            }
        }
    }

    /// Drop connection `generation` after a transport failure; the next RPC re-dials.
    pub async fn disconnect(&self, generation: u64) {
        let mut st = self.conn.lock().await;
        if st.generation == generation && st.client.take().is_some() {
            tracing::info!(from = self.self_id, to = self.id, addr = %self.addr, "connection to peer lost");
            st.next_attempt = Some(Instant::now() + st.backoff);
            st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Classify a failed RPC for openraft, dropping the connection if it is broken.
    async fn rpc_failed(
        &self,
        generation: u64,
        error: RpcError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<TypeConfig> {
        match error {
            RpcError::DeadlineExceeded => RPCError::Timeout(Timeout {
                action,
                id: self.self_id,
                target: self.id,
                timeout: ttl,
            }),
            RpcError::Server(e) => RPCError::Network(NetworkError::new(&e)),
            broken @ (RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_)) => {
                self.disconnect(generation).await;
                RPCError::Unreachable(Unreachable::new(&broken))
            }
        }
    }
}

async fn connect(addr: &str) -> std::io::Result<ControllerRpcClient> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(ControllerRpcClient::new(tarpc::client::Config::default(), transport(stream)).spawn())
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            peer: self.get(target, &node.addr),
        }
    }
}

/// openraft's view of one peer: Raft RPCs over the shared [`Peer`] connection.
pub struct PeerNetwork {
    peer: Arc<Peer>,
}

impl PeerNetwork {
    async fn client(&self) -> Result<(ControllerRpcClient, u64), Unreachable<TypeConfig>> {
        self.peer.client().await.map_err(Unreachable::from_string)
    }
}

/// Runs `call` with a hard local timeout as well as the tarpc deadline.
async fn bounded<T>(
    ttl: Duration,
    call: impl Future<Output = Result<T, RpcError>>,
) -> Result<T, RpcError> {
    tokio::time::timeout(ttl, call)
        .await
        .unwrap_or(Err(RpcError::DeadlineExceeded))
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (client, generation) = self.client().await?;
        let ttl = option.soft_ttl();
        match bounded(ttl, client.append_entries(context(ttl), rpc)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(Unreachable::new(&remote).into()),
            Err(e) => Err(self
                .peer
                .rpc_failed(generation, e, RPCTypes::AppendEntries, ttl)
                .await),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (client, generation) = self.client().await?;
        let ttl = option.soft_ttl();
        match bounded(ttl, client.vote(context(ttl), rpc)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(Unreachable::new(&remote).into()),
            Err(e) => Err(self
                .peer
                .rpc_failed(generation, e, RPCTypes::Vote, ttl)
                .await),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let (client, generation) = self.client().await?;
        let ttl = option.hard_ttl();
        let data = snapshot.snapshot.into_inner();
        let call = bounded(
            ttl,
            client.install_snapshot(context(ttl), vote, snapshot.meta, data),
        );
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            result = call => result,
        };
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(Unreachable::new(&remote).into()),
            Err(e) => Err(
                match self
                    .peer
                    .rpc_failed(generation, e, RPCTypes::InstallSnapshot, ttl)
                    .await
                {
                    RPCError::Timeout(t) => StreamingError::Timeout(t),
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    RPCError::RemoteError(r) => {
                        StreamingError::Unreachable(Unreachable::from_string(r))
                    }
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of a dial that must fail (the client type has no `Debug`, so no `expect_err`).
    fn dial_error(result: Result<(ControllerRpcClient, u64), String>, why: &str) -> String {
        match result {
            Ok(_) => panic!("{why}: connected"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn unreachable_peer_backs_off_then_redials() {
        // A port nobody listens on: bind, take the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let peers = Peers::new(1);
        let peer = peers.get(2, &format!("127.0.0.1:{port}"));
        let first = dial_error(peer.client().await, "nobody listens");
        assert!(first.contains("cannot connect to node 2"), "{first}");
        let second = dial_error(peer.client().await, "still down");
        assert!(second.contains("next dial in"), "{second}");
        // The same id and address is the same connection; a new address replaces it.
        assert!(Arc::ptr_eq(&peer, &peers.get(2, peer.addr())));
        assert!(!Arc::ptr_eq(&peer, &peers.get(2, "127.0.0.1:1")));

        // Once something listens and the backoff has passed, the next call connects.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind");
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                std::mem::forget(s);
            }
        });
        tokio::time::sleep(MAX_BACKOFF).await;
        let peer = peers.get(2, &format!("127.0.0.1:{port}"));
        let (_, generation) = peer.client().await.expect("connects");
        peer.disconnect(generation).await;
        let again = dial_error(peer.client().await, "backing off after a lost connection");
        assert!(again.contains("next dial in"), "{again}");
    }
}
