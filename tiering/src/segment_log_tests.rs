//! SegmentLog-only tests: rolling, retention, recovery, on-disk format.

use std::fs;
use std::path::{Path, PathBuf};

use kafka_protocol::records::Compression;
use proptest::prelude::*;

use crate::batch::test_support::{batch, batch_with, Producer};
use crate::conformance_tests::{append, ranges};
use crate::segment::{segment_path, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};
use crate::{
    AppendOutcome, LogConfig, LogError, MemoryLog, PartitionLog, SegmentLog, LOG_START_OFFSET_FILE,
};

fn open(dir: &Path, config: &LogConfig) -> SegmentLog {
    SegmentLog::open(dir, config.clone()).unwrap()
}

fn read_all(log: &dyn PartitionLog, start: i64) -> Vec<(i64, i64)> {
    ranges(&log.read(start, usize::MAX, i64::MAX, false).unwrap())
}

fn log_file(dir: &Path, base: i64) -> PathBuf {
    segment_path(dir, base, LOG_EXTENSION)
}

fn append_at(log: &mut SegmentLog, buf: Vec<u8>, now_ms: i64) -> (i64, i64) {
    let mut buf = buf;
    match log.append_batch(&mut buf, 0, now_ms).unwrap() {
        AppendOutcome::Appended {
            base_offset,
            last_offset,
            ..
        } => (base_offset, last_offset),
        other => panic!("expected an append, got {other:?}"),
    }
}

fn producer_batch(seq: i32, count: usize) -> Vec<u8> {
    let p = Producer {
        id: 77,
        epoch: 0,
        base_sequence: seq,
    };
    batch_with(count, &[], Compression::None, Some(p))
}

/// A config that rolls after about two small batches.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2 * batch(2).len() as u64,
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &small_segments());
    for i in 0..6 {
        assert_eq!(append(&mut log, batch(2)), (i * 2, i * 2 + 1));
    }
    assert_eq!(log.segment_count(), 3);
    assert!(log_file(dir.path(), 4).exists());
    assert_eq!(read_all(&log, 0).len(), 6);
    assert_eq!(read_all(&log, 5), vec![(4, 5), (6, 7), (8, 9), (10, 11)]);
    let two = log.read(3, 2 * batch(2).len(), 8, false).unwrap();
    assert_eq!(
        ranges(&two),
        vec![(2, 3), (4, 5)],
        "read crosses a segment boundary"
    );
    // Rolling writes a producer snapshot named by the new base.
    assert!(dir.path().join(format!("{:020}.snapshot", 8)).exists());
    log.roll().unwrap();
    log.roll().unwrap();
    assert_eq!(
        log.segment_count(),
        4,
        "rolling an empty segment is a no-op"
    );
}

#[test]
fn rolls_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 100,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), &config);
    append_at(&mut log, batch(1), 1_000);
    append_at(&mut log, batch(1), 1_100);
    assert_eq!(log.segment_count(), 1);
    append_at(&mut log, batch(1), 1_101);
    assert_eq!(log.segment_count(), 2);
    append_at(&mut log, batch(1), 1_150);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log, 0).len(), 4);
}

fn timed_batch(ts: i64) -> Vec<u8> {
    batch_with(2, &[ts, ts], Compression::None, None)
}

#[test]
fn retention_by_time_deletes_sealed_segments_and_persists_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1_000,
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    for ts in [100, 200, 5_000, 5_100, 9_000] {
        append(&mut log, timed_batch(ts));
    }
    // segments: [0..4) ts 200, [4..8) ts 5_100, [8..10) active ts 9_000
    assert_eq!(log.segment_count(), 3);
    let outcome = log.apply_retention(5_500).unwrap();
    assert_eq!(outcome.deleted_segments, 1);
    assert_eq!(outcome.deleted_bytes, 2 * batch(2).len() as u64);
    assert_eq!(outcome.log_start_offset, 4);
    assert!(!log_file(dir.path(), 0).exists());
    assert!(matches!(
        log.read(0, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { log_start: 4, .. })
    ));
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.log_start_offset(), 4);
    assert_eq!(read_all(&log, 4), vec![(4, 5), (6, 7), (8, 9)]);
}

