//! The remote tier: sealed segments offloaded to object storage and read back through a cache.
//! Design: `docs/rfcs/0004-tiered-storage.md`.

pub mod cache;
pub mod error;

pub use error::RemoteError;
