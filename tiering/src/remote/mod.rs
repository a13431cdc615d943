//! The remote tier: sealed segments offloaded to object storage and read back through a cache.
//! Design: `docs/rfcs/0004-tiered-storage.md`.

pub mod bundle;
pub mod cache;
pub mod error;
pub mod faulty;
pub mod keys;
pub mod manifest;
pub mod partition;
pub mod store;
pub mod throttle;

#[cfg(test)]
mod partition_tests;

pub use error::RemoteError;
pub use keys::{ObjectKeys, SegmentId};
pub use manifest::{ManifestStore, RemoteEpoch, RemoteManifest, RemoteSegment};
pub use partition::{RemoteContext, RemotePartition, Uploaded};
pub use store::{open_object_store, ObjectStoreConfig, OpenedStore, StoreStats};
pub use throttle::Throttle;
