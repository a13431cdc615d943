//! Per-partition log configuration (the topic-level `segment.*` / `retention.*` settings).

/// Which timestamp a topic's records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// The producer's timestamps are kept as sent.
    #[default]
    CreateTime,
    /// The broker stamps each batch with its append time.
    LogAppendTime,
}

/// Settings that govern how a partition log rolls, indexes and retains segments.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll to a new segment when the next batch would make the active one larger than this.
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is older than this many milliseconds.
    pub segment_ms: i64,
    /// Delete sealed segments whose newest timestamp is older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the log is larger than this; -1 is unlimited.
    pub retention_bytes: i64,
    /// Add an offset index entry after at least this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Largest batch (in bytes, whole batch) accepted by an append.
    pub max_message_bytes: u32,
    /// Whether producer timestamps are kept or replaced by the append time.
    pub timestamp_type: TimestampType,
    /// Kafka's `segment.index.bytes`; accepted for compatibility, indexes here are not preallocated.
    pub segment_index_bytes: u32,
}

impl Default for LogConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            segment_index_bytes: 10 * 1024 * 1024,
        }
    }
}
