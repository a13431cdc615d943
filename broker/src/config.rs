//! Broker configuration: one serde struct, layered defaults -> TOML file -> `STRATA_*` environment -> flags.
//!
//! `BrokerArgs` is what clap parses (flags, each with an environment variable); every field is optional
//! so that an absent flag leaves the file's or the default value in place. `BrokerConfig::load` merges the
//! layers and `validate` fails once, naming the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::error::ConfigError;
use std::collections::BTreeMap;

use crate::topic_config::BrokerLayers;

/// Command-line flags of `strata broker`. Each flag can also come from its `STRATA_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct BrokerArgs {
    /// TOML configuration file (keys as in `BrokerConfig`, e.g. `listen = "0.0.0.0:9092"`).
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the Kafka listener binds to.
    #[arg(long, env = "STRATA_LISTEN")]
    pub listen: Option<String>,
    /// host:port clients are told to connect to (defaults to --listen).
    #[arg(long, env = "STRATA_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Directory holding partition logs and local metadata.
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This broker's node id.
    #[arg(long, env = "STRATA_NODE_ID")]
    pub node_id: Option<i32>,
    /// Prometheus endpoint address; `off` disables it.
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Rack reported in metadata.
    #[arg(long, env = "STRATA_RACK")]
    pub rack: Option<String>,
    /// Default partition count for new topics (`num.partitions`).
    #[arg(long, env = "STRATA_NUM_PARTITIONS")]
    pub num_partitions: Option<i32>,
    /// Create topics on first use (`auto.create.topics.enable`).
    #[arg(long, env = "STRATA_AUTO_CREATE_TOPICS_ENABLE")]
    pub auto_create_topics_enable: Option<bool>,
    /// Largest request frame accepted (`socket.request.max.bytes`).
    #[arg(long, env = "STRATA_SOCKET_REQUEST_MAX_BYTES")]
    pub socket_request_max_bytes: Option<u32>,
    /// Largest record batch accepted (`message.max.bytes`).
    #[arg(long, env = "STRATA_MESSAGE_MAX_BYTES")]
    pub message_max_bytes: Option<u32>,
    /// Segment size (`log.segment.bytes`).
    #[arg(long, env = "STRATA_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Segment age before it is rolled (`log.roll.ms`).
    #[arg(long, env = "STRATA_LOG_ROLL_MS")]
    pub log_roll_ms: Option<i64>,
    /// Time retention (`log.retention.ms`, -1 = forever).
    #[arg(long, env = "STRATA_LOG_RETENTION_MS")]
    pub log_retention_ms: Option<i64>,
    /// Size retention per partition (`log.retention.bytes`, -1 = unlimited).
    #[arg(long, env = "STRATA_LOG_RETENTION_BYTES")]
    pub log_retention_bytes: Option<i64>,
    /// How often retention runs (`log.retention.check.interval.ms`).
    #[arg(long, env = "STRATA_LOG_RETENTION_CHECK_INTERVAL_MS")]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Relaxed durability: fsync every N messages instead of before each acks=all answer.
    #[arg(long, env = "STRATA_LOG_FLUSH_INTERVAL_MESSAGES")]
    pub log_flush_interval_messages: Option<i64>,
    /// Relaxed durability: fsync every N ms instead of before each acks=all answer.
    #[arg(long, env = "STRATA_LOG_FLUSH_INTERVAL_MS")]
    pub log_flush_interval_ms: Option<i64>,
    /// `CreateTime` or `LogAppendTime` (`log.message.timestamp.type`).
    #[arg(long, env = "STRATA_LOG_MESSAGE_TIMESTAMP_TYPE")]
    pub log_message_timestamp_type: Option<String>,
    /// Cluster id to create a new data dir with (a random one otherwise).
    #[arg(long, env = "STRATA_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Any broker default for a topic config, as `KEY=VALUE` with Kafka's broker or topic key name
    /// (e.g. `log.cleanup.policy=compact`, `compression.type=zstd`); repeatable, or comma-separated in
    /// `STRATA_BROKER_CONFIG`.
    #[arg(
        long = "broker-config",
        value_name = "KEY=VALUE",
        env = "STRATA_BROKER_CONFIG",
        value_delimiter = ','
    )]
    pub broker_config: Vec<String>,
    /// Partitions of `__consumer_offsets` when it is created (`offsets.topic.num.partitions`).
    #[arg(long, env = "STRATA_OFFSETS_TOPIC_NUM_PARTITIONS")]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Delay of the first rebalance of an empty group (`group.initial.rebalance.delay.ms`).
    #[arg(long, env = "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// How long offsets of an empty group are kept (`offsets.retention.minutes`).
    #[arg(long, env = "STRATA_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// KIP-848 heartbeat interval (`group.consumer.heartbeat.interval.ms`).
    #[arg(long, env = "STRATA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// KIP-848 session timeout (`group.consumer.session.timeout.ms`).
    #[arg(long, env = "STRATA_GROUP_CONSUMER_SESSION_TIMEOUT_MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Where sealed segments are offloaded: `s3://bucket/prefix`, `file:///path`, or `off`
    /// (default: `file://<data-dir>/remote`).
    #[arg(long, env = "STRATA_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// S3 endpoint for S3-compatible servers (e.g. `http://127.0.0.1:9000` for MinIO).
    #[arg(long, env = "STRATA_OBJECT_STORE_ENDPOINT")]
    pub object_store_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "STRATA_OBJECT_STORE_REGION")]
    pub object_store_region: Option<String>,
    /// Path-style S3 requests (MinIO and most S3-compatible servers need this).
    #[arg(long, env = "STRATA_OBJECT_STORE_PATH_STYLE")]
    pub object_store_path_style: Option<bool>,
    /// Allow a plain-HTTP S3 endpoint.
    #[arg(long, env = "STRATA_OBJECT_STORE_ALLOW_HTTP")]
    pub object_store_allow_http: Option<bool>,
    /// Memory tier of the remote read cache, in bytes.
    #[arg(long, env = "STRATA_REMOTE_CACHE_MEMORY_BYTES")]
    pub remote_cache_memory_bytes: Option<u64>,
    /// Disk tier of the remote read cache, in bytes (0 disables it); capped at
    /// `remote_cache_disk_max_percent` of the cache directory's filesystem.
    #[arg(long, env = "STRATA_REMOTE_CACHE_DISK_BYTES")]
    pub remote_cache_disk_bytes: Option<u64>,
    /// Largest share of its filesystem the disk cache may take, in percent.
    #[arg(long, env = "STRATA_REMOTE_CACHE_DISK_MAX_PERCENT")]
    pub remote_cache_disk_max_percent: Option<u8>,
    /// Directory of the disk cache (default `<data-dir>/remote-cache`).
    #[arg(long, env = "STRATA_REMOTE_CACHE_DIR")]
    pub remote_cache_dir: Option<PathBuf>,
    /// Size of the aligned chunks remote reads fetch and cache.
    #[arg(long, env = "STRATA_REMOTE_CACHE_CHUNK_BYTES")]
    pub remote_cache_chunk_bytes: Option<u64>,
    /// Chunks a sequential remote read fetches ahead (in parallel).
    #[arg(long, env = "STRATA_REMOTE_CACHE_READ_AHEAD_CHUNKS")]
    pub remote_cache_read_ahead_chunks: Option<usize>,
    /// Partitions uploading at the same time.
    #[arg(long, env = "STRATA_REMOTE_UPLOAD_CONCURRENCY")]
    pub remote_upload_concurrency: Option<usize>,
    /// Upload bandwidth limit in bytes per second (0 = unlimited).
    #[arg(long, env = "STRATA_REMOTE_UPLOAD_BYTES_PER_SEC")]
    pub remote_upload_bytes_per_sec: Option<u64>,
    /// Segments up to this size go up in one PUT, larger ones in parts of this size.
    #[arg(long, env = "STRATA_REMOTE_UPLOAD_PART_BYTES")]
    pub remote_upload_part_bytes: Option<u64>,
    /// How often the offload task looks for sealed segments, retention and deletions.
    #[arg(long, env = "STRATA_REMOTE_TASK_INTERVAL_MS")]
    pub remote_task_interval_ms: Option<u64>,
    /// Produce is refused (retriable KAFKA_STORAGE_ERROR) while local partition data exceeds this
    /// many bytes (0 = no limit), e.g. while uploads are stalled by an object store outage.
    #[arg(long, env = "STRATA_LOCAL_DISK_LIMIT_BYTES")]
    pub local_disk_limit_bytes: Option<u64>,
    /// Produce is refused while the data directory's filesystem has less free space than this.
    #[arg(long, env = "STRATA_LOCAL_DISK_MIN_FREE_BYTES")]
    pub local_disk_min_free_bytes: Option<u64>,
    /// Voters of the metadata quorum, `ID@HOST:PORT,...` (KRaft's `controller.quorum.voters`);
    /// empty: a single-node cluster whose only voter is this node.
    #[arg(long, env = "STRATA_CONTROLLER_VOTERS")]
    pub controller_voters: Option<String>,
    /// Address the embedded controller serves the quorum's RPCs on (default: this node's voter
    /// address; a free loopback port on a single node).
    #[arg(long, env = "STRATA_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// A broker whose heartbeats stop for this long is fenced (`broker.session.timeout.ms`).
    #[arg(long, env = "STRATA_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<i64>,
    /// How often the broker heartbeats to the controller (`broker.heartbeat.interval.ms`).
    #[arg(long, env = "STRATA_BROKER_HEARTBEAT_INTERVAL_MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// Partition replication listen address (`host:port`); empty = the Kafka listen host on a free port. Advertised to the other brokers through the metadata.
    #[arg(long, env = "STRATA_REPLICATION_LISTEN")]
    pub replication_listen: Option<String>,
    /// Test hook: `ID=HOST:PORT,...` replaces the replication endpoints of those peers (e.g. a fault-injecting proxy).
    #[arg(long, env = "STRATA_REPLICATION_PEER_OVERRIDES")]
    pub replication_peer_overrides: Option<String>,
    /// How often a partition leader's broker sends its coalesced heartbeat to each peer.
    #[arg(long, env = "STRATA_REPLICA_HEARTBEAT_INTERVAL_MS")]
    pub replica_heartbeat_interval_ms: Option<u64>,
    /// A follower that heard from no live leader for this long (randomized up to 1.5 times) starts an election.
    #[arg(long, env = "STRATA_REPLICA_ELECTION_TIMEOUT_MS")]
    pub replica_election_timeout_ms: Option<u64>,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the ISR.
    #[arg(long, env = "STRATA_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// `default.replication.factor` of topics created without one (capped at the live brokers).
    #[arg(long, env = "STRATA_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i16>,
    /// `offsets.topic.replication.factor` (capped at the live brokers when the topic is created).
    #[arg(long, env = "STRATA_OFFSETS_TOPIC_REPLICATION_FACTOR")]
    pub offsets_topic_replication_factor: Option<i16>,
    /// `transaction.state.log.replication.factor` (capped at the live brokers).
    #[arg(long, env = "STRATA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR")]
    pub transaction_state_log_replication_factor: Option<i16>,
    /// `auto.leader.rebalance.enable`: leaders hand partitions back to their preferred replica
    /// once a broker's share of partitions led elsewhere exceeds the imbalance percentage.
    #[arg(long, env = "STRATA_AUTO_LEADER_REBALANCE_ENABLE")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// `leader.imbalance.check.interval.seconds`: how often leadership balance is checked.
    #[arg(long, env = "STRATA_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS")]
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// `leader.imbalance.per.broker.percentage`: the share of a broker's preferred partitions that
    /// may be led elsewhere before they are moved back.
    #[arg(long, env = "STRATA_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE")]
    pub leader_imbalance_per_broker_percentage: Option<u32>,
    /// `replica.selector.class` (KIP-392): empty or `LeaderSelector` serves consumers from the
    /// leader; `org.apache.kafka.common.replica.RackAwareReplicaSelector` (or `RackAware`) sends a
    /// consumer with `client.rack` to an in-sync replica in its rack.
    #[arg(long, env = "STRATA_REPLICA_SELECTOR_CLASS")]
    pub replica_selector_class: Option<String>,
    /// What this node runs (`process.roles`): `broker,controller` (combined, the default),
    /// `broker` (metadata from the --controller-voters) or `controller` (a quorum voter only).
    #[arg(long, env = "STRATA_ROLES")]
    pub roles: Option<String>,
}

