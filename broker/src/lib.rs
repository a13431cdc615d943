//! Strata's Kafka-compatible broker: wire protocol, request handlers, replicas and the process
//! lifecycle. The `strata` binary is a thin wrapper around [`server::Server`].
//!
//! Layers (a module only uses modules below it; see `docs/broker-layering.md`):
//! 1. `server`, `connection`, `handlers`: the process and the Kafka API.
//! 2. `services`: the bundle of service handles the handlers are given.
//! 3. `admin`, `group`, `offload`: services.
//! 4. `cluster`: the metadata link, view and reconciler.
//! 5. `replica`: the replica manager and partitions.
//! 6. leaves: `config`, `topic_config`, `topics`, `metadata_store`, `disk_guard`, `metrics`,
//!    `codec`, `api_versions`, `error`.

pub mod admin;
pub mod api_versions;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod disk_guard;
pub mod error;
pub mod group;
pub mod handlers;
pub mod metadata_store;
pub mod metrics;
pub mod offload;
pub mod replica;
pub mod replication;
pub mod server;
pub mod services;
pub mod topic_config;
pub mod topics;
