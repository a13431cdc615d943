//! Every object key Strata writes, built in one place so that no two writers can collide.
//!
//! Layout under the configured prefix:
//! ```text
//! <prefix>/cluster/metadata.json                                      broker metadata (topics, configs)
//! <prefix>/topics/<topic-id>/<partition>/manifest.json                the partition's remote manifest
//! <prefix>/topics/<topic-id>/<partition>/segments/<base:020>-<epoch>-<unique>.log
//! <prefix>/topics/<topic-id>/<partition>/segments/<base:020>-<epoch>-<unique>.indexes
//! ```
//! The topic id (not the name) keeps a re-created topic apart from the deleted one; the base offset,
//! the uploader's leader epoch and a random unique suffix keep two uploads of the same segment (a retry
//! after a lost response, or a deposed leader racing a new one) apart. Only the manifest decides which
//! upload is part of the log; the others are garbage that deletion removes.

use object_store::path::Path;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identity of one uploaded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentId {
    /// Offset of the segment's first batch.
    pub base_offset: i64,
    /// Leader epoch of the broker that uploaded it.
    pub leader_epoch: i32,
    /// Random suffix, unique per upload attempt.
    pub unique: Uuid,
}

impl SegmentId {
    /// A fresh id for an upload of the segment at `base_offset` by a leader at `leader_epoch`.
    pub fn new(base_offset: i64, leader_epoch: i32) -> SegmentId {
        SegmentId {
            base_offset,
            leader_epoch,
            unique: Uuid::new_v4(),
        }
    }

    fn stem(&self) -> String {
        format!(
            "{:020}-{}-{}",
            self.base_offset,
            self.leader_epoch,
            self.unique.simple()
        )
    }
}

/// Builds object keys under one prefix.
#[derive(Debug, Clone)]
pub struct ObjectKeys {
    prefix: Path,
}

impl ObjectKeys {
    /// Keys under `prefix` (may be empty; slashes separate levels).
    pub fn new(prefix: &str) -> ObjectKeys {
        ObjectKeys {
            prefix: Path::from(prefix.trim_matches('/')),
        }
    }

    fn under(&self, parts: &[&str]) -> Path {
        let mut path = self.prefix.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }

    /// The broker metadata document.
    pub fn cluster_metadata(&self) -> Path {
        self.under(&["cluster", "metadata.json"])
    }

    /// Everything stored for one topic (deleted with the topic).
    pub fn topic_prefix(&self, topic_id: Uuid) -> Path {
        self.under(&["topics", &topic_id.to_string()])
    }

    /// A partition's manifest.
    pub fn manifest(&self, topic_id: Uuid, partition: i32) -> Path {
        self.under(&[
            "topics",
            &topic_id.to_string(),
            &partition.to_string(),
            "manifest.json",
        ])
    }

    /// A segment's record batches (Kafka's `.log` format).
    pub fn segment_log(&self, topic_id: Uuid, partition: i32, id: &SegmentId) -> Path {
        self.segment_object(topic_id, partition, id, "log")
    }

    /// A segment's indexes bundle (offset index, time index, producer snapshot, leader epochs).
    pub fn segment_indexes(&self, topic_id: Uuid, partition: i32, id: &SegmentId) -> Path {
        self.segment_object(topic_id, partition, id, "indexes")
    }

    fn segment_object(&self, topic_id: Uuid, partition: i32, id: &SegmentId, ext: &str) -> Path {
        self.under(&[
            "topics",
            &topic_id.to_string(),
            &partition.to_string(),
            "segments",
            &format!("{}.{ext}", id.stem()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_per_upload_and_topic_incarnation() {
        let keys = ObjectKeys::new("/bucket-prefix/strata/");
        let topic = Uuid::from_u128(7);
        let a = SegmentId::new(100, 3);
        let b = SegmentId::new(100, 3);
        assert_ne!(
            keys.segment_log(topic, 0, &a),
            keys.segment_log(topic, 0, &b)
        );
        assert_ne!(
            keys.segment_log(topic, 0, &a),
            keys.segment_log(Uuid::from_u128(8), 0, &a)
        );
        assert_ne!(
            keys.segment_log(topic, 0, &a),
            keys.segment_log(topic, 1, &a)
        );
        let log = keys.segment_log(topic, 2, &a).to_string();
        assert!(
            log.starts_with(&format!(
                "bucket-prefix/strata/topics/{topic}/2/segments/00000000000000000100-3-"
            )),
            "{log}"
        );
        assert!(log.ends_with(".log"));
        assert!(keys
            .segment_indexes(topic, 2, &a)
            .to_string()
            .ends_with(".indexes"));
        assert_eq!(
            keys.manifest(topic, 2).to_string(),
            format!("bucket-prefix/strata/topics/{topic}/2/manifest.json")
        );
        assert!(keys
            .manifest(topic, 2)
            .prefix_matches(&keys.topic_prefix(topic)));
        assert_eq!(
            ObjectKeys::new("").cluster_metadata().to_string(),
            "cluster/metadata.json"
        );
    }
}
