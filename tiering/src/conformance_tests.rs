//! Conformance suite: one test body per behaviour, run against both `SegmentLog` and `MemoryLog`.

use kafka_protocol::records::Compression;

use crate::batch::test_support::{batch, batch_with, Producer};
use crate::{
    AppendOutcome, BatchHeader, BatchIter, LogConfig, LogError, MemoryLog, PartitionLog,
    SegmentLog, TimestampType,
};

/// A log under test plus whatever must outlive it.
pub(crate) struct Harness {
    pub(crate) log: Box<dyn PartitionLog>,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) fn segment(config: LogConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(&dir.path().join("topic-0"), config).unwrap();
    Harness {
        log: Box::new(log),
        _dir: Some(dir),
    }
}

pub(crate) fn memory(config: LogConfig) -> Harness {
    Harness {
        log: Box::new(MemoryLog::new(config)),
        _dir: None,
    }
}

type Factory = fn(LogConfig) -> Harness;

/// Appends `buf` with leader epoch 0 at time 0 and returns `(base, last)`.
pub(crate) fn append(log: &mut dyn PartitionLog, mut buf: Vec<u8>) -> (i64, i64) {
    match log.append_batch(&mut buf, 0, 0).unwrap() {
        AppendOutcome::Appended {
            base_offset,
            last_offset,
            ..
        } => (base_offset, last_offset),
        other => panic!("expected an append, got {other:?}"),
    }
}

/// `(base, last)` of every batch in a read result.
pub(crate) fn ranges(bytes: &[u8]) -> Vec<(i64, i64)> {
    BatchIter::new(bytes)
        .verify_crc(true)
        .map(|r| {
            let (h, _) = r.unwrap();
            (h.base_offset, h.last_offset())
        })
        .collect()
}

fn read_all(log: &dyn PartitionLog, start: i64) -> Vec<(i64, i64)> {
    ranges(&log.read(start, usize::MAX, i64::MAX, false).unwrap())
}

fn producer_batch(id: i64, epoch: i16, seq: i32, count: usize) -> Vec<u8> {
    let p = Producer {
        id,
        epoch,
        base_sequence: seq,
    };
    batch_with(count, &[], Compression::None, Some(p))
}

/// Three batches: offsets 0..=2, 3..=4, 5..=8.
fn three_batches(log: &mut dyn PartitionLog) {
    assert_eq!(append(log, batch(3)), (0, 2));
    assert_eq!(append(log, batch(2)), (3, 4));
    assert_eq!(append(log, batch(4)), (5, 8));
}

fn append_and_read_ranges(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.read(0, 1000, i64::MAX, true).unwrap().is_empty());
    three_batches(log);
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(read_all(log, 0), vec![(0, 2), (3, 4), (5, 8)]);
    assert_eq!(read_all(log, 4), vec![(3, 4), (5, 8)]);
    assert_eq!(read_all(log, 5), vec![(5, 8)]);
    assert_eq!(read_all(log, 8), vec![(5, 8)]);
    assert!(read_all(log, 9).is_empty());
    let bytes = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    assert_eq!(bytes.len() as u64, log.size_bytes());
    let sync = log.pending_sync();
    assert_eq!(sync.end_offset(), 9);
    sync.sync().unwrap();
}

fn max_bytes_and_min_one_batch(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    three_batches(log);
    let all = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    let sizes: Vec<usize> = BatchIter::new(&all)
        .map(|r| r.unwrap().0.total_size())
        .collect();
    assert_eq!(
        ranges(&log.read(0, 1, i64::MAX, true).unwrap()),
        vec![(0, 2)]
    );
    assert!(log.read(0, 1, i64::MAX, false).unwrap().is_empty());
    assert!(log
        .read(0, sizes[0] - 1, i64::MAX, false)
        .unwrap()
        .is_empty());
    assert_eq!(
        ranges(&log.read(0, sizes[0], i64::MAX, false).unwrap()),
        vec![(0, 2)]
    );
    assert_eq!(
        ranges(
            &log.read(1, sizes[0] + sizes[1] - 1, i64::MAX, true)
                .unwrap()
        ),
        vec![(0, 2)]
    );
    assert_eq!(
        ranges(&log.read(1, sizes[0] + sizes[1], i64::MAX, false).unwrap()),
        vec![(0, 2), (3, 4)]
    );
}

fn upper_bound_stops_before_batch(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    three_batches(log);
    let read = |start, upper| ranges(&log.read(start, usize::MAX, upper, true).unwrap());
    assert_eq!(read(0, 5), vec![(0, 2), (3, 4)]);
    assert_eq!(read(0, 4), vec![(0, 2), (3, 4)]);
    assert_eq!(read(0, 3), vec![(0, 2)]);
    assert!(read(0, 0).is_empty());
    assert!(read(3, 3).is_empty());
}

