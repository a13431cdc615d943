//! openraft glue for the metadata quorum: the type configuration, the durable log store and the
//! state machine store. The transport is in [`crate::network`].

mod file_util;
pub mod log_store;
pub mod state_machine;

use std::io;
use std::path::Path;

use crate::state::CommandError;
use crate::state::Outcome;

pub use self::log_store::LogStore;
pub use self::state_machine::SnapshotPayload;
pub use self::state_machine::StateMachineStore;

/// What a committed metadata command returns to the proposer.
pub type Response = Result<Outcome, CommandError>;

openraft::declare_raft_types!(
    /// openraft type configuration of the metadata quorum: node ids are `u64`, nodes carry an
    /// address, log payloads are [`crate::state::Command`]s.
    pub TypeConfig:
        D = crate::state::Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// A Raft log id of the metadata quorum.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A Raft vote of the metadata quorum.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// The membership as last applied.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;
/// The metadata Raft node.
pub type MetadataRaft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Open the log store in `dir/log` and the state machine store in `dir/sm`.
pub fn open(dir: impl AsRef<Path>) -> io::Result<(LogStore, StateMachineStore)> {
    let dir = dir.as_ref();
    Ok((
        LogStore::open(dir.join("log"))?,
        StateMachineStore::open(dir.join("sm"))?,
    ))
}
