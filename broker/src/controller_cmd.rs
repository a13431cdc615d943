//! `strata controller`: run one node of the metadata quorum until SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use controller::ControllerNode;
use controller::NodeConfig;
use controller::RaftTuning;

/// Flags of `strata controller`.
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// This node's id; must be one of --controller-voters.
    #[arg(long)]
    pub node_id: u64,
    /// Address to serve controller RPCs on (HOST:PORT).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Every voter of the quorum, as ID@HOST:PORT[,ID@HOST:PORT...].
    #[arg(long = "controller-voters", value_parser = parse_voters)]
    pub controller_voters: Voters,
    /// Directory of this node's metadata log and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Raft heartbeat interval.
    #[arg(long, default_value_t = RaftTuning::default().heartbeat_interval_ms)]
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    #[arg(long, default_value_t = RaftTuning::default().election_timeout_min_ms)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    #[arg(long, default_value_t = RaftTuning::default().election_timeout_max_ms)]
    pub election_timeout_max_ms: u64,
    /// A broker whose heartbeats stop for this long is fenced (`broker.session.timeout.ms`).
    #[arg(long, default_value_t = controller::node::DEFAULT_BROKER_SESSION_TIMEOUT_MS)]
    pub broker_session_timeout_ms: i64,
}

/// The parsed value of --controller-voters: id -> address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voters(pub BTreeMap<u64, String>);

/// Parse `1@host:9093,2@host:9094` (see [`broker::config::parse_voters`]).
pub fn parse_voters(s: &str) -> Result<Voters, String> {
    broker::config::parse_voters(s).map(Voters)
}

impl ControllerArgs {
    /// The node configuration, or a message naming the offending flag.
    pub fn validate(self) -> Result<NodeConfig, String> {
        let voters = self.controller_voters.0;
        if !voters.contains_key(&self.node_id) {
            let ids: Vec<String> = voters.keys().map(u64::to_string).collect();
            return Err(format!(
                "--node-id {} is not one of --controller-voters ({})",
                self.node_id,
                ids.join(", ")
            ));
        }
        Ok(NodeConfig {
            node_id: self.node_id,
            listen: self.listen,
            voters,
            data_dir: self.data_dir,
            raft: RaftTuning {
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                election_timeout_min_ms: self.election_timeout_min_ms,
                election_timeout_max_ms: self.election_timeout_max_ms,
                ..RaftTuning::default()
            },
            broker_session_timeout_ms: self.broker_session_timeout_ms,
        })
    }
}

/// Run the controller node; the process exit code.
pub fn run(args: ControllerArgs) -> std::process::ExitCode {
    crate::run_service(args.validate(), "controller", |config| async move {
        let node = ControllerNode::start(config).await?;
        broker::server::termination_signal().await;
        tracing::info!("termination signal received");
        node.shutdown().await
    })
}
