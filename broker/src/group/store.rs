//! The records the group coordinator writes to `__consumer_offsets`, and how they are read back.
//!
//! Every record has a key and a value in our own versioned big-endian encoding (strings are an i16
//! length, -1 for null, then UTF-8; byte arrays an i32 length then the bytes). The key starts with an
//! i16 *kind*, which is also the key's format version:
//!
//! | kind | key fields | value (starts with an i16 value version, currently 0) |
//! | --- | --- | --- |
//! | 0 offset commit | group, topic, i32 partition | i64 offset, i32 leader epoch, nullable metadata, i64 commit timestamp ms |
//! | 1 group metadata | group | protocol type, nullable protocol, i32 generation, nullable leader, i32 member count, then per member: id, nullable instance id, client id, client host, i32 session timeout, i32 rebalance timeout, bytes subscription, bytes assignment; value version 1 (KIP-848 groups) appends i8 group type (1 = consumer; protocol is the assignor, generation the group epoch, subscription the topic names separated by newlines) |
//!
//! A null value is a tombstone: the offset (kind 0) or the whole group (kind 1) was deleted. Later
//! records win. The topic is compacted by policy, but since compaction is not implemented yet every
//! record stays and replay reads the whole log.
//!
//! Write order and commit point: the coordinator appends one batch (magic 2, uncompressed) through
//! [`crate::replica::Partition::produce`] with acks=-1 and only then updates its in-memory state and
//! answers; a crash before the fsync loses the commit, which the client was never told succeeded. On
//! start every partition is replayed before the listener accepts requests; an undecodable record
//! stops the broker rather than silently dropping commits (the format is read strictly).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::classic::{StoredGroup, StoredMember};
use super::offsets::CommittedOffset;

const KIND_OFFSET: i16 = 0;
const KIND_GROUP: i16 = 1;
const VALUE_VERSION: i16 = 0;
/// Group metadata value version 1 appends an i8 group type (0 classic, 1 consumer, KIP-848).
const GROUP_VALUE_VERSION: i16 = 1;

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupRecord {
    /// An offset commit, or its deletion (`None`).
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The commit; `None` is a tombstone.
        value: Option<CommittedOffset>,
    },
    /// Group metadata, or the group's deletion (`None`).
    Group {
        /// Group id.
        group: String,
        /// Metadata; `None` is a tombstone.
        value: Option<StoredGroup>,
    },
}

/// A record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("__consumer_offsets record: {0}")]
pub struct DecodeError(String);

fn put_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
            b.put_i16(len);
            b.put_slice(&s.as_bytes()[..len as usize]);
        }
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
    b.put_slice(v);
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            return Err(DecodeError(format!(
                "truncated: need {n} bytes, {} left",
                self.0.remaining()
            )));
        }
        Ok(())
    }

    fn i8(&mut self) -> Result<i8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_i8())
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        self.need(len)?;
        let raw = self.0.split_to(len);
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| DecodeError("string is not UTF-8".into()))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        self.opt_str()?
            .ok_or_else(|| DecodeError("unexpected null string".into()))
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len =
            usize::try_from(self.i32()?).map_err(|_| DecodeError("negative byte length".into()))?;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
}

/// Key of an offset commit.
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(KIND_OFFSET);
    put_str(&mut b, Some(group));
    put_str(&mut b, Some(topic));
    b.put_i32(partition);
    b.freeze()
}

/// Value of an offset commit.
pub fn offset_value(o: &CommittedOffset) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    b.put_i64(o.offset);
    b.put_i32(o.leader_epoch);
    put_str(&mut b, o.metadata.as_deref());
    b.put_i64(o.commit_timestamp_ms);
    b.freeze()
}

/// Key of a group's metadata.
pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(KIND_GROUP);
    put_str(&mut b, Some(group));
    b.freeze()
}

/// Value of a group's metadata.
pub fn group_value(g: &StoredGroup) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(if g.consumer {
        GROUP_VALUE_VERSION
    } else {
        VALUE_VERSION
    });
    put_str(&mut b, Some(&g.protocol_type));
    put_str(&mut b, g.protocol.as_deref());
    b.put_i32(g.generation);
    put_str(&mut b, g.leader.as_deref());
    b.put_i32(i32::try_from(g.members.len()).unwrap_or(i32::MAX));
    for m in &g.members {
        put_str(&mut b, Some(&m.id));
        put_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, Some(&m.client_id));
        put_str(&mut b, Some(&m.client_host));
        b.put_i32(m.session_timeout_ms);
        b.put_i32(m.rebalance_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    if g.consumer {
        b.put_i8(1);
    }
    b.freeze()
}