/// The broker's configuration after layering. Keys of the TOML file are these field names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct BrokerConfig {
    /// Address the Kafka listener binds to.
    pub listen: String,
    /// host:port advertised to clients; empty means `listen`.
    pub advertised_listener: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Node id.
    pub node_id: i32,
    /// Metrics endpoint; `off` or empty disables it.
    pub metrics_listen: String,
    /// Rack id.
    pub rack: Option<String>,
    /// Cluster id for a new data dir.
    pub cluster_id: Option<String>,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: u32,
    /// `message.max.bytes`.
    pub message_max_bytes: u32,
    /// `log.segment.bytes`.
    pub log_segment_bytes: u64,
    /// `log.roll.ms`.
    pub log_roll_ms: i64,
    /// `log.retention.ms`.
    pub log_retention_ms: i64,
    /// `log.retention.bytes`.
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// `log.flush.interval.messages`; absent = fsync before every acks=all answer.
    pub log_flush_interval_messages: Option<i64>,
    /// `log.flush.interval.ms`; absent = fsync before every acks=all answer.
    pub log_flush_interval_ms: Option<i64>,
    /// `log.message.timestamp.type`.
    pub log_message_timestamp_type: String,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    pub shutdown_timeout_ms: u64,
    /// Broker defaults for topic configs by Kafka key name (TOML table `[broker_configs]`), on top of
    /// the dedicated fields above.
    pub broker_configs: std::collections::BTreeMap<String, String>,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u64,
    /// `offsets.retention.minutes`.
    pub offsets_retention_minutes: i64,
    /// `group.consumer.heartbeat.interval.ms`.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms`.
    pub group_consumer_session_timeout_ms: i32,
    /// Object store URL (`s3://`, `file://`, `off`); empty = `file://<data-dir>/remote`.
    pub object_store: String,
    /// S3 endpoint override.
    pub object_store_endpoint: Option<String>,
    /// S3 region.
    pub object_store_region: Option<String>,
    /// Path-style S3 requests.
    pub object_store_path_style: bool,
    /// Allow plain HTTP.
    pub object_store_allow_http: bool,
    /// Remote read cache, memory tier bytes.
    pub remote_cache_memory_bytes: u64,
    /// Remote read cache, disk tier bytes (0 = none).
    pub remote_cache_disk_bytes: u64,
    /// Largest share of its filesystem the disk cache may take, in percent.
    pub remote_cache_disk_max_percent: u8,
    /// Disk cache directory; empty = `<data-dir>/remote-cache`.
    pub remote_cache_dir: Option<PathBuf>,
    /// Cache chunk size.
    pub remote_cache_chunk_bytes: u64,
    /// Remote read-ahead, in chunks.
    pub remote_cache_read_ahead_chunks: usize,
    /// Concurrent partition uploads.
    pub remote_upload_concurrency: usize,
    /// Upload bandwidth limit (0 = unlimited).
    pub remote_upload_bytes_per_sec: u64,
    /// Single-PUT limit and multipart part size.
    pub remote_upload_part_bytes: u64,
    /// Offload task interval.
    pub remote_task_interval_ms: u64,
    /// Local partition data limit (0 = none).
    pub local_disk_limit_bytes: u64,
    /// Minimum free space on the data directory's filesystem.
    pub local_disk_min_free_bytes: u64,
    /// Metadata quorum voters, `ID@HOST:PORT,...`; empty = this node alone.
    pub controller_voters: String,
    /// Controller RPC listen address; empty = this node's voter address (or a free loopback port).
    pub controller_listen: String,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: i64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `process.roles`: `broker,controller`, `broker` or `controller`.
    pub roles: String,
    /// Partition replication listen address (`host:port`); empty = the Kafka listen host on a free port. Advertised to the other brokers through the metadata.
    pub replication_listen: String,
    /// Test hook: `ID=HOST:PORT,...` replaces the replication endpoints of those peers (e.g. a fault-injecting proxy).
    pub replication_peer_overrides: String,
    /// How often a partition leader's broker sends its coalesced heartbeat to each peer.
    pub replica_heartbeat_interval_ms: u64,
    /// A follower that heard from no live leader for this long (randomized up to 1.5 times) starts an election.
    pub replica_election_timeout_ms: u64,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `default.replication.factor` of topics created without one (capped at the live brokers).
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor` (capped at the live brokers when the topic is created).
    pub offsets_topic_replication_factor: i16,
    /// `transaction.state.log.replication.factor` (capped at the live brokers).
    pub transaction_state_log_replication_factor: i16,
    /// `auto.leader.rebalance.enable`: leaders hand partitions back to their preferred replica
    /// once a broker's share of partitions led elsewhere exceeds the imbalance percentage.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often leadership balance is checked.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `leader.imbalance.per.broker.percentage`: the share of a broker's preferred partitions that
    /// may be led elsewhere before they are moved back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// `replica.selector.class` (KIP-392): empty or `LeaderSelector` serves consumers from the
    /// leader; `org.apache.kafka.common.replica.RackAwareReplicaSelector` (or `RackAware`) sends a
    /// consumer with `client.rack` to an in-sync replica in its rack.
    pub replica_selector_class: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".into(),
            advertised_listener: String::new(),
            data_dir: PathBuf::from("./strata-data"),
            node_id: 0,
            metrics_listen: "127.0.0.1:9644".into(),
            rack: None,
            cluster_id: None,
            num_partitions: 1,
            auto_create_topics_enable: true,
            socket_request_max_bytes: 104_857_600,
            message_max_bytes: 1_048_588,
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * 24 * 3_600_000,
            log_retention_ms: 7 * 24 * 3_600_000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 300_000,
            log_flush_interval_messages: None,
            log_flush_interval_ms: None,
            log_message_timestamp_type: "CreateTime".into(),
            shutdown_timeout_ms: 10_000,
            broker_configs: std::collections::BTreeMap::new(),
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_retention_minutes: 10_080,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_session_timeout_ms: 45_000,
            object_store: String::new(),
            object_store_endpoint: None,
            object_store_region: None,
            object_store_path_style: false,
            object_store_allow_http: false,
            remote_cache_memory_bytes: 256 << 20,
            remote_cache_disk_bytes: 4 << 30,
            remote_cache_disk_max_percent: 10,
            remote_cache_dir: None,
            remote_cache_chunk_bytes: 4 << 20,
            remote_cache_read_ahead_chunks: 8,
            remote_upload_concurrency: 2,
            remote_upload_bytes_per_sec: 0,
            remote_upload_part_bytes: 128 << 20,
            remote_task_interval_ms: 1_000,
            local_disk_limit_bytes: 0,
            local_disk_min_free_bytes: 64 << 20,
            controller_voters: String::new(),
            controller_listen: String::new(),
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            roles: "broker,controller".into(),
            replication_listen: String::new(),
            replication_peer_overrides: String::new(),
            replica_heartbeat_interval_ms: 500,
            replica_election_timeout_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            transaction_state_log_replication_factor: 3,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            replica_selector_class: String::new(),
        }
    }
}

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The layered configuration, as the user gave it.
    pub broker: BrokerConfig,
    /// Resolved listen address.
    pub listen: SocketAddr,
    /// Host advertised in Metadata.
    pub advertised_host: String,
    /// Port advertised in Metadata.
    pub advertised_port: i32,
    /// Resolved metrics address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Metadata quorum voters: node id -> `host:port` (just this node on a single node).
    pub voters: std::collections::BTreeMap<u64, String>,
    /// Address the embedded controller binds.
    pub controller_listen: SocketAddr,
    /// What this node runs.
    pub roles: Roles,
    /// Address the partition replication listener binds.
    pub replication_listen: SocketAddr,
    /// Replication endpoints that replace the metadata's (test hook), by node id.
    pub replication_peer_overrides: std::collections::BTreeMap<u64, String>,
}

/// The roles of a node (KRaft's `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves Kafka clients and hosts partitions.
    pub broker: bool,
    /// Is a voter of the metadata quorum.
    pub controller: bool,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($field:ident),* $(,)?) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )*
    };
}

