//! The group coordinator: consumer groups (classic JoinGroup/SyncGroup protocol), committed offsets,
//! and their persistence in the internal compacted topic `__consumer_offsets`.
//!
//! - `classic.rs`: the pure state machine of one group (no I/O; time is passed in).
//! - `consumer.rs`: the KIP-848 (ConsumerGroupHeartbeat) state machine of a `consumer` type group;
//!   `assignor.rs`: its server-side assignors (`uniform`, `range`).
//! - `offsets.rs`: committed offsets, retention rule, and the consumer-protocol subscription reader.
//! - `store.rs`: the versioned record format in `__consumer_offsets` and the commit point.
//! - `coordinator.rs`: the service that owns every group, writes through the partition log, replays
//!   it at start, and runs the timers.
//!
//! Design notes: docs/rfcs/0003-group-coordinator.md. A group id is either classic or
//! consumer (KIP-848); an empty group can switch.

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod offsets;
pub mod store;

pub use coordinator::{
    java_string_hash, partition_for, Clock, CoordinatorConfig, GroupCoordinator, SystemClock,
    OFFSETS_TOPIC,
};
