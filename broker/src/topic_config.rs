//! Topic configuration keys, their broker-level counterparts, validation, and how an effective value
//! is resolved: topic override -> dynamic per-broker -> dynamic cluster default -> static broker config
//! (file/env/flags) -> Kafka's default.
//!
//! Durability note: Kafka's default for `flush.messages`/`flush.ms` is Long.MAX ("never force"). Strata
//! reads the default as "fsync before answering acks=all" (group commit); setting either key relaxes it to
//! a periodic fsync, as Kafka users expect from those keys. See docs/rfcs/0002-durability.md.

use std::collections::BTreeMap;

use kafka_protocol::records::Compression;
use tiering::{LogConfig, TimestampType};

use crate::error::BrokerError;

/// Kafka's `ConfigSource` values used in DescribeConfigs.
pub mod source {
    /// Set on the topic.
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    /// Set dynamically for this broker.
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    /// Set dynamically as the cluster-wide default.
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    /// Set in the broker's file, environment or flags.
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    /// Kafka's default.
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's `ConfigType` values used in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// true/false.
    Boolean = 1,
    /// Free text within a set of allowed values.
    String = 2,
    /// 32-bit integer.
    Int = 3,
    /// 64-bit integer.
    Long = 5,
    /// Comma-separated list.
    List = 7,
}

/// One topic-level configuration key.
#[derive(Debug)]
pub struct TopicConfigDef {
    /// Topic key, e.g. `retention.ms`.
    pub name: &'static str,
    /// Broker key that supplies the default, e.g. `log.retention.ms`.
    pub broker_name: &'static str,
    /// Value type.
    pub kind: ConfigType,
    /// Kafka's default value.
    pub default: &'static str,
    /// One-line documentation.
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic-level key Strata understands.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef { name: "cleanup.policy", broker_name: "log.cleanup.policy", kind: ConfigType::List, default: "delete", doc: "delete and/or compact (compaction keeps all records until it is implemented)" },
    TopicConfigDef { name: "compression.type", broker_name: "compression.type", kind: ConfigType::String, default: "producer", doc: "producer keeps batches as the client compressed them; uncompressed, gzip, snappy, lz4 or zstd makes the broker re-encode batches in another codec" },
    TopicConfigDef { name: "retention.ms", broker_name: "log.retention.ms", kind: ConfigType::Long, default: "604800000", doc: "delete segments older than this; -1 keeps forever" },
    TopicConfigDef { name: "retention.bytes", broker_name: "log.retention.bytes", kind: ConfigType::Long, default: "-1", doc: "delete old segments past this partition size; -1 is unlimited" },
    TopicConfigDef { name: "segment.bytes", broker_name: "log.segment.bytes", kind: ConfigType::Int, default: "1073741824", doc: "segment file size before rolling" },
    TopicConfigDef { name: "segment.ms", broker_name: "log.roll.ms", kind: ConfigType::Long, default: "604800000", doc: "segment age before rolling" },
    TopicConfigDef { name: "max.message.bytes", broker_name: "message.max.bytes", kind: ConfigType::Int, default: "1048588", doc: "largest record batch accepted" },
    TopicConfigDef { name: "message.timestamp.type", broker_name: "log.message.timestamp.type", kind: ConfigType::String, default: "CreateTime", doc: "CreateTime or LogAppendTime" },
    TopicConfigDef { name: "flush.messages", broker_name: "log.flush.interval.messages", kind: ConfigType::Long, default: LONG_MAX, doc: "default: fsync before every acks=all answer; a smaller value fsyncs every N messages instead" },
    TopicConfigDef { name: "flush.ms", broker_name: "log.flush.interval.ms", kind: ConfigType::Long, default: LONG_MAX, doc: "default: fsync before every acks=all answer; a smaller value fsyncs every N ms instead" },
    TopicConfigDef { name: "index.interval.bytes", broker_name: "log.index.interval.bytes", kind: ConfigType::Int, default: "4096", doc: "bytes between offset index entries" },
    TopicConfigDef { name: "segment.index.bytes", broker_name: "log.index.size.max.bytes", kind: ConfigType::Int, default: "10485760", doc: "accepted for compatibility; indexes grow as needed" },
    TopicConfigDef { name: "min.insync.replicas", broker_name: "min.insync.replicas", kind: ConfigType::Int, default: "1", doc: "replicas (the leader included) that must hold a batch before acks=all is answered; fewer in sync gives NOT_ENOUGH_REPLICAS" },
    TopicConfigDef { name: "unclean.leader.election.enable", broker_name: "unclean.leader.election.enable", kind: ConfigType::Boolean, default: "false", doc: "accepted for compatibility" },
    TopicConfigDef { name: "delete.retention.ms", broker_name: "log.cleaner.delete.retention.ms", kind: ConfigType::Long, default: "86400000", doc: "accepted for compatibility (compaction)" },
    TopicConfigDef { name: "file.delete.delay.ms", broker_name: "log.segment.delete.delay.ms", kind: ConfigType::Long, default: "60000", doc: "accepted for compatibility" },
    TopicConfigDef { name: "preallocate", broker_name: "log.preallocate", kind: ConfigType::Boolean, default: "false", doc: "accepted for compatibility" },
    TopicConfigDef { name: "message.format.version", broker_name: "log.message.format.version", kind: ConfigType::String, default: "3.0-IV1", doc: "deprecated: accepted and ignored, as Kafka 3.x does; batches are always magic v2" },
    TopicConfigDef { name: "message.timestamp.before.max.ms", broker_name: "log.message.timestamp.before.max.ms", kind: ConfigType::Long, default: LONG_MAX, doc: "accepted for compatibility" },
    TopicConfigDef { name: "remote.storage.enable", broker_name: "log.remote.storage.enable", kind: ConfigType::Boolean, default: "true", doc: "offload sealed segments to the object store (KIP-405); Strata enables it by default; compacted topics stay local" },
    TopicConfigDef { name: "local.retention.ms", broker_name: "log.local.retention.ms", kind: ConfigType::Long, default: "-2", doc: "how long offloaded segments stay on local disk as well; -2 = retention.ms" },
    TopicConfigDef { name: "local.retention.bytes", broker_name: "log.local.retention.bytes", kind: ConfigType::Long, default: "-2", doc: "local bytes kept of offloaded segments; -2 = retention.bytes" },
    TopicConfigDef { name: "message.timestamp.after.max.ms", broker_name: "log.message.timestamp.after.max.ms", kind: ConfigType::Long, default: LONG_MAX, doc: "accepted for compatibility" },
];