impl BrokerConfig {
    /// The static config layer of this broker (DescribeConfigs and topic settings start from it).
    pub fn layers(&self) -> BrokerLayers {
        let cfg = self;
        let mut s = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            let default = crate::topic_config::topic_def_by_broker_name(k).map(|d| d.default);
            if default != Some(v.as_str()) {
                s.insert(k.to_string(), v);
            }
        };
        put("log.retention.ms", cfg.log_retention_ms.to_string());
        put("log.retention.bytes", cfg.log_retention_bytes.to_string());
        put("log.segment.bytes", cfg.log_segment_bytes.to_string());
        put("log.roll.ms", cfg.log_roll_ms.to_string());
        put("message.max.bytes", cfg.message_max_bytes.to_string());
        put(
            "log.message.timestamp.type",
            cfg.log_message_timestamp_type.clone(),
        );
        if let Some(v) = cfg.log_flush_interval_messages {
            put("log.flush.interval.messages", v.to_string());
        }
        if let Some(v) = cfg.log_flush_interval_ms {
            put("log.flush.interval.ms", v.to_string());
        }
        for (k, v) in &cfg.broker_configs {
            // Generic defaults by Kafka name override the dedicated fields; validated at start.
            if let Some(def) = crate::topic_config::topic_def_by_broker_name(k)
                .or_else(|| crate::topic_config::topic_def(k))
            {
                s.insert(def.broker_name.to_string(), v.clone());
            }
        }
        let advertised = if cfg.advertised_listener.is_empty() {
            cfg.listen.clone()
        } else {
            cfg.advertised_listener.clone()
        };
        let read_only = [
            ("node.id", cfg.node_id.to_string()),
            ("broker.id", cfg.node_id.to_string()),
            ("listeners", format!("PLAINTEXT://{}", cfg.listen)),
            ("advertised.listeners", format!("PLAINTEXT://{advertised}")),
            ("log.dirs", cfg.data_dir.display().to_string()),
            ("num.partitions", cfg.num_partitions.to_string()),
            ("default.replication.factor", "1".to_string()),
            (
                "auto.create.topics.enable",
                cfg.auto_create_topics_enable.to_string(),
            ),
            (
                "socket.request.max.bytes",
                cfg.socket_request_max_bytes.to_string(),
            ),
            (
                "log.retention.check.interval.ms",
                cfg.log_retention_check_interval_ms.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        BrokerLayers {
            static_values: s,
            read_only,
            ..Default::default()
        }
    }
}

impl BrokerConfig {
    /// Whether `replica.selector.class` names the rack-aware selector (`Some(false)`: the leader
    /// selector; `None`: a class Strata does not know).
    pub fn rack_aware_selector(&self) -> Option<bool> {
        let name = self.replica_selector_class.trim();
        let short = name
            .strip_prefix("org.apache.kafka.common.replica.")
            .unwrap_or(name);
        match short {
            "" | "LeaderSelector" => Some(false),
            "RackAwareReplicaSelector" | "RackAware" => Some(true),
            _ => None,
        }
    }