#[test]
fn retention_rolls_an_expired_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1_000,
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    for ts in [100, 200, 300] {
        append(&mut log, timed_batch(ts));
    }
    assert_eq!(log.segment_count(), 2);
    let outcome = log.apply_retention(10_000).unwrap();
    assert_eq!(outcome.deleted_segments, 2);
    assert_eq!(outcome.log_start_offset, 6);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 6));
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(append(&mut log, timed_batch(10_000)), (6, 7));
    // Not expired: nothing happens.
    assert_eq!(log.apply_retention(10_500).unwrap().deleted_segments, 0);
}

#[test]
fn retention_by_bytes_keeps_the_newest_data() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2).len() as i64;
    let config = LogConfig {
        retention_bytes: 3 * one,
        ..small_segments()
    };
    let mut log = open(dir.path(), &config);
    for _ in 0..7 {
        append(&mut log, batch(2));
    }
    // segments of 2, 2, 2 batches and an active one with 1: 7 batches, limit 3.
    assert_eq!(log.segment_count(), 4);
    let outcome = log.apply_retention(0).unwrap();
    assert_eq!(outcome.deleted_segments, 2);
    assert_eq!(log.size_bytes() as i64, 3 * one);
    assert_eq!(log.log_start_offset(), 8);
    assert_eq!(log.apply_retention(0).unwrap().deleted_segments, 0);
}

#[test]
fn purge_prefix_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    for _ in 0..5 {
        append(&mut log, batch(2));
    }
    assert_eq!(log.segment_count(), 3);
    log.purge_prefix(5).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert!(!log_file(dir.path(), 0).exists());
    assert_eq!(
        fs::read_to_string(dir.path().join(LOG_START_OFFSET_FILE)).unwrap(),
        "0\n5\n"
    );
    log.purge_prefix(10).unwrap();
    assert_eq!(
        log.segment_count(),
        1,
        "the active segment is never deleted"
    );
    drop(log);
    let mut log = open(dir.path(), &config);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    assert_eq!(append(&mut log, batch(1)), (10, 10));
}

#[test]
fn recovery_cuts_garbage_after_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    for _ in 0..3 {
        append(&mut log, batch(2));
    }
    let size = log.size_bytes();
    drop(log);
    let path = log_file(dir.path(), 0);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    fs::write(&path, &bytes).unwrap();

    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(fs::metadata(&path).unwrap().len(), size);
    assert_eq!(append(&mut log, batch(1)), (6, 6));
    assert_eq!(read_all(&log, 0).len(), 4);
}

#[test]
fn recovery_cuts_a_half_written_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), &config);
    for _ in 0..3 {
        append(&mut log, batch(2));
    }
    log.flush().unwrap();
    drop(log);
    let path = log_file(dir.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    let half = batch(2).len() as u64 / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - half)
        .unwrap();

    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(read_all(&log, 0), vec![(0, 1), (2, 3)]);
    assert_eq!(append(&mut log, batch(3)), (4, 6));
    assert_eq!(read_all(&log, 3), vec![(2, 3), (4, 6)]);
}

#[test]
fn recovery_cuts_at_a_crc_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    for _ in 0..3 {
        append(&mut log, batch(2));
    }
    drop(log);
    let path = log_file(dir.path(), 0);
    let mut bytes = fs::read(&path).unwrap();
    let second_batch_last_byte = 2 * batch(2).len() - 1;
    bytes[second_batch_last_byte] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log, 0), vec![(0, 1)]);
}

#[test]
fn recovery_truncation_drops_leader_epochs_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    log.append_batch(&mut batch(2), 1, 0).unwrap();
    log.append_batch(&mut batch(2), 4, 0).unwrap();
    drop(log);
    let path = log_file(dir.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.offset_for_leader_epoch(4), Some((1, 2)));
    assert_eq!(log.leader_epochs().entries().len(), 1);
}

