//! Committed offsets and the bits of the consumer protocol the coordinator reads.

use bytes::Bytes;

/// One committed offset of a group for a topic-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record (-1 unknown).
    pub leader_epoch: i32,
    /// Client-supplied metadata string.
    pub metadata: Option<String>,
    /// When the commit was accepted (ms since the epoch).
    pub commit_timestamp_ms: i64,
}

/// Topics named in a consumer-protocol subscription (`ConsumerProtocolSubscription`, any version:
/// every version starts with `version: i16, topics: [string]`). Malformed input yields no topics.
pub fn subscription_topics(metadata: &Bytes) -> Vec<String> {
    let mut out = Vec::new();
    let b = &metadata[..];
    let mut pos = 2usize;
    let Some(count) = b.get(pos..pos + 4) else {
        return out;
    };
    let count = i32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    pos += 4;
    for _ in 0..count.max(0) {
        let Some(len) = b.get(pos..pos + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]);
        pos += 2;
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let Some(name) = b.get(pos..pos + len) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += len;
    }
    out
}

/// Whether the offset of an Empty group (or a simple consumer's commit) has outlived retention.
pub fn expired(offset: &CommittedOffset, empty_since_ms: i64, retention_ms: i64, now: i64) -> bool {
    offset.commit_timestamp_ms.max(empty_since_ms) + retention_ms <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_topics_from_a_subscription() {
        let mut b = vec![0u8, 1, 0, 0, 0, 2];
        for t in ["orders", "x"] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(subscription_topics(&Bytes::from(b)), vec!["orders", "x"]);
        assert!(subscription_topics(&Bytes::from_static(&[0, 1, 0, 0, 0, 9, 0])).is_empty());
    }

    #[test]
    fn retention_counts_from_the_later_of_commit_and_empty() {
        let o = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 100,
        };
        assert!(!expired(&o, 500, 1_000, 1_499));
        assert!(expired(&o, 500, 1_000, 1_500));
    }
}
