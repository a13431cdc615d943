//! Tests of the segment log's replicated mode: proposals, replication to byte-identical followers,
//! truncation, crash recovery, purging and carrying a plain log over.

use std::path::Path;

use super::entries::{EntryBody, ProposalOutcome, ResetPoint, StoredEntry};
use crate::batch::test_support::{batch, batch_with, Producer};
use crate::entry_index::EntryId;
use crate::log::{AppendOutcome, PartitionLog};
use crate::{LogConfig, SegmentLog};

fn id(term: u64, index: u64) -> EntryId {
    EntryId { term, index }
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    }
}

fn propose(log: &mut SegmentLog, e: EntryId, records: usize) -> ProposalOutcome {
    let mut b = batch(records);
    log.append_proposal(e, &mut b, 5_000).expect("proposal")
}

/// A leader log with a membership-like marker, data over several segments and a duplicate.
fn leader(dir: &Path) -> SegmentLog {
    let mut log = SegmentLog::open_replicated(dir, small_segments()).expect("open");
    assert_eq!(log.next_index(), 0);
    log.append_marker(id(0, 0), b"membership").expect("marker");
    log.append_marker(id(1, 1), b"blank").expect("marker");
    let p = Producer {
        id: 7,
        epoch: 0,
        base_sequence: 0,
    };
    for i in 0..6u64 {
        let mut b = batch_with(
            3,
            &[],
            kafka_protocol::records::Compression::None,
            Some(Producer {
                base_sequence: (i * 3) as i32,
                ..p
            }),
        );
        match log
            .append_proposal(id(1, 2 + i), &mut b, 5_000)
            .expect("propose")
        {
            ProposalOutcome::Accepted(AppendOutcome::Appended { base_offset, .. }) => {
                assert_eq!(base_offset, (i * 3) as i64)
            }
            other => panic!("{other:?}"),
        }
    }
    // A retry of the last batch is a duplicate: a skip entry, the original offsets.
    let mut retry = batch_with(
        3,
        &[],
        kafka_protocol::records::Compression::None,
        Some(Producer {
            base_sequence: 15,
            ..p
        }),
    );
    match log
        .append_proposal(id(1, 8), &mut retry, 5_000)
        .expect("retry")
    {
        ProposalOutcome::Accepted(AppendOutcome::Duplicate {
            base_offset,
            last_offset,
        }) => {
            assert_eq!((base_offset, last_offset), (15, 17))
        }
        other => panic!("{other:?}"),
    }
    // A sequence gap is refused, also as a skip.
    let mut gap = batch_with(
        1,
        &[],
        kafka_protocol::records::Compression::None,
        Some(Producer {
            base_sequence: 40,
            ..p
        }),
    );
    match log.append_proposal(id(1, 9), &mut gap, 5_000).expect("gap") {
        ProposalOutcome::Refused(e) => assert!(e.to_string().contains("sequence"), "{e}"),
        other => panic!("{other:?}"),
    }
    log.append_marker(id(2, 10), b"blank-2").expect("marker");
    assert!(propose(&mut log, id(2, 11), 2).is_accepted());
    log
}

impl ProposalOutcome {
    fn is_accepted(&self) -> bool {
        matches!(self, ProposalOutcome::Accepted(_))
    }
}