#[test]
fn leader_epochs_survive_reopen_and_are_rebuilt_if_checkpoint_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    log.append_batch(&mut batch(2), 1, 0).unwrap();
    log.append_batch(&mut batch(2), 3, 0).unwrap();
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.offset_for_leader_epoch(1), Some((1, 2)));
    drop(log);
    fs::remove_file(
        dir.path()
            .join(crate::leader_epoch::LEADER_EPOCH_CHECKPOINT),
    )
    .unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(log.offset_for_leader_epoch(1), Some((1, 2)));
    assert_eq!(log.offset_for_leader_epoch(3), Some((3, 4)));
}

fn assert_duplicate(log: &mut SegmentLog, seq: i32, count: usize, base: i64) {
    let mut retry = producer_batch(seq, count);
    assert!(matches!(
        log.append_batch(&mut retry, 0, 0).unwrap(),
        AppendOutcome::Duplicate { base_offset, .. } if base_offset == base
    ));
}

#[test]
fn producer_state_survives_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    append(&mut log, producer_batch(0, 2));
    append(&mut log, producer_batch(2, 2));
    append(&mut log, producer_batch(4, 2));
    log.close().unwrap();
    drop(log);
    assert!(dir.path().join(format!("{:020}.snapshot", 6)).exists());
    let mut log = open(dir.path(), &config);
    assert_duplicate(&mut log, 4, 2, 4);
    assert_duplicate(&mut log, 0, 2, 0);
    assert_eq!(append(&mut log, producer_batch(6, 1)), (6, 6));
}

#[test]
fn producer_state_survives_a_crash_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    for seq in [0, 2, 4] {
        append(&mut log, producer_batch(seq, 2));
    }
    // No close: the newest snapshot is at the roll (offset 4); offsets 4..6 are replayed.
    drop(log);
    let mut log = open(dir.path(), &config);
    assert_duplicate(&mut log, 4, 2, 4);
    let mut gap = producer_batch(9, 1);
    assert!(matches!(
        log.append_batch(&mut gap, 0, 0),
        Err(LogError::OutOfOrderSequence { expected: 6, .. })
    ));

    // Without any snapshot the whole log is replayed.
    drop(log);
    for offset in crate::producer_state::list_snapshots(dir.path()).unwrap() {
        fs::remove_file(crate::producer_state::snapshot_path(dir.path(), offset)).unwrap();
    }
    let mut log = open(dir.path(), &config);
    assert_duplicate(&mut log, 2, 2, 2);
}

#[test]
fn a_snapshot_past_a_torn_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    append(&mut log, producer_batch(0, 2));
    append(&mut log, producer_batch(2, 2));
    log.close().unwrap();
    drop(log);
    let path = log_file(dir.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 2);
    assert!(!dir.path().join(format!("{:020}.snapshot", 4)).exists());
    // The lost batch is appended again, not treated as a duplicate.
    assert_eq!(append(&mut log, producer_batch(2, 2)), (2, 3));
}

#[test]
fn missing_or_malformed_sealed_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4 * batch(2).len() as u64,
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), &config);
    for i in 0..6 {
        append(&mut log, timed_batch(100 + i));
    }
    log.close().unwrap();
    drop(log);
    let index = segment_path(dir.path(), 0, INDEX_EXTENSION);
    let time_index = segment_path(dir.path(), 0, TIME_INDEX_EXTENSION);
    let original_index = fs::read(&index).unwrap();
    let original_time_index = fs::read(&time_index).unwrap();
    assert_eq!(
        original_index.len(),
        3 * 8,
        "one entry per batch after the first"
    );
    assert_eq!(original_time_index.len(), 4 * 12);

    fs::remove_file(&index).unwrap();
    fs::write(&time_index, [1, 2, 3]).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(fs::read(&index).unwrap(), original_index);
    assert_eq!(fs::read(&time_index).unwrap(), original_time_index);
    assert_eq!(read_all(&log, 5), vec![(4, 5), (6, 7), (8, 9), (10, 11)]);
    assert_eq!(log.offset_for_timestamp(103).unwrap(), Some((6, 103)));

    // Entries pointing past the end of the log are malformed too.
    drop(log);
    fs::write(&index, [0, 0, 0, 1, 0xff, 0xff, 0, 0]).unwrap();
    let log = open(dir.path(), &config);
    assert_eq!(fs::read(&index).unwrap(), original_index);
    drop(log);
}

