//! Transport between the controller nodes of the metadata quorum, and their admin API.
//!
//! One [tarpc](https://github.com/google/tarpc) service, [`ControllerRpc`], carries everything: the
//! three Raft RPCs (`append_entries`, `vote`, `install_snapshot`) and the admin RPCs
//! (`client_write`, `status`, `read_state`, `follow_state`). tarpc is Google's RPC crate for tokio: requests are
//! serde values, and any number of concurrent requests are multiplexed over ONE TCP connection, each
//! with its own id and deadline. So every node dials each peer once ([`Peers`] keeps one client per
//! peer) and all Raft replication streams, votes, snapshots and forwarded writes to that peer share
//! that connection; a peer pair has one connection in each direction (each side dials the other).
//!
//! Framing: a length-delimited frame (max [`MAX_FRAME_BYTES`]) holding one JSON message. JSON is the
//! encoding the log store already uses for entries and snapshots, so every type on the wire is one
//! that already round-trips; metadata traffic is small and rare, so its size does not matter.
//!
//! Batching: openraft already sends every log entry not yet replicated to a follower in one
//! `append_entries` (up to `max_payload_entries`), and heartbeats are per Raft group (one group here).
//!
//! Failures: a peer that cannot be reached is reported to openraft as `Unreachable` (openraft backs
//! off, and elections proceed among the nodes that answer); a broken connection is dropped and
//! re-dialled on the next RPC after an exponential backoff (50 ms doubling to 1 s); an RPC that
//! exceeds openraft's `soft_ttl` is a `Timeout`. Writes sent to a follower are forwarded once to the
//! leader it knows; if it knows none, or the forward fails, the caller gets
//! [`WriteError::NotLeader`] with the leader's id and address when known.

mod admin;
mod peer;
mod server;

use std::collections::BTreeMap;

use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Deserialize;
use serde::Serialize;
use tarpc::tokio_serde::formats::Json;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::net::TcpStream;

use crate::state::Command;
use crate::state::MetadataState;
use crate::store::Response;
use crate::store::SnapshotMeta;
use crate::store::TypeConfig;
use crate::store::Vote;

pub use self::admin::AdminClient;
pub use self::admin::AdminError;
pub use self::peer::Peer;
pub use self::peer::PeerNetwork;
pub use self::peer::Peers;
pub(crate) use self::server::local_status;
pub(crate) use self::server::run_server;
pub(crate) use self::server::write_or_forward;
pub(crate) use self::server::RpcServer;

/// Largest frame accepted on a controller connection (a full snapshot travels in one frame).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The RPC service every controller node serves on its listen address.
#[tarpc::service]
pub trait ControllerRpc {
    /// Raft: append entries (or heartbeat) from the leader; the receiver calls `Raft::append_entries`.
    async fn append_entries(
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RaftUnavailable>;
    /// Raft: a candidate asks for a vote.
    async fn vote(
        rpc: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftUnavailable>;
    /// Raft: the leader sends a whole snapshot (meta and data) to a follower that is too far behind.
    async fn install_snapshot(
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<TypeConfig>, RaftUnavailable>;
    /// Admin: propose a metadata command. A follower forwards it to the leader when `forward` is set
    /// (one hop: it forwards with `forward = false`).
    async fn client_write(command: Command, forward: bool) -> Result<Written, WriteError>;
    /// Admin: this node's view of the quorum (a DescribeQuorum-like summary).
    async fn status() -> QuorumStatus;
    /// Admin: this node's applied metadata (for tests and debugging).
    async fn read_state() -> MetadataState;
    /// Broker-only nodes follow the metadata with this long poll: it answers once this node has
    /// applied an entry after `after` (or after `wait_ms`), with the applied index and the state.
    async fn follow_state(after: u64, wait_ms: u64) -> (u64, MetadataState);
}

/// A committed metadata command: its log index and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Log index of the entry; a node whose state machine applied this index reflects the write.
    pub index: u64,
    /// The command's outcome (which may be a rejection, identical on every node).
    pub response: Response,
}

/// The Raft node behind a controller endpoint failed the request (it is shutting down or stopped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("raft node unavailable: {0}")]
pub struct RaftUnavailable(pub String);

/// Why a proposed metadata command was not committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader and did not forward the write; retry at the leader, if known.
    #[error("not the controller leader (leader: node {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader_id: Option<u64>,
        /// Its controller address.
        leader_addr: Option<String>,
    },
    /// The entry was appended, then discarded when another leader took over: it may or may not
    /// commit. Retrying may apply the command twice.
    #[error("write outcome unknown: its log entry was discarded on a leader change (leader: node {leader_id:?} at {leader_addr:?})")]
    Indeterminate {
        /// The leader this node knows of.
        leader_id: Option<u64>,
        /// Its controller address.
        leader_addr: Option<String>,
    },
    /// The Raft node cannot take writes (shutting down, membership change in progress, ...).
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

impl WriteError {
    /// The leader to retry at, if this error names one.
    pub fn leader_hint(&self) -> Option<(u64, &str)> {
        match self {
            WriteError::NotLeader {
                leader_id: Some(id),
                leader_addr: Some(addr),
            }
            | WriteError::Indeterminate {
                leader_id: Some(id),
                leader_addr: Some(addr),
            } => Some((*id, addr.as_str())),
            _ => None,
        }
    }

    /// Whether retrying the same write (possibly elsewhere) is safe and may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            WriteError::NotLeader { .. } | WriteError::Unavailable(_)
        )
    }
}

/// One node's view of the metadata quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// The answering node.
    pub node_id: u64,
    /// Its Raft role: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub role: String,
    /// The leader it knows of.
    pub current_leader: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry it knows committed (and may apply).
    pub committed: Option<u64>,
    /// Index of the last entry applied to its state machine.
    pub last_applied: Option<u64>,
    /// Voters of the current membership, with their controller addresses.
    pub voters: BTreeMap<u64, String>,
    /// On the leader: the highest log index known replicated to each node (`None`: nothing yet).
    pub matched: Option<BTreeMap<u64, Option<u64>>>,
}

impl QuorumStatus {
    /// Whether the answering node is the leader.
    pub fn is_leader(&self) -> bool {
        self.current_leader == Some(self.node_id)
    }
}

/// Wraps a TCP stream as a tarpc transport: length-delimited frames of JSON.
fn transport<Item, SinkItem>(
    stream: TcpStream,
) -> tarpc::serde_transport::Transport<TcpStream, Item, SinkItem, Json<Item, SinkItem>>
where
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_framed(stream);
    tarpc::serde_transport::new(framed, Json::default())
}

/// A request context whose deadline is `timeout` from now.
pub(crate) fn context(timeout: std::time::Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}
