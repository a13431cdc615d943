//! Topic-level rules every layer shares: the internal topics and the limits on requests. Name
//! rules belong to the metadata state machine (`controller::state::validate_topic_name`, which
//! also refuses '.'/'_' collisions); brokers only call it to refuse a bad name before a write.

use crate::error::BrokerError;

/// Topics the broker writes itself; clients may read them but never produce to, create or delete them.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Upper bound on partitions per topic, so a request cannot make us create millions of directories.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Whether `name` is a broker-internal topic.
pub fn is_internal_topic(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Checks a topic name with the metadata state machine's rules (INVALID_TOPIC_EXCEPTION).
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    controller::state::validate_topic_name(name)
        .map_err(|e| BrokerError::InvalidTopic(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            let e = validate_topic_name(bad).expect_err(bad);
            assert_eq!(e.code(), 17, "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(is_internal_topic("__consumer_offsets"));
        assert!(!is_internal_topic("orders"));
    }
}