/// Broker keys that are not topic defaults, shown by DescribeConfigs on the broker; read-only.
const READ_ONLY_BROKER_KEYS: &[(&str, ConfigType)] = &[
    ("node.id", ConfigType::Int),
    ("broker.id", ConfigType::Int),
    ("listeners", ConfigType::List),
    ("advertised.listeners", ConfigType::List),
    ("log.dirs", ConfigType::List),
    ("num.partitions", ConfigType::Int),
    ("default.replication.factor", ConfigType::Int),
    ("auto.create.topics.enable", ConfigType::Boolean),
    ("socket.request.max.bytes", ConfigType::Int),
    ("log.retention.check.interval.ms", ConfigType::Long),
];

/// The codec a `compression.type` value asks for: `Some(None)` for `producer` (keep the client's),
/// `None` for an unknown value.
pub fn compression_of(value: &str) -> Option<Option<Compression>> {
    Some(match value.trim() {
        "producer" => None,
        "uncompressed" | "none" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => return None,
    })
}

/// Checks a static broker default given by Kafka broker key (`log.retention.ms`) or topic key
/// (`retention.ms`); the error names the key.
pub fn validate_broker_default(key: &str, value: &str) -> Result<(), BrokerError> {
    let def = topic_def_by_broker_name(key)
        .or_else(|| topic_def(key))
        .ok_or_else(|| {
            BrokerError::InvalidConfig(format!("unknown topic config default `{key}`"))
        })?;
    validate_value(def, key, value)
}

/// Looks up a topic key.
pub fn topic_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Looks up a topic key by its broker-level name.
pub fn topic_def_by_broker_name(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.broker_name == name)
}

/// Checks the combination of a topic's overrides (each value is checked on its own first).
pub fn validate_topic_overrides(overrides: &BTreeMap<String, String>) -> Result<(), BrokerError> {
    for (k, v) in overrides {
        validate_topic_value(k, v)?;
    }
    let remote = overrides
        .get("remote.storage.enable")
        .map(|v| v.trim() == "true");
    let compact = overrides
        .get("cleanup.policy")
        .is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"));
    if remote == Some(true) && compact {
        return Err(BrokerError::InvalidConfig(
            "remote.storage.enable=true is not supported on compacted topics".into(),
        ));
    }
    Ok(())
}