#[test]
fn leftover_tmp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    append(&mut log, batch(1));
    drop(log);
    let tmp = dir.path().join(format!("{LOG_START_OFFSET_FILE}.tmp"));
    fs::write(&tmp, b"half").unwrap();
    let log = open(dir.path(), &config);
    assert!(!tmp.exists());
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn truncate_suffix_across_segments_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments();
    let mut log = open(dir.path(), &config);
    for seq in 0..5 {
        append(&mut log, producer_batch(seq * 2, 2));
    }
    assert_eq!(log.segment_count(), 3);
    log.truncate_suffix(3).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_end_offset(), 2);
    assert!(!log_file(dir.path(), 4).exists());
    assert!(!log_file(dir.path(), 8).exists());
    assert_eq!(append(&mut log, producer_batch(2, 2)), (2, 3));
    drop(log);
    let mut log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 4);
    assert_duplicate(&mut log, 2, 2, 2);
    assert_eq!(read_all(&log, 0), vec![(0, 1), (2, 3)]);
}

#[test]
fn pending_sync_runs_while_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), &LogConfig::default());
    append(&mut log, batch(3));
    let pending = log.pending_sync();
    assert_eq!(pending.end_offset(), 3);
    let handle = std::thread::spawn(move || pending.sync());
    append(&mut log, batch(1));
    handle.join().unwrap().unwrap();
    assert_eq!(log.pending_sync().end_offset(), 4);
}

#[test]
fn failed_write_leaves_the_log_consistent_and_usable() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default();
    let mut log = open(dir.path(), &config);
    append(&mut log, producer_batch(0, 2));
    let size = log.size_bytes();
    log.fail_next_write_after(30);
    let mut doomed = producer_batch(2, 2);
    let err = log.append_batch(&mut doomed, 7, 0).unwrap_err();
    assert!(err.is_storage_error() && err.is_disk_full(), "{err}");
    assert_eq!(log.size_bytes(), size);
    assert_eq!(fs::metadata(log_file(dir.path(), 0)).unwrap().len(), size);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(
        log.offset_for_leader_epoch(7),
        Some((0, 2)),
        "epoch 7 was undone"
    );
    // The producer state did not advance: the same batch is accepted, not a duplicate.
    assert_eq!(append(&mut log, producer_batch(2, 2)), (2, 3));
    assert_eq!(read_all(&log, 0), vec![(0, 1), (2, 3)]);
    drop(log);
    let log = open(dir.path(), &config);
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn destroy_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = open(&path, &LogConfig::default());
    append(&mut log, batch(1));
    log.destroy().unwrap();
    assert!(!path.exists());
    SegmentLog::delete_files(&path).unwrap();
}