/// Decodes one record's key and value.
pub fn decode(key: &Bytes, value: Option<&Bytes>) -> Result<GroupRecord, DecodeError> {
    let mut k = Reader(key.clone());
    let kind = k.i16()?;
    let mut version = VALUE_VERSION;
    let mut v = match value {
        Some(v) => {
            let mut r = Reader(v.clone());
            version = r.i16()?;
            let known =
                version == VALUE_VERSION || (kind == KIND_GROUP && version == GROUP_VALUE_VERSION);
            if !known {
                return Err(DecodeError(format!("unknown value version {version}")));
            }
            Some(r)
        }
        None => None,
    };
    match kind {
        KIND_OFFSET => {
            let group = k.str()?;
            let topic = k.str()?;
            let partition = k.i32()?;
            let value = match v.as_mut() {
                Some(r) => Some(CommittedOffset {
                    offset: r.i64()?,
                    leader_epoch: r.i32()?,
                    metadata: r.opt_str()?,
                    commit_timestamp_ms: r.i64()?,
                }),
                None => None,
            };
            Ok(GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        KIND_GROUP => {
            let group = k.str()?;
            let value = match v.as_mut() {
                Some(r) => {
                    let protocol_type = r.str()?;
                    let protocol = r.opt_str()?;
                    let generation = r.i32()?;
                    let leader = r.opt_str()?;
                    let n = r.i32()?;
                    let mut members = Vec::new();
                    for _ in 0..n.max(0) {
                        members.push(StoredMember {
                            id: r.str()?,
                            instance_id: r.opt_str()?,
                            client_id: r.str()?,
                            client_host: r.str()?,
                            session_timeout_ms: r.i32()?,
                            rebalance_timeout_ms: r.i32()?,
                            subscription: r.bytes()?,
                            assignment: r.bytes()?,
                        });
                    }
                    let consumer = if version == GROUP_VALUE_VERSION {
                        match r.i8()? {
                            0 => false,
                            1 => true,
                            t => return Err(DecodeError(format!("unknown group type {t}"))),
                        }
                    } else {
                        false
                    };
                    Some(StoredGroup {
                        protocol_type,
                        protocol,
                        generation,
                        leader,
                        members,
                        consumer,
                    })
                }
                None => None,
            };
            Ok(GroupRecord::Group { group, value })
        }
        other => Err(DecodeError(format!("unknown key kind {other}"))),
    }
}

/// One magic-v2 uncompressed batch holding `records` (key, value-or-tombstone).
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<Bytes, DecodeError> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now_ms,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| DecodeError(format!("cannot encode batch: {e}")))?;
    Ok(buf.freeze())
}

/// Decodes every record in `batches` (whole magic-v2 batches as read from the log).
pub fn decode_batches(mut batches: Bytes) -> Result<Vec<GroupRecord>, DecodeError> {
    let sets = RecordBatchDecoder::decode_all(&mut batches)
        .map_err(|e| DecodeError(format!("cannot decode batch: {e}")))?;
    let mut out = Vec::new();
    for set in sets {
        for r in set.records {
            if r.control {
                continue;
            }
            let key = r
                .key
                .ok_or_else(|| DecodeError("record without key".into()))?;
            out.push(decode(&key, r.value.as_ref())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_round_trips_and_is_byte_exact() {
        let o = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp_ms: 7,
        };
        let k = offset_key("g", "t", 1);
        assert_eq!(&k[..], &[0, 0, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
        let v = offset_value(&o);
        assert_eq!(
            &v[..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 3, 0, 1, b'm', 0, 0, 0, 0, 0, 0, 0, 7]
        );
        let batch = build_batch(&[(k.clone(), Some(v)), (k, None)], 1).expect("batch");
        let recs = decode_batches(batch).expect("decode");
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
                value: Some(o)
            }
        );
        assert!(matches!(&recs[1], GroupRecord::Offset { value: None, .. }));
    }

    #[test]
    fn group_metadata_round_trips() {
        let g = StoredGroup {
            protocol_type: "consumer".into(),
            protocol: Some("range".into()),
            generation: 5,
            leader: Some("m1".into()),
            members: vec![StoredMember {
                id: "m1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 30_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
            consumer: false,
        };
        let r = decode(&group_key("grp"), Some(&group_value(&g))).expect("decode");
        assert_eq!(
            r,
            GroupRecord::Group {
                group: "grp".into(),
                value: Some(g.clone())
            }
        );
        // A KIP-848 group is value version 1 with a trailing group type byte.
        let c = StoredGroup {
            consumer: true,
            leader: None,
            ..g
        };
        let v = group_value(&c);
        assert_eq!(&v[..2], &[0, 1]);
        assert_eq!(v[v.len() - 1], 1);
        let r = decode(&group_key("grp"), Some(&v)).expect("decode");
        assert_eq!(
            r,
            GroupRecord::Group {
                group: "grp".into(),
                value: Some(c)
            }
        );
        assert!(decode(&Bytes::from_static(&[0, 9]), None).is_err());
        assert!(decode(&offset_key("g", "t", 0), Some(&Bytes::from_static(&[0, 1]))).is_err());
    }
}