/// Checks one topic config value; the error names the key and the value.
pub fn validate_topic_value(name: &str, value: &str) -> Result<(), BrokerError> {
    let def = topic_def(name)
        .ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config `{name}`")))?;
    validate_value(def, name, value)
}

fn validate_value(def: &TopicConfigDef, name: &str, value: &str) -> Result<(), BrokerError> {
    let invalid = |why: &str| BrokerError::InvalidConfig(format!("`{name}`={value:?}: {why}"));
    match def.kind {
        ConfigType::Int => {
            let v: i32 = value.trim().parse().map_err(|_| invalid("not an int"))?;
            let min = match def.name {
                "segment.bytes" => 14,
                "max.message.bytes" | "index.interval.bytes" | "segment.index.bytes" => 0,
                "min.insync.replicas" => 1,
                _ => i32::MIN,
            };
            if v < min {
                return Err(invalid(&format!("must be >= {min}")));
            }
        }
        ConfigType::Long => {
            let v: i64 = value.trim().parse().map_err(|_| invalid("not a long"))?;
            let min = match def.name {
                "retention.ms" | "retention.bytes" => -1,
                "local.retention.ms" | "local.retention.bytes" => -2,
                "segment.ms" | "flush.messages" => 1,
                _ => 0,
            };
            if v < min {
                return Err(invalid(&format!("must be >= {min}")));
            }
        }
        ConfigType::Boolean => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(invalid("must be true or false"));
            }
        }
        ConfigType::String => {
            let ok = match def.name {
                "message.timestamp.type" => matches!(value, "CreateTime" | "LogAppendTime"),
                "compression.type" => compression_of(value).is_some(),
                _ => true,
            };
            if !ok {
                return Err(invalid(match def.name {
                    "compression.type" => {
                        "must be producer, uncompressed, gzip, snappy, lz4 or zstd"
                    }
                    _ => "must be CreateTime or LogAppendTime",
                }));
            }
        }
        ConfigType::List => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            if parts.is_empty() || parts.iter().any(|p| !matches!(*p, "delete" | "compact")) {
                return Err(invalid("must be a list of delete, compact"));
            }
        }
    }
    Ok(())
}

/// The broker's configuration layers that topic defaults come from.
#[derive(Debug, Clone, Default)]
pub struct BrokerLayers {
    /// Values from the file/env/flags (broker keys), only those the user set or that differ from Kafka's.
    pub static_values: BTreeMap<String, String>,
    /// Dynamic cluster-wide defaults (AlterConfigs on broker resource "").
    pub dynamic_default: BTreeMap<String, String>,
    /// Dynamic per-broker values (AlterConfigs on broker resource "<node id>").
    pub dynamic_broker: BTreeMap<String, String>,
    /// Read-only broker values (listeners, node id, ...).
    pub read_only: BTreeMap<String, String>,
}

impl BrokerLayers {
    /// Effective value and source of a broker key that supplies a topic default.
    pub fn broker_value(&self, def: &TopicConfigDef) -> (String, i8) {
        let k = def.broker_name;
        if let Some(v) = self.dynamic_broker.get(k) {
            (v.clone(), source::DYNAMIC_BROKER_CONFIG)
        } else if let Some(v) = self.dynamic_default.get(k) {
            (v.clone(), source::DYNAMIC_DEFAULT_BROKER_CONFIG)
        } else if let Some(v) = self.static_values.get(k) {
            (v.clone(), source::STATIC_BROKER_CONFIG)
        } else {
            (def.default.to_string(), source::DEFAULT_CONFIG)
        }
    }

    /// Effective value and source of a topic key for a topic with `overrides`.
    pub fn topic_value(
        &self,
        def: &TopicConfigDef,
        overrides: &BTreeMap<String, String>,
    ) -> (String, i8) {
        match overrides.get(def.name) {
            Some(v) => (v.clone(), source::DYNAMIC_TOPIC_CONFIG),
            None => self.broker_value(def),
        }
    }

