//! Record-exact lookups inside one batch (for ListOffsets by timestamp): decodes, and if needed
//! decompresses, the batch with kafka-protocol's decoder.

use crate::batch::BatchHeader;
use crate::decompress::{decompress_bounded, MAX_DECOMPRESSED_BATCH};
use crate::error::LogError;
use bytes::Bytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

/// Batches claiming more records than this are not decoded (a guard against hostile headers).
pub const MAX_DECODED_RECORDS: i32 = 1_000_000;

/// Decodes every record of one whole batch, decompressing through our own capped codecs (the
/// crate's have no output limit).
fn decode_records(batch: &[u8]) -> Result<(BatchHeader, Vec<Record>), LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.records_count > MAX_DECODED_RECORDS {
        return Err(LogError::RecordDecode {
            base_offset: header.base_offset,
            reason: format!(
                "records_count={} exceeds the decode limit of {MAX_DECODED_RECORDS}",
                header.records_count
            ),
        });
    }
    let bounded = |data: &mut Bytes, codec: Compression| -> anyhow::Result<Bytes> {
        decompress_bounded(data, codec, MAX_DECOMPRESSED_BATCH).map_err(anyhow::Error::msg)
    };
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(bounded)).map_err(
        |e| LogError::RecordDecode {
            base_offset: header.base_offset,
            reason: format!("{e:#}"),
        },
    )?;
    Ok((header, set.records))
}

/// Indexes (within the batch) of the records that have no key: a compacted topic refuses them.
pub fn keyless_record_indexes(batch: &[u8]) -> Result<Vec<i32>, LogError> {
    let (_, records) = decode_records(batch)?;
    Ok(records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i as i32)
        .collect())
}

/// Re-encodes one whole batch with `target` compression (a topic's `compression.type`), keeping every
/// record, its offset delta, timestamps, headers and the producer id/epoch/sequences, so idempotence
/// checks still see the original batch. Returns `None` when the batch already uses `target` or is a
/// control batch (those are never rewritten).
pub fn recompress_batch(batch: &[u8], target: Compression) -> Result<Option<Vec<u8>>, LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression_codec() == target as u8 || header.is_control() {
        return Ok(None);
    }
    let (_, records) = decode_records(batch)?;
    let mut out = bytes::BytesMut::with_capacity(batch.len());
    RecordBatchEncoder::encode(
        &mut out,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: target,
        },
    )
    .map_err(|e| LogError::RecordDecode {
        base_offset: header.base_offset,
        reason: format!("re-encode with {target:?}: {e:#}"),
    })?;
    let rebuilt = BatchHeader::parse(&out)?;
    if rebuilt.total_size() != out.len() || rebuilt.records_count != header.records_count {
        return Err(LogError::RecordDecode {
            base_offset: header.base_offset,
            reason: format!(
                "re-encoding with {target:?} did not give exactly one equivalent batch"
            ),
        });
    }
    Ok(Some(out.to_vec()))
}

/// `(offset, timestamp)` of every record in one whole batch. For `LogAppendTime` batches every
/// record's timestamp is the batch's max timestamp.
pub(crate) fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, LogError> {
    let (header, records) = decode_records(batch)?;
    let append_time = header.has_log_append_time();
    Ok(records
        .iter()
        .map(|r| {
            let ts = if append_time {
                header.max_timestamp
            } else {
                r.timestamp
            };
            (r.offset, ts)
        })
        .collect())
}

/// The first record (in offset order) with timestamp >= `timestamp`.
pub(crate) fn first_at_or_after(
    batch: &[u8],
    timestamp: i64,
) -> Result<Option<(i64, i64)>, LogError> {
    Ok(record_timestamps(batch)?
        .into_iter()
        .find(|(_, ts)| *ts >= timestamp))
}