    /// Merges defaults, the TOML file named by `--config` (if any), environment and flags.
    pub fn load(args: &BrokerArgs) -> Result<Self, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        overlay!(
            cfg,
            args,
            listen,
            advertised_listener,
            data_dir,
            node_id,
            metrics_listen,
            num_partitions,
            auto_create_topics_enable,
            socket_request_max_bytes,
            message_max_bytes,
            log_segment_bytes,
            log_roll_ms,
            log_retention_ms,
            log_retention_bytes,
            log_retention_check_interval_ms,
            log_message_timestamp_type,
            offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms,
            offsets_retention_minutes,
            group_consumer_heartbeat_interval_ms,
            group_consumer_session_timeout_ms,
            object_store,
            object_store_path_style,
            object_store_allow_http,
            remote_cache_memory_bytes,
            remote_cache_disk_bytes,
            remote_cache_disk_max_percent,
            remote_cache_chunk_bytes,
            remote_cache_read_ahead_chunks,
            remote_upload_concurrency,
            remote_upload_bytes_per_sec,
            remote_upload_part_bytes,
            remote_task_interval_ms,
            local_disk_limit_bytes,
            local_disk_min_free_bytes,
            controller_voters,
            controller_listen,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms,
            roles,
            replication_listen,
            replication_peer_overrides,
            replica_heartbeat_interval_ms,
            replica_election_timeout_ms,
            replica_lag_time_max_ms,
            default_replication_factor,
            offsets_topic_replication_factor,
            transaction_state_log_replication_factor,
            auto_leader_rebalance_enable,
            leader_imbalance_check_interval_seconds,
            leader_imbalance_per_broker_percentage,
            replica_selector_class,
        );
        for (dst, src) in [
            (&mut cfg.object_store_endpoint, &args.object_store_endpoint),
            (&mut cfg.object_store_region, &args.object_store_region),
        ] {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        if args.remote_cache_dir.is_some() {
            cfg.remote_cache_dir.clone_from(&args.remote_cache_dir);
        }
        if args.rack.is_some() {
            cfg.rack = args.rack.clone();
        }
        if args.cluster_id.is_some() {
            cfg.cluster_id = args.cluster_id.clone();
        }
        for kv in &args.broker_config {
            let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::Invalid {
                key: "broker_config",
                value: kv.clone(),
                reason: "expected KEY=VALUE".into(),
            })?;
            cfg.broker_configs
                .insert(k.trim().to_string(), v.trim().to_string());
        }
        if args.log_flush_interval_messages.is_some() {
            cfg.log_flush_interval_messages = args.log_flush_interval_messages;
        }
        if args.log_flush_interval_ms.is_some() {
            cfg.log_flush_interval_ms = args.log_flush_interval_ms;
        }
        Ok(cfg)
    }

