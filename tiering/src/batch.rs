//! Kafka magic-v2 record batch headers: parsing, validation of produce payloads, and the header
//! rewrite the broker performs on append.
//!
//! Layout (big-endian, offsets in bytes):
//!
//! | offset | field                  | type |
//! | ------ | ---------------------- | ---- |
//! | 0      | base offset            | i64  |
//! | 8      | batch length           | i32  |
//! | 12     | partition leader epoch | i32  |
//! | 16     | magic (= 2)            | i8   |
//! | 17     | crc32c                 | u32  |
//! | 21     | attributes             | i16  |
//! | 23     | last offset delta      | i32  |
//! | 27     | base timestamp         | i64  |
//! | 35     | max timestamp          | i64  |
//! | 43     | producer id            | i64  |
//! | 51     | producer epoch         | i16  |
//! | 53     | base sequence          | i32  |
//! | 57     | records count          | i32  |
//! | 61     | records...             |      |
//!
//! `batch length` counts the bytes after the length field; the CRC covers everything from the
//! attributes to the end of the batch, so base offset and leader epoch can be rewritten without
//! recomputing it. Nothing in this module decompresses records.

use std::ops::Range;

/// Size of a magic-v2 batch header, up to and including the records count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the part counted by `batch_length`: base offset (8) and the length itself (4).
pub const LOG_OVERHEAD: usize = 12;

/// The only record batch format Strata stores.
pub const MAGIC_V2: i8 = 2;
/// Smallest legal `batch_length`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Why a byte range is not a well-formed magic-v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends before the batch (or its header) does: a torn or truncated tail.
    #[error("record batch truncated: needed {needed} bytes, {available} available")]
    TooShort {
        /// Bytes the batch claims to need.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// The magic byte is not 2; older message formats are not supported.
    #[error("unsupported record batch magic={magic}")]
    UnsupportedMagic {
        /// The magic byte found.
        magic: i8,
    },
    /// The batch length field is below the header size.
    #[error("corrupt record batch length={length}")]
    CorruptLength {
        /// The length field found.
        length: i32,
    },
    /// The stored CRC32C does not match the batch contents.
    #[error("record batch crc mismatch: stored={stored:#010x} computed={computed:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the batch.
        computed: u32,
    },
    /// A produce payload with no batches.
    #[error("empty record set")]
    Empty,
    /// The header's records count is negative.
    #[error("invalid record batch records_count={count}")]
    NegativeRecordCount {
        /// The count found.
        count: i32,
    },
    /// The header's last offset delta is negative.
    #[error("invalid record batch last_offset_delta={delta}")]
    NegativeOffsetDelta {
        /// The delta found.
        delta: i32,
    },
    /// The records count does not match the offset range (`last_offset_delta + 1`).
    #[error("inconsistent record batch: records_count={count} last_offset_delta={delta}")]
    InconsistentOffsetRange {
        /// The records count found.
        count: i32,
        /// The last offset delta found.
        delta: i32,
    },
}

