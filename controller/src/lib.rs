//! Strata's metadata quorum: cluster metadata as a pure state machine, replica placement, and the
//! openraft storage that replicates it, the tarpc transport between controller nodes, and a node
//! as a running service. See `docs/rfcs/0005-metadata-quorum.md`.

pub mod network;
pub mod node;
pub mod placement;
pub mod sessions;
pub mod state;
pub mod store;

pub use network::AdminClient;
pub use network::AdminError;
pub use network::QuorumStatus;
pub use network::WriteError;
pub use network::Written;
pub use node::ControllerError;
pub use node::ControllerNode;
pub use node::NodeConfig;
pub use node::RaftTuning;
pub use placement::place;
pub use placement::PlacementError;
pub use state::apply;
pub use state::ClusterImport;
pub use state::Command;
pub use state::CommandError;
pub use state::ImportedTopic;
pub use state::MetadataState;
pub use state::Outcome;
pub use store::LogStore;
pub use store::MetadataRaft;
pub use store::StateMachineStore;
pub use store::TypeConfig;