fn files(dir: &Path, ext: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn leader_entries_read_back_with_and_without_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = leader(dir.path());
    assert_eq!(log.last_entry(), Some(id(2, 11)));
    assert_eq!(log.log_end_offset(), 20);
    assert!(log.segment_count() > 2, "small segments rolled");
    let all = log.entries(0, 100, usize::MAX, true).expect("entries");
    assert_eq!(all.len(), 12);
    assert_eq!(
        all[0].body,
        EntryBody::Marker(bytes::Bytes::from_static(b"membership"))
    );
    assert_eq!(all[8].body, EntryBody::Skip);
    assert_eq!(all[8].next_offset, 18);
    let EntryBody::Data { batch, .. } = &all[2].body else {
        panic!("data");
    };
    assert_eq!(
        crate::BatchHeader::parse(batch)
            .expect("header")
            .partition_leader_epoch,
        1
    );
    assert_eq!(all[11].next_offset, 20);
    // Without data: same ids and offsets, no bytes.
    let meta = log.entries(0, 100, usize::MAX, false).expect("meta");
    assert_eq!(meta.len(), 12);
    assert!(meta.iter().all(|e| match &e.body {
        EntryBody::Data { batch, .. } => batch.is_empty(),
        _ => true,
    }));
    // max_bytes stops early but returns at least one entry.
    let few = log.entries(2, 100, 1, true).expect("few");
    assert_eq!(few.len(), 1);
    assert_eq!(log.next_offset_after(4).expect("next"), Some(9));
    assert_eq!(log.last_entry_below(9).expect("below"), Some(id(1, 4)));
    assert_eq!(log.last_entry_below(10).expect("below"), Some(id(1, 4)));
    assert_eq!(log.entry_id(10).expect("id"), Some(id(2, 10)));
    assert_eq!(log.offset_for_leader_epoch(1), Some((1, 18)));
}

/// A follower that appends the leader's stored entries holds byte-identical segments, indexes
/// and markers, including where the leader rolled.
#[test]
fn followers_are_byte_identical_to_the_leader() {
    let (a, b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let mut l = leader(a.path());
    let mut f = SegmentLog::open_replicated(b.path(), LogConfig::default()).expect("follower");
    for e in l.entries(0, 100, usize::MAX, true).expect("entries") {
        f.append_entry(&e, 9_999).expect("replicate");
    }
    l.close().expect("close");
    f.close().expect("close");
    for ext in [
        ".log",
        ".raftidx",
        "raft-markers",
        "leader-epoch-checkpoint",
    ] {
        assert_eq!(files(a.path(), ext), files(b.path(), ext), "{ext} differs");
    }
    assert_eq!(
        l.producer_state().producer(7),
        f.producer_state().producer(7),
        "producer state follows"
    );
    // A replicated batch at the wrong offset is refused.
    let mut wrong = batch(1);
    crate::rewrite_batch_header(&mut wrong, 3, 2, None);
    let e = StoredEntry {
        id: id(2, 12),
        next_offset: 4,
        body: EntryBody::Data {
            batch: bytes::Bytes::from(wrong),
            first_in_segment: false,
        },
    };
    assert!(f.append_entry(&e, 0).is_err());
}

#[test]
fn reopen_keeps_entries_and_recovers_torn_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = leader(dir.path());
    log.close().expect("close");
    drop(log);
    let log = SegmentLog::open_replicated(dir.path(), small_segments()).expect("reopen");
    assert_eq!(log.last_entry(), Some(id(2, 11)));
    assert_eq!(log.log_end_offset(), 20);
    drop(log);
    // A crash after the .log write but before the index record: the batch is cut.
    let mut log = SegmentLog::open_replicated(dir.path(), small_segments()).expect("reopen");
    let active_base = log.active().base_offset();
    let idx = crate::entry_index::entry_index_path(dir.path(), active_base);
    let len_before = std::fs::metadata(&idx).expect("stat").len();
    assert!(propose(&mut log, id(2, 12), 1).is_accepted());
    assert_eq!(log.log_end_offset(), 21);
    drop(log);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .expect("open")
        .set_len(len_before + 7)
        .expect("tear the record");
    let mut log = SegmentLog::open_replicated(dir.path(), small_segments()).expect("recover");
    assert_eq!(log.last_entry(), Some(id(2, 11)), "the torn entry is gone");
    assert_eq!(log.log_end_offset(), 20, "and its batch with it");
    assert!(
        propose(&mut log, id(3, 12), 1).is_accepted(),
        "appends continue"
    );
    assert_eq!(log.log_end_offset(), 21);
}