    /// Reads a TOML file; unknown keys are tolerated (logged) so that rollbacks stay safe.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text; the error names the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let known = Self::known_keys();
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                tracing::warn!(key = %key, "ignoring unknown configuration key");
            }
        }
        // Deserialising from the text (not the parsed table) keeps the offending line, and so the key,
        // in the error message.
        toml::from_str(text).map_err(|e: toml::de::Error| e.to_string().trim().to_string())
    }

    fn known_keys() -> &'static [&'static str] {
        &[
            "listen",
            "advertised_listener",
            "data_dir",
            "node_id",
            "metrics_listen",
            "rack",
            "cluster_id",
            "num_partitions",
            "auto_create_topics_enable",
            "socket_request_max_bytes",
            "message_max_bytes",
            "log_segment_bytes",
            "log_roll_ms",
            "log_retention_ms",
            "log_retention_bytes",
            "log_retention_check_interval_ms",
            "log_flush_interval_messages",
            "log_flush_interval_ms",
            "log_message_timestamp_type",
            "shutdown_timeout_ms",
            "broker_configs",
            "offsets_topic_num_partitions",
            "group_initial_rebalance_delay_ms",
            "offsets_retention_minutes",
            "group_consumer_heartbeat_interval_ms",
            "group_consumer_session_timeout_ms",
            "object_store",
            "object_store_endpoint",
            "object_store_region",
            "object_store_path_style",
            "object_store_allow_http",
            "remote_cache_memory_bytes",
            "remote_cache_disk_bytes",
            "remote_cache_disk_max_percent",
            "remote_cache_dir",
            "remote_cache_chunk_bytes",
            "remote_cache_read_ahead_chunks",
            "remote_upload_concurrency",
            "remote_upload_bytes_per_sec",
            "remote_upload_part_bytes",
            "remote_task_interval_ms",
            "local_disk_limit_bytes",
            "local_disk_min_free_bytes",
            "controller_voters",
            "controller_listen",
            "broker_session_timeout_ms",
            "broker_heartbeat_interval_ms",
            "roles",
            "replication_listen",
            "replication_peer_overrides",
            "replica_heartbeat_interval_ms",
            "replica_election_timeout_ms",
            "replica_lag_time_max_ms",
            "default_replication_factor",
            "offsets_topic_replication_factor",
            "transaction_state_log_replication_factor",
            "auto_leader_rebalance_enable",
            "leader_imbalance_check_interval_seconds",
            "leader_imbalance_per_broker_percentage",
            "replica_selector_class",
        ]
    }

    /// Checks every value and resolves addresses; the error names the key.
    pub fn validate(self) -> Result<RuntimeConfig, ConfigError> {
        let bad = |key: &'static str, value: String, reason: &str| ConfigError::Invalid {
            key,
            value,
            reason: reason.to_string(),
        };
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            bad(
                "listen",
                self.listen.clone(),
                "expected ip:port, e.g. 127.0.0.1:9092",
            )
        })?;
        let advertised = if self.advertised_listener.is_empty() {
            self.listen.clone()
        } else {
            self.advertised_listener.clone()
        };
        let (host, port) = advertised
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                bad(
                    "advertised_listener",
                    advertised.clone(),
                    "expected host:port",
                )
            })?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let metrics_listen =
            match self.metrics_listen.as_str() {
                "" | "off" | "none" => None,
                s => Some(s.parse().map_err(|_| {
                    bad("metrics_listen", s.to_string(), "expected ip:port or `off`")
                })?),
            };
        match self.object_store.trim() {
            "" | "off" | "none" => {}
            url if url.starts_with("s3://")
                || url.starts_with("s3a://")
                || url.starts_with("file:///")
                || url.starts_with("memory://") => {}
            url => {
                return Err(bad(
                    "object_store",
                    url.to_string(),
                    "expected s3://bucket/prefix, file:///absolute/path, memory:// or off",
                ))
            }
        }
        if !(4096..=(256 << 20)).contains(&self.remote_cache_chunk_bytes) {
            return Err(bad(
                "remote_cache_chunk_bytes",
                self.remote_cache_chunk_bytes.to_string(),
                "must be between 4096 and 268435456",
            ));
        }
        if self.remote_cache_disk_max_percent > 90 {
            return Err(bad(
                "remote_cache_disk_max_percent",
                self.remote_cache_disk_max_percent.to_string(),
                "must be <= 90",
            ));
        }
        if self.remote_upload_concurrency == 0 {
            return Err(bad("remote_upload_concurrency", "0".into(), "must be >= 1"));
        }
        if self.remote_upload_part_bytes < (5 << 20) {
            return Err(bad(
                "remote_upload_part_bytes",
                self.remote_upload_part_bytes.to_string(),
                "must be >= 5242880 (S3's smallest multipart part)",
            ));
        }
        if self.remote_task_interval_ms == 0 {
            return Err(bad("remote_task_interval_ms", "0".into(), "must be >= 1"));
        }
        if self.node_id < 0 {
            return Err(bad("node_id", self.node_id.to_string(), "must be >= 0"));
        }
        if self.num_partitions < 1 {
            return Err(bad(
                "num_partitions",
                self.num_partitions.to_string(),
                "must be >= 1",
            ));
        }
        if self.socket_request_max_bytes < 1024 {
            return Err(bad(
                "socket_request_max_bytes",
                self.socket_request_max_bytes.to_string(),
                "must be >= 1024",
            ));
        }
        if self.message_max_bytes < 64 {
            return Err(bad(
                "message_max_bytes",
                self.message_max_bytes.to_string(),
                "must be >= 64",
            ));
        }
        if self.log_segment_bytes < 1024 || self.log_segment_bytes > i32::MAX as u64 {
            return Err(bad(
                "log_segment_bytes",
                self.log_segment_bytes.to_string(),
                "must be between 1024 and 2147483647",
            ));
        }
        if self.log_roll_ms < 1 {
            return Err(bad(
                "log_roll_ms",
                self.log_roll_ms.to_string(),
                "must be >= 1",
            ));
        }
        if self.log_retention_ms < -1 {
            return Err(bad(
                "log_retention_ms",
                self.log_retention_ms.to_string(),
                "must be >= -1",
            ));
        }
        if self.log_retention_bytes < -1 {
            return Err(bad(
                "log_retention_bytes",
                self.log_retention_bytes.to_string(),
                "must be >= -1",
            ));
        }
        if !(1..=crate::topics::MAX_PARTITIONS_PER_TOPIC)
            .contains(&self.offsets_topic_num_partitions)
        {
            return Err(bad(
                "offsets_topic_num_partitions",
                self.offsets_topic_num_partitions.to_string(),
                "must be between 1 and 10000",
            ));
        }
        if self.group_consumer_heartbeat_interval_ms < 1
            || self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms
        {
            return Err(bad(
                "group_consumer_heartbeat_interval_ms",
                self.group_consumer_heartbeat_interval_ms.to_string(),
                "must be positive and below group_consumer_session_timeout_ms",
            ));
        }
        if self.offsets_retention_minutes < 1 {
            return Err(bad(
                "offsets_retention_minutes",
                self.offsets_retention_minutes.to_string(),
                "must be at least 1",
            ));
        }
        if self.log_retention_check_interval_ms == 0 {
            return Err(bad(
                "log_retention_check_interval_ms",
                "0".into(),
                "must be >= 1",
            ));
        }
        if let Some(v) = self.log_flush_interval_messages.filter(|v| *v < 1) {
            return Err(bad(
                "log_flush_interval_messages",
                v.to_string(),
                "must be >= 1",
            ));
        }
        if let Some(v) = self.log_flush_interval_ms.filter(|v| *v < 0) {
            return Err(bad("log_flush_interval_ms", v.to_string(), "must be >= 0"));
        }
        if !matches!(
            self.log_message_timestamp_type.as_str(),
            "CreateTime" | "LogAppendTime"
        ) {
            return Err(bad(
                "log_message_timestamp_type",
                self.log_message_timestamp_type.clone(),
                "must be CreateTime or LogAppendTime",
            ));
        }
        for (k, v) in &self.broker_configs {
            crate::topic_config::validate_broker_default(k, v).map_err(|e| {
                ConfigError::Invalid {
                    key: "broker_configs",
                    value: format!("{k}={v}"),
                    reason: e.to_string(),
                }
            })?;
        }
        let node = u64::try_from(self.node_id).unwrap_or_default();
        let mut roles = Roles {
            broker: false,
            controller: false,
        };
        for r in self
            .roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            match r {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                _ => {
                    return Err(bad(
                        "roles",
                        self.roles.clone(),
                        "expected broker, controller or broker,controller",
                    ))
                }
            }
        }
        if !roles.broker && !roles.controller {
            return Err(bad("roles", self.roles.clone(), "no role given"));
        }
        if !roles.controller && self.controller_voters.trim().is_empty() {
            return Err(bad(
                "controller_voters",
                String::new(),
                "a node without the controller role needs the voters of the metadata quorum",
            ));
        }
        let voters = if self.controller_voters.trim().is_empty() {
            std::collections::BTreeMap::from([(node, String::new())])
        } else {
            let voters = parse_voters(&self.controller_voters)
                .map_err(|e| bad("controller_voters", self.controller_voters.clone(), &e))?;
            if !roles.controller && voters.contains_key(&node) {
                return Err(bad(
                    "controller_voters",
                    self.controller_voters.clone(),
                    &format!(
                        "node id {} is a voter but this node has no controller role; broker-only nodes need ids of their own",
                        self.node_id
                    ),
                ));
            }
            if roles.controller && !voters.contains_key(&node) {
                let ids: Vec<String> = voters.keys().map(u64::to_string).collect();
                return Err(bad(
                    "controller_voters",
                    self.controller_voters.clone(),
                    &format!(
                        "node id {} is not one of the voters ({})",
                        self.node_id,
                        ids.join(", ")
                    ),
                ));
            }
            voters
        };
        let controller_listen = match (self.controller_listen.as_str(), voters.get(&node)) {
            ("", Some(addr)) if !addr.is_empty() => {
                resolve(addr).map_err(|e| bad("controller_voters", addr.clone(), &e))?
            }
            ("", _) => SocketAddr::from(([127, 0, 0, 1], 0)),
            (addr, _) => resolve(addr).map_err(|e| bad("controller_listen", addr.into(), &e))?,
        };
        if self.broker_session_timeout_ms < 100 {
            return Err(bad(
                "broker_session_timeout_ms",
                self.broker_session_timeout_ms.to_string(),
                "must be >= 100",
            ));
        }
        let heartbeat = i64::try_from(self.broker_heartbeat_interval_ms).unwrap_or(i64::MAX);
        if heartbeat == 0 || heartbeat >= self.broker_session_timeout_ms {
            return Err(bad(
                "broker_heartbeat_interval_ms",
                self.broker_heartbeat_interval_ms.to_string(),
                "must be >= 1 and below broker_session_timeout_ms",
            ));
        }
        let replication_listen = match self.replication_listen.as_str() {
            "" => SocketAddr::new(listen.ip(), 0),
            addr => resolve(addr).map_err(|e| bad("replication_listen", addr.into(), &e))?,
        };
        let replication_peer_overrides = parse_peer_overrides(&self.replication_peer_overrides)
            .map_err(|e| {
                bad(
                    "replication_peer_overrides",
                    self.replication_peer_overrides.clone(),
                    &e,
                )
            })?;
        for (key, value) in [
            (
                "replica_heartbeat_interval_ms",
                self.replica_heartbeat_interval_ms,
            ),
            (
                "replica_election_timeout_ms",
                self.replica_election_timeout_ms,
            ),
        ] {
            if value < 10 {
                return Err(bad(key, value.to_string(), "must be >= 10"));
            }
        }
        if self.rack_aware_selector().is_none() {
            return Err(bad(
                "replica_selector_class",
                self.replica_selector_class.clone(),
                "must be empty, LeaderSelector or RackAwareReplicaSelector (org.apache.kafka.common.replica.*)",
            ));
        }
        if self.leader_imbalance_check_interval_seconds == 0 {
            return Err(bad(
                "leader_imbalance_check_interval_seconds",
                "0".into(),
                "must be >= 1",
            ));
        }
        if self.leader_imbalance_per_broker_percentage > 100 {
            return Err(bad(
                "leader_imbalance_per_broker_percentage",
                self.leader_imbalance_per_broker_percentage.to_string(),
                "must be a percentage (0..=100)",
            ));
        }
        if self.replica_heartbeat_interval_ms >= self.replica_election_timeout_ms {
            return Err(bad(
                "replica_heartbeat_interval_ms",
                self.replica_heartbeat_interval_ms.to_string(),
                "must be below replica_election_timeout_ms",
            ));
        }
        for (key, value) in [
            (
                "default_replication_factor",
                self.default_replication_factor,
            ),
            (
                "offsets_topic_replication_factor",
                self.offsets_topic_replication_factor,
            ),
            (
                "transaction_state_log_replication_factor",
                self.transaction_state_log_replication_factor,
            ),
        ] {
            if value < 1 {
                return Err(bad(key, value.to_string(), "must be >= 1"));
            }
        }
        Ok(RuntimeConfig {
            listen,
            advertised_host: host,
            advertised_port: i32::from(port),
            metrics_listen,
            voters,
            controller_listen,
            roles,
            replication_listen,
            replication_peer_overrides,
            broker: self,
        })
    }
}