/// The on-disk format, byte for byte: change these only on purpose (and bump versions).
#[test]
fn segment_and_index_files_are_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), &config);
    log.append_batch(&mut batch_with(1, &[1_000], Compression::None, None), 0, 0)
        .unwrap();
    log.append_batch(
        &mut batch_with(2, &[900, 1_200], Compression::None, None),
        5,
        0,
    )
    .unwrap();
    log.append_batch(&mut batch_with(1, &[1_100], Compression::None, None), 5, 0)
        .unwrap();
    log.close().unwrap();
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let log_bytes = hex(fs::read(log_file(dir.path(), 0)).unwrap());
    let index = hex(fs::read(segment_path(dir.path(), 0, INDEX_EXTENSION)).unwrap());
    let time_index = hex(fs::read(segment_path(dir.path(), 0, TIME_INDEX_EXTENSION)).unwrap());
    assert_eq!(log_bytes, EXPECTED_LOG);
    // (relative offset, position): batch 2 at offset 1, batch 3 at offset 3.
    assert_eq!(index, EXPECTED_INDEX);
    // (max timestamp, relative offset): 1000 at 0, 1200 at 1 (the third batch adds nothing).
    assert_eq!(
        time_index,
        "00000000000003e80000000000000000000004b000000001"
    );
    assert_eq!(
        fs::read_to_string(
            dir.path()
                .join(crate::leader_epoch::LEADER_EPOCH_CHECKPOINT)
        )
        .unwrap(),
        "0\n2\n0 0\n5 1\n"
    );
}

const EXPECTED_LOG: &str = concat!(
    // base 0, length 69, epoch 0, magic 2, crc, attributes 0, last delta 0, timestamps 1000/1000,
    // producer -1/-1, sequence -1, one record
    "00000000000000000000004500000000022869d07300000000000000000000000003e800000000000003e8",
    "ffffffffffffffffffffffffffff00000001260000000a6b65792d301076616c75652d302d00",
    // base 1, length 91, epoch 5, timestamps 900/1200, two records
    "00000000000000010000005b00000005026a9006e3000000000001000000000000038400000000000004b0",
    "ffffffffffffffffffffffffffff00000002260000000a6b65792d301076616c75652d302d002a00d80402",
    "0a6b65792d311276616c75652d312d7800",
    // base 3, length 69, epoch 5, timestamps 1100/1100
    "000000000000000300000045000000050",
    "21e2b553f000000000000000000000000044c000000000000044cffffffffffffffffffffffffffff000000",
    "01260000000a6b65792d301076616c75652d302d00",
);
const EXPECTED_INDEX: &str = concat!("00000001", "00000051", "00000003", "000000b8");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Appends random batches to a small-segment SegmentLog and a MemoryLog; every read agrees
    /// byte for byte and starts with the batch containing the requested offset.
    #[test]
    fn segment_log_reads_match_memory_log(
        counts in proptest::collection::vec(1usize..6, 1..25),
        reads in proptest::collection::vec((0.0f64..1.0, 0usize..600, 0.0f64..1.2, any::<bool>()), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 150,
            ..LogConfig::default()
        };
        let mut disk = open(dir.path(), &config);
        let mut mem = MemoryLog::new(config.clone());
        let mut expected_end = 0;
        for count in &counts {
            let (base, last) = append(&mut disk, batch(*count));
            prop_assert_eq!(append(&mut mem, batch(*count)), (base, last));
            prop_assert_eq!(base, expected_end);
            expected_end = last + 1;
        }
        prop_assert_eq!(disk.log_end_offset(), expected_end);
        let end = expected_end;
        for (start_frac, max_bytes, upper_frac, min_one) in reads {
            let start = (start_frac * end as f64) as i64;
            let upper = (upper_frac * end as f64) as i64;
            let a = disk.read(start, max_bytes, upper, min_one).unwrap();
            let b = mem.read(start, max_bytes, upper, min_one).unwrap();
            prop_assert_eq!(&a, &b);
            let got = ranges(&a);
            if let Some((base, last)) = got.first() {
                prop_assert!(*base <= start && start <= *last);
            }
            for pair in got.windows(2) {
                prop_assert_eq!(pair[0].1 + 1, pair[1].0);
            }
            prop_assert!(got.iter().all(|(base, _)| *base < upper));
        }
        drop(disk);
        let reopened = open(dir.path(), &config);
        prop_assert_eq!(reopened.log_end_offset(), end);
        prop_assert_eq!(
            reopened.read(0, usize::MAX, i64::MAX, false).unwrap(),
            mem.read(0, usize::MAX, i64::MAX, false).unwrap()
        );
    }
}
