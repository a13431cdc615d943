//! Strata's Kafka-compatible broker: wire protocol, request handlers, partitions and the process
//! lifecycle. The `strata` binary is a thin wrapper around [`server::Server`].

pub mod api_versions;
pub mod broker;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod disk_guard;
pub mod error;
pub mod group;
pub mod handlers;
pub mod log_manager;
pub mod metadata_store;
pub mod metrics;
pub mod offload;
pub mod partition;
pub mod server;
pub mod topic_config;
