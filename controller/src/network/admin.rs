//! A small client of one controller node's admin RPCs (tools and tests).

use std::time::Duration;

use tarpc::client::RpcError;
use tokio::net::TcpStream;

use super::context;
use super::transport;
use super::ControllerRpcClient;
use super::QuorumStatus;
use super::WriteError;
use super::Written;
use crate::state::Command;
use crate::state::MetadataState;
use crate::store::Response;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The TCP connection could not be made.
    #[error("cannot connect to controller at {addr}: {source}")]
    Connect {
        /// The controller address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The request failed in transport or timed out.
    #[error("request to controller at {addr} failed: {source}")]
    Rpc {
        /// The controller address.
        addr: String,
        /// The cause.
        source: RpcError,
    },
    /// The controller answered that the write was not committed.
    #[error("write rejected by controller at {addr}: {source}")]
    Write {
        /// The controller address.
        addr: String,
        /// The controller's answer.
        source: WriteError,
    },
}

impl AdminError {
    /// The leader to retry a write at, if the controller named one.
    pub fn leader_hint(&self) -> Option<(u64, &str)> {
        match self {
            AdminError::Write { source, .. } => source.leader_hint(),
            _ => None,
        }
    }
}

/// A connection to one controller node, for its admin RPCs.
pub struct AdminClient {
    addr: String,
    client: ControllerRpcClient,
    timeout: Duration,
}

impl AdminClient {
    /// Connect to the controller at `addr`; every call then times out after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Self, AdminError> {
        let connect_error = |source| AdminError::Connect {
            addr: addr.to_string(),
            source,
        };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let client =
            ControllerRpcClient::new(tarpc::client::Config::default(), transport(stream)).spawn();
        Ok(Self {
            addr: addr.to_string(),
            client,
            timeout,
        })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn rpc_error(&self, source: RpcError) -> AdminError {
        AdminError::Rpc {
            addr: self.addr.clone(),
            source,
        }
    }

    /// The node's view of the quorum.
    pub async fn status(&self) -> Result<QuorumStatus, AdminError> {
        self.client
            .status(context(self.timeout))
            .await
            .map_err(|e| self.rpc_error(e))
    }

    /// The node's applied metadata.
    pub async fn read_state(&self) -> Result<MetadataState, AdminError> {
        self.client
            .read_state(context(self.timeout))
            .await
            .map_err(|e| self.rpc_error(e))
    }

    /// Long-poll the node's applied metadata: returns once it applied past `after` or after `wait`.
    pub async fn follow_state(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<(u64, MetadataState), AdminError> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.client
            .follow_state(context(self.timeout + wait), after, wait_ms)
            .await
            .map_err(|e| self.rpc_error(e))
    }

    /// Propose `command` (forwarded by a follower to the leader); the committed entry's index and
    /// outcome.
    pub async fn write_indexed(&self, command: Command) -> Result<Written, AdminError> {
        self.client
            .client_write(context(self.timeout), command, true)
            .await
            .map_err(|e| self.rpc_error(e))?
            .map_err(|source| AdminError::Write {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Propose `command`; a follower forwards it to the leader. The result is the committed
    /// command's outcome (which may itself be a rejection, as every node computes it).
    pub async fn write(&self, command: Command) -> Result<Response, AdminError> {
        self.write_with(command, true).await
    }

    /// Propose `command` at this node only: a follower answers [`WriteError::NotLeader`] with the
    /// leader's id and address instead of forwarding.
    pub async fn write_here(&self, command: Command) -> Result<Response, AdminError> {
        self.write_with(command, false).await
    }

    async fn write_with(&self, command: Command, forward: bool) -> Result<Response, AdminError> {
        self.client
            .client_write(context(self.timeout), command, forward)
            .await
            .map_err(|e| self.rpc_error(e))?
            .map(|written| written.response)
            .map_err(|source| AdminError::Write {
                addr: self.addr.clone(),
                source,
            })
    }
}