#[test]
fn truncation_cuts_entries_offsets_epochs_and_producer_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = leader(dir.path());
    // Keep entries 0..=5 (data up to offset 12); the epoch-2 tail goes.
    log.truncate_entries_after(Some(5)).expect("truncate");
    assert_eq!(log.last_entry(), Some(id(1, 5)));
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(log.offset_for_leader_epoch(2), Some((1, 12)));
    assert!(log.markers(0, 100).iter().all(|(e, _)| e.index <= 5));
    let p = log.producer_state().producer(7).expect("producer");
    assert_eq!(p.batches.back().map(|b| b.last_seq), Some(11));
    // New entries continue from there, in a new term.
    log.append_marker(id(3, 6), b"blank-3").expect("marker");
    assert!(propose(&mut log, id(3, 7), 1).is_accepted());
    assert_eq!(log.log_end_offset(), 13);
    drop(log);
    let log = SegmentLog::open_replicated(dir.path(), small_segments()).expect("reopen");
    assert_eq!(log.last_entry(), Some(id(3, 7)));
    assert_eq!(log.next_offset_after(7).expect("next"), Some(13));
}

#[test]
fn segments_are_deleted_only_below_the_purged_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = leader(dir.path());
    let segments = log.segment_count();
    log.purge_prefix(12).expect("log start");
    assert_eq!(log.log_start_offset(), 12);
    assert_eq!(
        log.segment_count(),
        segments,
        "nothing purged: every segment stays"
    );
    let below = log.last_entry_below(12).expect("below").expect("entry");
    log.purge_entries(below).expect("purge");
    log.purge_prefix(12).expect("log start");
    assert!(log.segment_count() < segments, "purged segments go");
    drop(log);
    let log = SegmentLog::open_replicated(dir.path(), small_segments()).expect("reopen");
    assert_eq!(log.purged_entry(), Some(below));
    assert_eq!(log.last_entry(), Some(id(2, 11)));
}

#[test]
fn a_plain_log_is_carried_over_and_a_reset_starts_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut plain = SegmentLog::open(dir.path(), LogConfig::default()).expect("plain");
        let mut b = batch(4);
        plain.append_batch(&mut b, 0, 1_000).expect("append");
        plain.close().expect("close");
    }
    let mut log =
        SegmentLog::open_replicated(dir.path(), LogConfig::default()).expect("carry over");
    assert_eq!(log.purged_entry(), Some(id(0, 0)));
    assert_eq!(log.next_index(), 1);
    assert_eq!(log.log_end_offset(), 4);
    let read = log.read(0, usize::MAX, 4, true).expect("old data readable");
    assert!(!read.is_empty());
    assert!(propose(&mut log, id(1, 1), 2).is_accepted());
    assert_eq!(log.log_end_offset(), 6);
    let snapshot = log.producer_snapshot_at(6).expect("producer snapshot");
    let point = ResetPoint {
        purged: id(4, 40),
        start_offset: 100,
        producer_snapshot: Some(snapshot),
        epochs: vec![crate::EpochEntry {
            epoch: 4,
            start_offset: 90,
        }],
    };
    log.reset_replicated(&point).expect("reset");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    assert_eq!(log.next_index(), 41);
    assert_eq!(log.last_entry(), Some(id(4, 40)));
    assert_eq!(log.offset_for_leader_epoch(4), Some((4, 100)));
}

/// Markers at or below the purged entry leave the marker store; their index records stay and
/// must not make recovery cut the log (they once did, losing everything after them).
#[test]
fn purged_markers_do_not_cut_the_log_on_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = SegmentLog::open_replicated(dir.path(), LogConfig::default()).expect("open");
        log.append_marker(id(0, 0), b"membership").expect("marker");
        log.append_marker(id(1, 1), b"blank").expect("marker");
        let below = log.last_entry_below(0).expect("below").expect("entry");
        assert_eq!(below, id(1, 1));
        log.purge_entries(below).expect("purge");
        assert!(propose(&mut log, id(1, 2), 3).is_accepted());
        log.append_marker(id(2, 3), b"blank-2").expect("marker");
    }
    let log = SegmentLog::open_replicated(dir.path(), LogConfig::default()).expect("reopen");
    assert_eq!(log.last_entry(), Some(id(2, 3)));
    assert_eq!(log.log_end_offset(), 3);
    assert_eq!(log.purged_entry(), Some(id(1, 1)));
}