    /// Every broker key with its value, source, type and read-only flag, for DescribeConfigs.
    pub fn describe_broker(&self) -> Vec<DescribedConfig> {
        let mut out: Vec<DescribedConfig> = READ_ONLY_BROKER_KEYS
            .iter()
            .filter_map(|(k, kind)| {
                self.read_only.get(*k).map(|v| DescribedConfig {
                    name: (*k).to_string(),
                    value: v.clone(),
                    source: source::STATIC_BROKER_CONFIG,
                    kind: *kind,
                    read_only: true,
                    doc: "",
                })
            })
            .collect();
        out.extend(TOPIC_CONFIGS.iter().map(|def| {
            let (value, source) = self.broker_value(def);
            DescribedConfig {
                name: def.broker_name.to_string(),
                value,
                source,
                kind: def.kind,
                read_only: false,
                doc: def.doc,
            }
        }));
        out
    }

    /// Every topic key for a topic with `overrides`, for DescribeConfigs.
    pub fn describe_topic(&self, overrides: &BTreeMap<String, String>) -> Vec<DescribedConfig> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let (value, source) = self.topic_value(def, overrides);
                DescribedConfig {
                    name: def.name.to_string(),
                    value,
                    source,
                    kind: def.kind,
                    read_only: false,
                    doc: def.doc,
                }
            })
            .collect()
    }

    /// Checks a dynamic broker config change (only topic defaults are dynamic).
    pub fn validate_broker_value(name: &str, value: &str) -> Result<(), BrokerError> {
        match topic_def_by_broker_name(name) {
            Some(def) => validate_value(def, name, value),
            None if READ_ONLY_BROKER_KEYS.iter().any(|(k, _)| *k == name) => {
                Err(BrokerError::InvalidRequest(format!(
                    "broker config `{name}` cannot be updated dynamically"
                )))
            }
            None => Err(BrokerError::InvalidConfig(format!(
                "unknown broker config `{name}`"
            ))),
        }
    }

    /// The settings a partition log runs with, for a topic with `overrides`.
    pub fn topic_settings(&self, overrides: &BTreeMap<String, String>) -> TopicSettings {
        let get = |name: &str| -> String {
            let def = topic_def(name).expect("key is in TOPIC_CONFIGS");
            self.topic_value(def, overrides).0
        };
        let long = |name: &str, fallback: i64| get(name).trim().parse::<i64>().unwrap_or(fallback);
        let defaults = LogConfig::default();
        let compact_only = {
            let policy = get("cleanup.policy");
            !policy.split(',').any(|p| p.trim() == "delete")
        };
        let log = LogConfig {
            segment_bytes: long("segment.bytes", defaults.segment_bytes as i64).max(14) as u64,
            segment_ms: long("segment.ms", defaults.segment_ms).max(1),
            // A compact-only topic must not lose records to time/size retention.
            retention_ms: if compact_only {
                -1
            } else {
                long("retention.ms", defaults.retention_ms)
            },
            retention_bytes: if compact_only {
                -1
            } else {
                long("retention.bytes", defaults.retention_bytes)
            },
            index_interval_bytes: long("index.interval.bytes", 4096).clamp(1, i64::from(i32::MAX))
                as u32,
            max_message_bytes: long("max.message.bytes", i64::from(defaults.max_message_bytes))
                .clamp(0, i64::from(i32::MAX)) as u32,
            timestamp_type: if get("message.timestamp.type") == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            ..defaults
        };
        let flush = |name: &str| Some(long(name, i64::MAX)).filter(|v| *v != i64::MAX);
        let compact = get("cleanup.policy")
            .split(',')
            .any(|p| p.trim() == "compact");
        let total_ms = log.retention_ms;
        let total_bytes = log.retention_bytes;
        let local = |name: &str, total: i64| match long(name, -2) {
            -2 => total,
            v if total >= 0 && (v < 0 || v > total) => total,
            v => v,
        };
        TopicSettings {
            remote_storage: !compact && get("remote.storage.enable").trim() == "true",
            local_retention_ms: local("local.retention.ms", total_ms),
            local_retention_bytes: local("local.retention.bytes", total_bytes),
            log,
            flush_messages: flush("flush.messages"),
            flush_ms: flush("flush.ms"),
            compact,
            compression: compression_of(&get("compression.type")).flatten(),
            min_insync_replicas: usize::try_from(long("min.insync.replicas", 1).max(1))
                .unwrap_or(1),
            unclean_leader_election: get("unclean.leader.election.enable").trim() == "true",
        }
    }
}

