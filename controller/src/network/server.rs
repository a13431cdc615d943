//! Server side: accept connections and hand each request to the local `Raft` (or state machine).

use std::collections::BTreeMap;

use futures::StreamExt;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::errors::RaftError;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use tarpc::context::Context;
use tarpc::server::BaseChannel;
use tarpc::server::Channel;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::transport;
use super::ControllerRpc;
use super::Peers;
use super::QuorumStatus;
use super::RaftUnavailable;
use super::WriteError;
use super::Written;
use crate::state::Command;
use crate::state::MetadataState;
use crate::store::MetadataRaft;
use crate::store::Snapshot;
use crate::store::SnapshotMeta;
use crate::store::StateMachineStore;
use crate::store::TypeConfig;
use crate::store::Vote;

/// The [`ControllerRpc`] implementation of one node. Cheap to clone (one clone per request).
#[derive(Clone)]
pub(crate) struct RpcServer {
    pub(crate) node_id: u64,
    pub(crate) raft: MetadataRaft,
    pub(crate) sm: StateMachineStore,
    pub(crate) peers: Peers,
}

/// Accept connections on `listener` and serve each (all its requests concurrently) until `shutdown`.
pub(crate) async fn run_server(
    listener: TcpListener,
    server: RpcServer,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let channel = BaseChannel::with_defaults(transport(stream));
                    let serve = channel
                        .execute(server.clone().serve())
                        .for_each(|request| async move {
                            tokio::spawn(request);
                        });
                    connections.spawn(serve);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "controller accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

impl ControllerRpc for RpcServer {
    async fn append_entries(
        self,
        _: Context,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RaftUnavailable> {
        self.raft
            .append_entries(rpc)
            .await
            .map_err(|e| RaftUnavailable(e.to_string()))
    }

    async fn vote(
        self,
        _: Context,
        rpc: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, RaftUnavailable> {
        self.raft
            .vote(rpc)
            .await
            .map_err(|e| RaftUnavailable(e.to_string()))
    }

    async fn install_snapshot(
        self,
        _: Context,
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<TypeConfig>, RaftUnavailable> {
        let snapshot = Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        };
        self.raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| RaftUnavailable(e.to_string()))
    }

    async fn client_write(
        self,
        ctx: Context,
        command: Command,
        forward: bool,
    ) -> Result<Written, WriteError> {
        write_or_forward(self.node_id, &self.raft, &self.peers, ctx, command, forward).await
    }

    async fn status(self, _: Context) -> QuorumStatus {
        local_status(self.node_id, &self.raft)
    }

    async fn read_state(self, _: Context) -> MetadataState {
        self.sm.read(Clone::clone)
    }

    async fn follow_state(self, _: Context, after: u64, wait_ms: u64) -> (u64, MetadataState) {
        let mut applied = self.sm.subscribe();
        let wait = std::time::Duration::from_millis(wait_ms.min(30_000));
        // Either outcome answers: a newer state, or the same one after the wait (a keep-alive).
        let _ = tokio::time::timeout(wait, applied.wait_for(|i| *i > after)).await;
        let index = self.sm.last_applied().map_or(0, |l| l.index);
        (index, self.sm.read(Clone::clone))
    }
}

/// Propose `command` here; on a follower, forward it once to the leader when `forward` is set.
pub(crate) async fn write_or_forward(
    node_id: u64,
    raft: &MetadataRaft,
    peers: &Peers,
    ctx: Context,
    command: Command,
    forward: bool,
) -> Result<Written, WriteError> {
    let forwarded = forward.then(|| command.clone());
    let error = match raft.client_write(command).await {
        Ok(written) => {
            return Ok(Written {
                index: written.log_id.index,
                response: written.data,
            })
        }
        Err(e) => e,
    };
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
            let leader_id = to.leader_id;
            let leader_addr = to.leader_node.map(|n| n.addr);
            if let (Some(command), Some(id), Some(addr)) = (forwarded, leader_id, &leader_addr) {
                if id != node_id {
                    let peer = peers.get(id, addr);
                    match peer.client().await {
                        Ok((client, generation)) => {
                            match client.client_write(ctx, command, false).await {
                                Ok(result) => return result,
                                Err(e) => {
                                    tracing::info!(leader = id, error = %e, "forwarding a write to the leader failed");
                                    if matches!(
                                        e,
                                        tarpc::client::RpcError::Shutdown
                                            | tarpc::client::RpcError::Send(_)
                                            | tarpc::client::RpcError::Channel(_)
                                    ) {
                                        peer.disconnect(generation).await;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            tracing::info!(leader = id, error = %e, "cannot forward a write to the leader");
                        }
                    }
                }
            }
            Err(WriteError::NotLeader {
                leader_id,
                leader_addr,
            })
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(to)) => {
            Err(WriteError::Indeterminate {
                leader_id: to.leader_id,
                leader_addr: to.leader_node.map(|n| n.addr),
            })
        }
        other => Err(WriteError::Unavailable(other.to_string())),
    }
}

/// This node's view of the quorum, from its Raft metrics.
pub(crate) fn local_status(node_id: u64, raft: &MetadataRaft) -> QuorumStatus {
    let m = raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeMap<u64, String> = membership
        .voter_ids()
        .map(|id| {
            let addr = membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default();
            (id, addr)
        })
        .collect();
    QuorumStatus {
        node_id,
        role: format!("{:?}", m.state),
        current_leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        committed: m.local_committed.as_ref().map(|l| l.index),
        last_applied: m.last_applied.as_ref().map(|l| l.index),
        voters,
        matched: m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, matched)| (*id, matched.as_ref().map(|l| l.index)))
                .collect()
        }),
    }
}