/// Parses `ID=HOST:PORT,...` (`--replication-peer-overrides`).
fn parse_peer_overrides(text: &str) -> Result<std::collections::BTreeMap<u64, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id"))?;
        if !addr.contains(':') {
            return Err(format!("{addr:?} is not HOST:PORT"));
        }
        out.insert(id, addr.trim().to_string());
    }
    Ok(out)
}

/// Parses `1@host:9093,2@host:9094`: ids unique, every address HOST:PORT with a numeric port.
pub fn parse_voters(s: &str) -> Result<std::collections::BTreeMap<u64, String>, String> {
    let mut voters = std::collections::BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("entry '{entry}' is not ID@HOST:PORT"))?;
        let id: u64 = id.parse().map_err(|_| {
            format!("entry '{entry}': node id '{id}' is not a non-negative integer")
        })?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("entry '{entry}': address '{addr}' is not HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!(
                "entry '{entry}': address '{addr}' is not HOST:PORT with a port in 0..=65535"
            ));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voters given".into());
    }
    Ok(voters)
}

/// Resolves `host:port` to one socket address (the first the resolver returns).
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_voters() {
        let v = parse_voters("1@127.0.0.1:9093, 2@localhost:9094,3@[::1]:9095").expect("valid");
        assert_eq!(v.len(), 3);
        assert_eq!(v[&3], "[::1]:9095");
    }

    #[test]
    fn rejects_bad_voters() {
        for bad in ["", "1", "x@h:1", "1@h", "1@:9", "1@h:99999", "1@h:1,1@h:2"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn voters_must_include_this_node() {
        let cfg = BrokerConfig {
            node_id: 4,
            controller_voters: "1@127.0.0.1:1,2@127.0.0.1:2".into(),
            ..BrokerConfig::default()
        };
        let e = cfg.validate().expect_err("not a voter").to_string();
        assert!(
            e.contains("node id 4 is not one of the voters (1, 2)"),
            "{e}"
        );
        let cfg = BrokerConfig {
            node_id: 2,
            controller_voters: "1@127.0.0.1:1,2@127.0.0.1:2".into(),
            ..BrokerConfig::default()
        };
        let rt = cfg.validate().expect("valid");
        assert_eq!(rt.controller_listen, "127.0.0.1:2".parse().expect("addr"));
        let single = BrokerConfig::default().validate().expect("valid");
        assert_eq!(single.voters.len(), 1);
        assert_eq!(single.controller_listen.port(), 0);
        assert!(single.roles.broker && single.roles.controller);
    }

    #[test]
    fn roles_are_checked_against_the_voters() {
        let voters = "1@127.0.0.1:1,2@127.0.0.1:2".to_string();
        let with = |node_id: i32, roles: &str, voters: &str| BrokerConfig {
            node_id,
            roles: roles.into(),
            controller_voters: voters.into(),
            ..BrokerConfig::default()
        };
        let b = with(5, "broker", &voters).validate().expect("broker-only");
        assert!(b.roles.broker && !b.roles.controller);
        let e = with(1, "broker", &voters)
            .validate()
            .expect_err("voter id")
            .to_string();
        assert!(e.contains("broker-only nodes need ids of their own"), "{e}");
        let e = with(5, "broker", "")
            .validate()
            .expect_err("no voters")
            .to_string();
        assert!(e.contains("needs the voters"), "{e}");
        let c = with(2, "controller", &voters)
            .validate()
            .expect("controller-only");
        assert!(!c.roles.broker && c.roles.controller);
        assert!(with(1, "zookeeper", &voters).validate().is_err());
        assert!(with(1, "", &voters).validate().is_err());
    }

    #[test]
    fn defaults_validate_to_the_embedded_single_node() {
        let rt = BrokerConfig::default()
            .validate()
            .expect("defaults are valid");
        assert_eq!(rt.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(rt.advertised_host, "127.0.0.1");
        assert_eq!(rt.advertised_port, 9092);
        assert_eq!(rt.metrics_listen.map(|a| a.port()), Some(9644));
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1000\"\nnum_partitions = 3\nunknown_key = 1\n",
        )
        .expect("write");
        let args = BrokerArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2000".into()),
            ..Default::default()
        };
        let cfg = BrokerConfig::load(&args).expect("load");
        assert_eq!(cfg.listen, "127.0.0.1:2000");
        assert_eq!(cfg.num_partitions, 3);
    }

    #[test]
    fn any_topic_default_can_be_set_by_flag_or_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "[broker_configs]\n\"log.cleanup.policy\" = \"compact\"\n",
        )
        .expect("write");
        let args = BrokerArgs {
            config: Some(path),
            broker_config: vec!["compression.type=zstd".into()],
            ..Default::default()
        };
        let cfg = BrokerConfig::load(&args).expect("load");
        assert_eq!(cfg.broker_configs.len(), 2);
        let rt = cfg.validate().expect("valid");
        let layers = rt.broker.layers();
        let settings = layers.topic_settings(&Default::default());
        assert!(settings.compact);
        assert_eq!(
            settings.compression,
            Some(kafka_protocol::records::Compression::Zstd)
        );
        let bad = BrokerConfig {
            broker_configs: [("log.retention.ms".to_string(), "soon".to_string())].into(),
            ..Default::default()
        };
        let e = bad.validate().expect_err("not a number");
        assert!(e.to_string().contains("log.retention.ms"), "{e}");
        let unknown = BrokerArgs {
            broker_config: vec!["no.such.key=1".into()],
            ..Default::default()
        };
        let e = BrokerConfig::load(&unknown)
            .expect("load")
            .validate()
            .expect_err("unknown key");
        assert!(e.to_string().contains("no.such.key"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = BrokerConfig {
            listen: "nope".into(),
            ..Default::default()
        }
        .validate()
        .expect_err("invalid listen");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = BrokerConfig::from_toml("num_partitions = \"x\"").expect_err("type error");
        assert!(err.contains("num_partitions"), "{err}");
        let err = BrokerConfig {
            log_message_timestamp_type: "Now".into(),
            ..Default::default()
        }
        .validate()
        .expect_err("bad timestamp type");
        assert!(err.to_string().contains("log_message_timestamp_type"));
    }
}