/// The fixed-size header of a magic-v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field (the whole batch is `LOG_OVERHEAD + batch_length`).
    pub batch_length: i32,
    /// Leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 once parsed.
    pub magic: i8,
    /// CRC32C over attributes..end of batch.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (record timestamps are deltas from it).
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (the append time for `LogAppendTime` batches).
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("slice of length 8"))
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("slice of length 4"))
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(buf[at..at + 2].try_into().expect("slice of length 2"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf`; checks the magic byte and that the length field is
    /// at least a header's worth. Does not check that the whole batch is present or its CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() > MAGIC_OFFSET && buf[MAGIC_OFFSET] as i8 != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic {
                magic: buf[MAGIC_OFFSET] as i8,
            });
        }
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: u32::from_be_bytes(
                buf[CRC_OFFSET..CRC_OFFSET + 4]
                    .try_into()
                    .expect("slice of length 4"),
            ),
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_OFFSET),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::CorruptLength {
                length: header.batch_length,
            });
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes, including base offset and length fields.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression_codec(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether timestamps are broker append times (`max_timestamp` is every record's timestamp).
    pub fn has_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// Sequence number of the last record, wrapping past `i32::MAX` to 0 as Kafka producers do.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    /// Whether the batch comes from an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Adds `delta` to a producer sequence number, wrapping from `i32::MAX` to 0 (Kafka semantics).
pub fn increment_sequence(sequence: i32, delta: i32) -> i32 {
    if sequence > i32::MAX - delta {
        delta - (i32::MAX - sequence) - 1
    } else {
        sequence + delta
    }
}

/// CRC32C of a whole batch as stored in its header (attributes through the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// Checks the stored CRC of one whole batch (`batch` must be exactly one batch).
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Splits a produce payload into batches and checks each one (magic 2, sane length, CRC32C,
/// non-negative and consistent record count and offset delta) without decompressing anything.
/// The payload must be non-empty and end exactly at a batch boundary.
pub fn validate_batches(records: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut headers = Vec::new();
    for item in BatchIter::new(records).verify_crc(true) {
        let (header, _range) = item?;
        if header.records_count < 0 {
            return Err(BatchError::NegativeRecordCount {
                count: header.records_count,
            });
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::NegativeOffsetDelta {
                delta: header.last_offset_delta,
            });
        }
        if i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1 {
            return Err(BatchError::InconsistentOffsetRange {
                count: header.records_count,
                delta: header.last_offset_delta,
            });
        }
        headers.push(header);
    }
    Ok(headers)
}

/// Rewrites the header fields the broker owns: base offset and partition leader epoch (both
/// outside the CRC), and for `LogAppendTime` topics the timestamp type bit, base and max
/// timestamps, after which the CRC is recomputed.
///
/// # Panics
/// If `batch` is shorter than a batch header; callers pass a batch that passed
/// [`validate_batches`].
pub fn rewrite_batch_header(
    batch: &mut [u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "rewrite_batch_header needs a validated batch"
    );
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(t) = log_append_time_ms {
        let attributes = be_i16(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
        batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8].copy_from_slice(&t.to_be_bytes());
        batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&t.to_be_bytes());
        let crc = compute_crc(batch);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Iterates over the batches in a byte slice, yielding each header with its byte range.
///
/// Ends with `None` exactly at a batch boundary (a clean end). A partial batch or header at the
/// end yields one `Err(BatchError::TooShort)` (a torn tail), then `None`. Any other error is also
/// yielded once and ends the iteration.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
    verify_crc: bool,
    done: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterates over `buf` from its start, checking structure but not CRCs.
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            buf,
            position: 0,
            verify_crc: false,
            done: false,
        }
    }

    /// Also checks each batch's CRC32C (as recovery and produce validation do).
    pub fn verify_crc(mut self, verify: bool) -> BatchIter<'a> {
        self.verify_crc = verify;
        self
    }

    /// Byte position just past the last batch yielded successfully.
    pub fn position(&self) -> usize {
        self.position
    }

    fn next_batch(&mut self) -> Result<(BatchHeader, Range<usize>), BatchError> {
        let rest = &self.buf[self.position..];
        let header = BatchHeader::parse(rest)?;
        let size = header.total_size();
        if size > rest.len() {
            return Err(BatchError::TooShort {
                needed: size,
                available: rest.len(),
            });
        }
        if self.verify_crc {
            verify_crc(&header, &rest[..size])?;
        }
        let range = self.position..self.position + size;
        self.position += size;
        Ok((header, range))
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.position >= self.buf.len() {
            return None;
        }
        let item = self.next_batch();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builds real record batches with kafka-protocol's encoder.

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Producer identity for idempotent test batches.
    #[derive(Debug, Clone, Copy)]
    pub struct Producer {
        pub id: i64,
        pub epoch: i16,
        pub base_sequence: i32,
    }

    /// Encodes one batch of `count` records with timestamps `timestamps[i]` (or `base_ts + i`).
    pub fn batch_with(
        count: usize,
        timestamps: &[i64],
        compression: Compression,
        producer: Option<Producer>,
    ) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: producer.map_or(-1, |p| p.id),
                producer_epoch: producer.map_or(-1, |p| p.epoch),
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder only groups records whose offset - sequence is constant.
                sequence: producer.map_or(i as i32, |p| p.base_sequence.wrapping_add(i as i32)),
                timestamp: timestamps.get(i).copied().unwrap_or(1_000 + i as i64),
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{i}-{}", "x".repeat(i % 7)))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        let mut buf = buf.to_vec();
        assert_eq!(
            super::BatchHeader::parse(&buf).unwrap().total_size(),
            buf.len(),
            "the encoder produced one batch"
        );
        if producer.is_none() {
            // Non-idempotent batches carry base_sequence -1, as Kafka clients send them.
            buf[53..57].copy_from_slice(&(-1i32).to_be_bytes());
            let crc = super::compute_crc(&buf);
            buf[super::CRC_OFFSET..super::CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        }
        buf
    }

    /// An uncompressed, non-idempotent batch of `count` records.
    pub fn batch(count: usize) -> Vec<u8> {
        batch_with(count, &[], Compression::None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn parses_encoder_output_for_every_codec() {
        for (codec_id, compression) in ALL.into_iter().enumerate() {
            let producer = Producer {
                id: 7,
                epoch: 3,
                base_sequence: 10,
            };
            let buf = batch_with(4, &[5, 9, 7, 8], compression, Some(producer));
            let headers = validate_batches(&buf).unwrap();
            assert_eq!(headers.len(), 1);
            let h = headers[0];
            assert_eq!(h.total_size(), buf.len());
            assert_eq!(h.compression_codec() as usize, codec_id);
            assert_eq!(h.records_count, 4);
            assert_eq!(h.last_offset(), 3);
            assert_eq!(h.base_timestamp, 5);
            assert_eq!(h.max_timestamp, 9);
            assert_eq!(h.producer_id, 7);
            assert_eq!(h.producer_epoch, 3);
            assert_eq!(h.base_sequence, 10);
            assert_eq!(h.last_sequence(), 13);
            assert!(h.has_producer_id());
            assert!(!h.is_transactional() && !h.is_control() && !h.has_log_append_time());
        }
    }

    #[test]
    fn validates_several_batches_and_rejects_trailing_garbage() {
        let mut buf = batch(3);
        buf.extend(batch_with(2, &[], Compression::Gzip, None));
        assert_eq!(validate_batches(&buf).unwrap().len(), 2);
        buf.push(0);
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::TooShort { .. })
        ));
    }

    #[test]
    fn rejects_empty_bad_magic_bad_length_and_bad_crc() {
        assert_eq!(validate_batches(&[]), Err(BatchError::Empty));

        let mut buf = batch(2);
        buf[MAGIC_OFFSET] = 1;
        assert_eq!(
            validate_batches(&buf),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );

        let mut buf = batch(2);
        buf[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(
            validate_batches(&buf),
            Err(BatchError::CorruptLength { length: 10 })
        );

        let mut buf = batch(2);
        let claimed = buf.len() as i32;
        buf[8..12].copy_from_slice(&claimed.to_be_bytes());
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::TooShort { .. })
        ));

        let mut buf = batch(2);
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn rejects_negative_and_inconsistent_counts() {
        let fix_crc = |buf: &mut Vec<u8>| {
            let crc = compute_crc(buf);
            buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        };
        let mut buf = batch(2);
        buf[57..61].copy_from_slice(&(-1i32).to_be_bytes());
        fix_crc(&mut buf);
        assert_eq!(
            validate_batches(&buf),
            Err(BatchError::NegativeRecordCount { count: -1 })
        );

        let mut buf = batch(2);
        buf[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        fix_crc(&mut buf);
        assert_eq!(
            validate_batches(&buf),
            Err(BatchError::NegativeOffsetDelta { delta: -1 })
        );

        let mut buf = batch(2);
        buf[23..27].copy_from_slice(&5i32.to_be_bytes());
        fix_crc(&mut buf);
        assert!(matches!(
            validate_batches(&buf),
            Err(BatchError::InconsistentOffsetRange { .. })
        ));
    }

    #[test]
    fn rewrite_keeps_crc_valid_without_append_time() {
        let mut buf = batch(3);
        let crc_before = BatchHeader::parse(&buf).unwrap().crc;
        rewrite_batch_header(&mut buf, 1234, 9, None);
        let h = validate_batches(&buf).unwrap()[0];
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 9);
        assert_eq!(h.crc, crc_before);
        assert!(!h.has_log_append_time());
    }

    #[test]
    fn rewrite_with_append_time_recomputes_crc_for_every_codec() {
        for compression in ALL {
            let mut buf = batch_with(3, &[], compression, None);
            rewrite_batch_header(&mut buf, 50, 2, Some(99_999));
            let h = validate_batches(&buf).unwrap()[0];
            assert!(h.has_log_append_time());
            assert_eq!(h.max_timestamp, 99_999);
            assert_eq!(h.base_timestamp, 99_999);
            assert_eq!(h.compression_codec(), compression as u8);
            // kafka-protocol's decoder checks the CRC too and still reads every record.
            let set = RecordBatchDecoder::decode(&mut bytes::Bytes::from(buf)).unwrap();
            assert_eq!(set.records.len(), 3);
            assert_eq!(set.records[2].offset, 52);
        }
    }

    #[test]
    fn iter_distinguishes_clean_end_from_torn_tail() {
        let mut buf = batch(1);
        buf.extend(batch(2));
        let items: Vec<_> = BatchIter::new(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));

        let torn = &buf[..buf.len() - 5];
        let mut iter = BatchIter::new(torn);
        assert!(iter.next().unwrap().is_ok());
        let first_end = iter.position();
        assert!(matches!(
            iter.next(),
            Some(Err(BatchError::TooShort { .. }))
        ));
        assert!(iter.next().is_none());
        assert_eq!(iter.position(), first_end);

        let mut header_torn = BatchIter::new(&buf[..first_end + 30]);
        assert!(header_torn.next().unwrap().is_ok());
        assert!(matches!(
            header_torn.next(),
            Some(Err(BatchError::TooShort {
                needed: BATCH_HEADER_LEN,
                available: 30
            }))
        ));
    }

    #[test]
    fn sequence_wraps_to_zero() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
    }

    #[test]
    fn error_messages_are_lowercase_with_context() {
        let msg = BatchError::CrcMismatch {
            stored: 1,
            computed: 2,
        }
        .to_string();
        assert_eq!(
            msg,
            "record batch crc mismatch: stored=0x00000001 computed=0x00000002"
        );
    }
}