fn out_of_range(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    three_batches(log);
    for bad in [-1, 10, 100] {
        assert!(matches!(
            log.read(bad, 100, i64::MAX, true),
            Err(LogError::OffsetOutOfRange {
                log_start: 0,
                log_end: 9,
                ..
            })
        ));
    }
}

fn purge_prefix_moves_start(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    three_batches(log);
    log.purge_prefix(4).unwrap();
    assert_eq!(log.log_start_offset(), 4);
    assert!(matches!(
        log.read(3, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { log_start: 4, .. })
    ));
    assert_eq!(read_all(log, 4), vec![(3, 4), (5, 8)]);
    log.purge_prefix(2).unwrap();
    assert_eq!(log.log_start_offset(), 4, "purge never lowers the start");
    assert!(matches!(
        log.purge_prefix(10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.purge_prefix(9).unwrap();
    assert_eq!(log.log_start_offset(), 9);
    assert!(read_all(log, 9).is_empty());
    assert_eq!(append(log, batch(1)), (9, 9));
    assert_eq!(read_all(log, 9), vec![(9, 9)]);
}

fn truncate_suffix_removes_batches(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    three_batches(log);
    log.truncate_suffix(9).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    log.truncate_suffix(5).unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(read_all(log, 0), vec![(0, 2), (3, 4)]);
    log.truncate_suffix(4).unwrap();
    assert_eq!(
        log.log_end_offset(),
        3,
        "cut at the batch containing offset 4"
    );
    assert_eq!(append(log, batch(2)), (3, 4));
    assert_eq!(read_all(log, 0), vec![(0, 2), (3, 4)]);
    log.truncate_suffix(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(append(log, batch(1)), (0, 0));
}

fn idempotent_duplicates_and_sequence_gaps(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    assert_eq!(append(log, producer_batch(42, 0, 0, 3)), (0, 2));
    assert_eq!(append(log, batch(1)), (3, 3));
    assert_eq!(append(log, producer_batch(42, 0, 3, 2)), (4, 5));
    let end = log.log_end_offset();
    for (seq, count, base, last) in [(0, 3, 0, 2), (3, 2, 4, 5)] {
        let mut retry = producer_batch(42, 0, seq, count);
        assert_eq!(
            log.append_batch(&mut retry, 0, 0).unwrap(),
            AppendOutcome::Duplicate {
                base_offset: base,
                last_offset: last
            }
        );
    }
    assert_eq!(log.log_end_offset(), end, "duplicates are not appended");
    let mut gap = producer_batch(42, 0, 7, 1);
    assert!(matches!(
        log.append_batch(&mut gap, 0, 0),
        Err(LogError::OutOfOrderSequence {
            producer_id: 42,
            expected: 5,
            got: 7
        })
    ));
    assert_eq!(append(log, producer_batch(42, 0, 5, 1)), (6, 6));
    // A producer the log has never seen may start at any sequence.
    assert_eq!(append(log, producer_batch(43, 0, 100, 1)), (7, 7));
}

fn producer_epoch_fencing(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    append(log, producer_batch(9, 2, 0, 2));
    let mut zombie = producer_batch(9, 1, 2, 1);
    assert!(matches!(
        log.append_batch(&mut zombie, 0, 0),
        Err(LogError::InvalidProducerEpoch {
            producer_id: 9,
            current: 2,
            got: 1
        })
    ));
    let mut bumped_bad = producer_batch(9, 3, 2, 1);
    assert!(matches!(
        log.append_batch(&mut bumped_bad, 0, 0),
        Err(LogError::OutOfOrderSequence { expected: 0, .. })
    ));
    assert_eq!(append(log, producer_batch(9, 3, 0, 1)), (2, 2));
    let mut old = producer_batch(9, 2, 2, 1);
    assert!(matches!(
        log.append_batch(&mut old, 0, 0),
        Err(LogError::InvalidProducerEpoch { current: 3, .. })
    ));
    assert_eq!(log.log_end_offset(), 3);
}

fn offset_for_timestamp_is_record_exact(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    append(log, batch_with(3, &[10, 30, 20], Compression::None, None));
    append(log, batch_with(2, &[25, 40], Compression::Zstd, None));
    append(log, batch_with(1, &[50], Compression::Gzip, None));
    let at = |ts| log.offset_for_timestamp(ts).unwrap();
    assert_eq!(at(0), Some((0, 10)));
    assert_eq!(at(10), Some((0, 10)));
    assert_eq!(at(15), Some((1, 30)));
    assert_eq!(at(30), Some((1, 30)));
    assert_eq!(at(31), Some((4, 40)));
    assert_eq!(at(41), Some((5, 50)));
    assert_eq!(at(51), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((5, 50)));
    log.purge_prefix(3).unwrap();
    // Batches entirely below the log start are skipped.
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((3, 25)));
    assert_eq!(log.offset_for_timestamp(31).unwrap(), Some((4, 40)));
}

fn max_timestamp_offset_is_record_exact(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    assert_eq!(log.max_timestamp_offset().unwrap(), None);
    append(log, batch_with(3, &[10, 90, 20], Compression::Lz4, None));
    append(log, batch_with(2, &[25, 40], Compression::None, None));
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((1, 90)));
    append(log, batch_with(3, &[5, 95, 95], Compression::Snappy, None));
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((6, 95)));
}

fn log_append_time_stamps_batches(make: Factory) {
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut h = make(config);
    let log = h.log.as_mut();
    let mut buf = batch_with(2, &[1, 2], Compression::Gzip, None);
    let outcome = log.append_batch(&mut buf, 3, 777).unwrap();
    assert_eq!(
        outcome,
        AppendOutcome::Appended {
            base_offset: 0,
            last_offset: 1,
            log_append_time_ms: Some(777)
        }
    );
    let read = log.read(0, usize::MAX, i64::MAX, true).unwrap();
    let header = BatchHeader::parse(&read).unwrap();
    assert!(header.has_log_append_time());
    assert_eq!(header.max_timestamp, 777);
    assert_eq!(header.partition_leader_epoch, 3);
    assert_eq!(
        &read[..],
        &buf[..],
        "the caller's buffer holds the stored bytes"
    );
    assert_eq!(log.offset_for_timestamp(700).unwrap(), Some((0, 777)));
}

fn message_too_large(make: Factory) {
    let mut b = batch(10);
    let config = LogConfig {
        max_message_bytes: (b.len() - 1) as u32,
        ..LogConfig::default()
    };
    let mut h = make(config);
    let log = h.log.as_mut();
    assert!(matches!(
        log.append_batch(&mut b, 0, 0),
        Err(LogError::MessageTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    append(log, batch(1));
}

fn offset_for_leader_epoch_follows_kafka(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    assert_eq!(log.offset_for_leader_epoch(0), None);
    for (epoch, count) in [(1, 2), (1, 1), (3, 2), (6, 1)] {
        let mut b = batch(count);
        log.append_batch(&mut b, epoch, 0).unwrap();
    }
    // epoch 1: 0..=2, epoch 3: 3..=4, epoch 6: 5
    // Below every known epoch: itself and the start of the earliest (Kafka).
    assert_eq!(log.offset_for_leader_epoch(0), Some((0, 0)));
    assert_eq!(log.offset_for_leader_epoch(1), Some((1, 3)));
    assert_eq!(log.offset_for_leader_epoch(2), Some((1, 3)));
    assert_eq!(log.offset_for_leader_epoch(3), Some((3, 5)));
    assert_eq!(log.offset_for_leader_epoch(5), Some((3, 5)));
    assert_eq!(log.offset_for_leader_epoch(6), Some((6, 6)));
    assert_eq!(log.offset_for_leader_epoch(9), Some((6, 6)));
    log.truncate_suffix(5).unwrap();
    assert_eq!(log.offset_for_leader_epoch(6), Some((3, 5)));
    log.purge_prefix(4).unwrap();
    assert_eq!(log.offset_for_leader_epoch(1), Some((1, 4)));
    assert_eq!(log.offset_for_leader_epoch(3), Some((3, 5)));
}

fn truncate_suffix_resets_producer_state(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    append(log, producer_batch(5, 0, 0, 2));
    append(log, producer_batch(5, 0, 2, 2));
    log.truncate_suffix(2).unwrap();
    // The retry of the truncated batch is a new append again, not a duplicate.
    assert_eq!(append(log, producer_batch(5, 0, 2, 2)), (2, 3));
    let mut dup = producer_batch(5, 0, 0, 2);
    assert!(matches!(
        log.append_batch(&mut dup, 0, 0).unwrap(),
        AppendOutcome::Duplicate { base_offset: 0, .. }
    ));
}

fn truncate_into_the_batch_holding_the_log_start(make: Factory) {
    let mut h = make(LogConfig::default());
    let log = h.log.as_mut();
    three_batches(log);
    log.purge_prefix(4).unwrap();
    assert!(matches!(
        log.purge_prefix(-1),
        Err(LogError::InvalidOffset { offset: -1, .. })
    ));
    log.truncate_suffix(4).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
    assert_eq!(append(log, batch(1)), (3, 3));
    assert!(matches!(
        log.truncate_suffix(2),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod segment_log {
            $( #[test] fn $name() { super::$name(super::segment); } )*
        }
        mod memory_log {
            $( #[test] fn $name() { super::$name(super::memory); } )*
        }
    };
}

conformance!(
    append_and_read_ranges,
    max_bytes_and_min_one_batch,
    upper_bound_stops_before_batch,
    out_of_range,
    purge_prefix_moves_start,
    truncate_suffix_removes_batches,
    idempotent_duplicates_and_sequence_gaps,
    producer_epoch_fencing,
    offset_for_timestamp_is_record_exact,
    max_timestamp_offset_is_record_exact,
    log_append_time_stamps_batches,
    message_too_large,
    offset_for_leader_epoch_follows_kafka,
    truncate_suffix_resets_producer_state,
    truncate_into_the_batch_holding_the_log_start,
);