/// One row of a DescribeConfigs answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedConfig {
    /// Key.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// `source::*`.
    pub source: i8,
    /// Value type.
    pub kind: ConfigType,
    /// Whether AlterConfigs may change it.
    pub read_only: bool,
    /// Documentation.
    pub doc: &'static str,
}

/// What a partition runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    /// The log's configuration.
    pub log: LogConfig,
    /// `flush.messages` if relaxed from the default.
    pub flush_messages: Option<i64>,
    /// `flush.ms` if relaxed from the default.
    pub flush_ms: Option<i64>,
    /// cleanup.policy includes `compact`: every record needs a key.
    pub compact: bool,
    /// `compression.type`: None = `producer` (store as sent), else the codec batches are stored in.
    pub compression: Option<Compression>,
    /// `remote.storage.enable` (never for compacted topics).
    pub remote_storage: bool,
    /// Effective `local.retention.ms` (resolved from -2, never above `retention.ms`).
    pub local_retention_ms: i64,
    /// Effective `local.retention.bytes` (resolved from -2, never above `retention.bytes`).
    pub local_retention_bytes: i64,
    /// `min.insync.replicas`: replicas (the leader included) that must hold an acks=all batch.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
}

impl TopicSettings {
    /// Whether acks=all waits for an fsync (the default) or only for the local append.
    pub fn fsync_before_ack(&self) -> bool {
        self.flush_messages.is_none() && self.flush_ms.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_order_topic_then_dynamic_then_static_then_default() {
        let mut layers = BrokerLayers::default();
        layers
            .static_values
            .insert("log.retention.ms".into(), "1000".into());
        let def = topic_def("retention.ms").expect("known");
        let none = BTreeMap::new();
        assert_eq!(
            layers.topic_value(def, &none),
            ("1000".into(), source::STATIC_BROKER_CONFIG)
        );
        layers
            .dynamic_default
            .insert("log.retention.ms".into(), "2000".into());
        assert_eq!(
            layers.topic_value(def, &none),
            ("2000".into(), source::DYNAMIC_DEFAULT_BROKER_CONFIG)
        );
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "3000".to_string());
        assert_eq!(
            layers.topic_value(def, &o),
            ("3000".into(), source::DYNAMIC_TOPIC_CONFIG)
        );
        let seg = topic_def("segment.bytes").expect("known");
        assert_eq!(
            layers.topic_value(seg, &o),
            ("1073741824".into(), source::DEFAULT_CONFIG)
        );
        assert_eq!(layers.topic_settings(&o).log.retention_ms, 3000);
    }

    #[test]
    fn validation_rejects_bad_values_with_the_key() {
        assert!(validate_topic_value("retention.ms", "-1").is_ok());
        let e = validate_topic_value("retention.ms", "soon").expect_err("not a number");
        assert!(e.to_string().contains("retention.ms"));
        assert!(validate_topic_value("no.such.key", "1").is_err());
        assert!(validate_topic_value("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_value("cleanup.policy", "shred").is_err());
        assert!(validate_topic_value("compression.type", "gzip").is_ok());
        assert!(validate_topic_value("compression.type", "brotli").is_err());
        assert!(validate_topic_value("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn deprecated_message_format_version_is_accepted_like_kafka_3() {
        assert!(validate_topic_value("message.format.version", "0.10.0").is_ok());
        let layers = BrokerLayers::default();
        let mut o = BTreeMap::new();
        o.insert("message.format.version".to_string(), "0.10.0".to_string());
        assert_eq!(
            layers.topic_settings(&o),
            layers.topic_settings(&BTreeMap::new())
        );
    }

    #[test]
    fn flush_keys_relax_durability() {
        let layers = BrokerLayers::default();
        assert!(layers.topic_settings(&BTreeMap::new()).fsync_before_ack());
        let mut o = BTreeMap::new();
        o.insert("flush.ms".to_string(), "100".to_string());
        let s = layers.topic_settings(&o);
        assert!(!s.fsync_before_ack());
        assert_eq!(s.flush_ms, Some(100));
    }

    #[test]
    fn compact_only_topics_never_lose_records_to_retention() {
        let layers = BrokerLayers::default();
        let mut o = BTreeMap::new();
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        o.insert("retention.ms".to_string(), "10".to_string());
        assert_eq!(layers.topic_settings(&o).log.retention_ms, -1);
    }
}