/// The first record holding the batch's largest record timestamp.
pub(crate) fn max_timestamp_record(batch: &[u8]) -> Result<Option<(i64, i64)>, LogError> {
    let records = record_timestamps(batch)?;
    let mut best: Option<(i64, i64)> = None;
    for (offset, ts) in records {
        if best.is_none_or(|(_, b)| ts > b) {
            best = Some((offset, ts));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::rewrite_batch_header;
    use crate::batch::test_support::batch_with;
    use kafka_protocol::records::Compression;

    #[test]
    fn finds_keyless_records_through_compression() {
        use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy] {
            let keyed = batch_with(5, &[], compression, None);
            assert!(keyless_record_indexes(&keyed).expect("decode").is_empty());
            let records: Vec<Record> = (0..4)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i,
                    sequence: i as i32,
                    timestamp: 1_000,
                    key: (i % 2 == 0).then(|| Bytes::from_static(b"k")),
                    value: Some(Bytes::from_static(b"v")),
                    headers: Default::default(),
                })
                .collect();
            let mut buf = bytes::BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                records.iter(),
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .expect("encode");
            assert_eq!(
                keyless_record_indexes(&buf).expect("decode"),
                vec![1, 3],
                "{compression:?}"
            );
        }
    }

    #[test]
    fn recompression_keeps_records_and_producer_identity() {
        use crate::batch::test_support::Producer;
        let producer = Producer {
            id: 7,
            epoch: 2,
            base_sequence: 40,
        };
        let original = batch_with(
            6,
            &[10, 30, 20, 50, 40, 60],
            Compression::Gzip,
            Some(producer),
        );
        let before = BatchHeader::parse(&original).expect("header");
        for target in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let out = recompress_batch(&original, target)
                .expect("recompress")
                .expect("codec differs, so it is rewritten");
            crate::batch::validate_batches(&out).expect("a valid batch");
            let after = BatchHeader::parse(&out).expect("header");
            assert_eq!(after.compression_codec(), target as u8);
            assert_eq!(
                (after.producer_id, after.producer_epoch, after.base_sequence),
                (
                    before.producer_id,
                    before.producer_epoch,
                    before.base_sequence
                )
            );
            assert_eq!(after.records_count, before.records_count);
            assert_eq!(after.max_timestamp, before.max_timestamp);
            assert_eq!(
                record_timestamps(&out).expect("ts"),
                record_timestamps(&original).expect("ts")
            );
        }
        assert!(recompress_batch(&original, Compression::Gzip)
            .expect("same codec")
            .is_none());
    }

    #[test]
    fn finds_records_in_compressed_batches() {
        for compression in [Compression::None, Compression::Zstd, Compression::Lz4] {
            let mut b = batch_with(4, &[10, 30, 20, 30], compression, None);
            rewrite_batch_header(&mut b, 100, 0, None);
            assert_eq!(first_at_or_after(&b, 15).unwrap(), Some((101, 30)));
            assert_eq!(first_at_or_after(&b, 10).unwrap(), Some((100, 10)));
            assert_eq!(first_at_or_after(&b, 31).unwrap(), None);
            assert_eq!(max_timestamp_record(&b).unwrap(), Some((101, 30)));
        }
    }

    #[test]
    fn append_time_batches_use_max_timestamp() {
        let mut b = batch_with(3, &[1, 2, 3], Compression::Gzip, None);
        rewrite_batch_header(&mut b, 0, 0, Some(500));
        assert_eq!(first_at_or_after(&b, 400).unwrap(), Some((0, 500)));
        assert_eq!(max_timestamp_record(&b).unwrap(), Some((0, 500)));
    }

    #[test]
    fn refuses_huge_record_counts() {
        let mut b = batch_with(1, &[], Compression::None, None);
        b[57..61].copy_from_slice(&(MAX_DECODED_RECORDS + 1).to_be_bytes());
        assert!(matches!(
            record_timestamps(&b),
            Err(LogError::RecordDecode { .. })
        ));
    }
}
