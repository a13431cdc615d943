//! RemotePartition against a real SegmentLog and object_store's in-memory store, with faults.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use uuid::Uuid;

use super::cache::{ChunkCache, ChunkCacheConfig};
use super::faulty::FaultyStore;
use super::keys::ObjectKeys;
use super::partition::{RemoteContext, RemotePartition};
use super::throttle::Throttle;
use super::RemoteError;
use crate::batch::test_support::batch_with;
use crate::conformance_tests::ranges;
use crate::{LogConfig, PartitionLog, SegmentLog};
use kafka_protocol::records::Compression;

struct Setup {
    _dir: tempfile::TempDir,
    log: SegmentLog,
    faulty: Arc<FaultyStore>,
    ctx: Arc<RemoteContext>,
    topic: Uuid,
}

async fn setup(batches: usize, part_bytes: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(&dir.path().join("t-0"), config).unwrap();
    for i in 0..batches {
        let ts: Vec<i64> = (0..10).map(|r| 10_000 + (i * 10 + r) as i64).collect();
        let mut b = batch_with(10, &ts, Compression::None, None);
        log.append_batch(&mut b, (i / 40) as i32, 0).unwrap();
    }
    log.roll().unwrap();
    let faulty = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let cache = ChunkCache::new(
        ChunkCacheConfig {
            chunk_size: 4096,
            ..ChunkCacheConfig::default()
        },
        store.clone(),
    )
    .await
    .unwrap();
    let ctx = Arc::new(RemoteContext {
        store,
        keys: ObjectKeys::new("pfx"),
        cache: Arc::new(cache),
        throttle: Throttle::new(None),
        part_bytes,
    });
    Setup {
        _dir: dir,
        log,
        faulty,
        ctx,
        topic: Uuid::from_u128(42),
    }
}

async fn upload_all(s: &Setup, remote: &RemotePartition, epoch: i32) -> usize {
    let from = remote.end_offset().unwrap_or(0);
    let sealed = s
        .log
        .sealed_segment_views(from, i64::MAX, usize::MAX)
        .unwrap();
    let mut n = 0;
    for seg in &sealed {
        if remote.upload(seg, epoch).await.unwrap().is_some() {
            n += 1;
        }
    }
    n
}

async fn read_everything(remote: &RemotePartition, from: i64, max_bytes: usize) -> Vec<(i64, i64)> {
    let end = remote.end_offset().unwrap();
    let mut offset = from;
    let mut out = Vec::new();
    while offset < end {
        let bytes = remote.read(offset, max_bytes, true).await.unwrap();
        let got = ranges(&bytes);
        assert!(!got.is_empty(), "no progress at offset={offset}");
        offset = got.last().unwrap().1 + 1;
        out.extend(got);
    }
    out
}

#[tokio::test]
async fn uploaded_history_reads_back_exactly_as_the_local_log() {
    // Segments are small; a 5 MiB part size still exercises the single-PUT path, and the
    // multipart path is covered below with a 1 MiB segment.
    let s = setup(120, 5 << 20).await;
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    let uploaded = upload_all(&s, &remote, 0).await;
    assert!(uploaded > 5, "uploaded {uploaded} segments");
    assert_eq!(remote.end_offset(), Some(s.log.log_end_offset()));
    assert_eq!(upload_all(&s, &remote, 0).await, 0, "already offloaded");

    let local = ranges(&s.log.read(0, usize::MAX, i64::MAX, false).unwrap());
    for max in [1, 700, 3000, 1 << 20] {
        assert_eq!(
            read_everything(&remote, 0, max).await,
            local,
            "max_bytes={max}"
        );
    }
    // From the middle of a batch: the batch containing it comes first.
    let mid = remote.read(15, 1 << 20, true).await.unwrap();
    assert_eq!(ranges(&mid)[0], (10, 19));
    // Bytes equal the local bytes.
    let local_bytes = s.log.read(0, 1 << 20, 500, false).unwrap();
    let remote_bytes = remote.read(0, local_bytes.len(), true).await.unwrap();
    assert_eq!(&local_bytes[..remote_bytes.len()], &remote_bytes[..]);

    // A fresh reader (restart) finds the same history from the manifest alone.
    let reopened = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    assert_eq!(reopened.manifest(), remote.manifest());
    assert_eq!(read_everything(&reopened, 0, 4096).await, local);
    assert!(matches!(
        remote.read(s.log.log_end_offset(), 100, true).await,
        Err(RemoteError::NotOffloaded { .. })
    ));
}

#[tokio::test]
async fn large_segments_are_uploaded_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 12 << 20,
        ..LogConfig::default()
    };
    let mut log = SegmentLog::open(&dir.path().join("t-0"), config).unwrap();
    let value = "v".repeat(1000);
    let ts: Vec<i64> = vec![5; 1000];
    let mut count = 0;
    while log.size_bytes() < 11 << 20 {
        let mut b = batch_with(1000, &ts, Compression::None, None);
        // Make the batch about 1 MB by appending records with big values.
        let records: Vec<kafka_protocol::records::Record> = (0..1000)
            .map(|i| kafka_protocol::records::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 5,
                key: None,
                value: Some(bytes::Bytes::from(value.clone())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        kafka_protocol::records::RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &kafka_protocol::records::RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        b.clear();
        b.extend_from_slice(&buf);
        log.append_batch(&mut b, 0, 0).unwrap();
        count += 1;
    }
    log.roll().unwrap();
    let stats = Arc::new(super::store::StoreStats::default());
    let store: Arc<dyn ObjectStore> = Arc::new(super::store::MeteredStore::new(
        Arc::new(InMemory::new()),
        stats.clone(),
    ));
    let ctx = Arc::new(RemoteContext {
        cache: Arc::new(
            ChunkCache::new(ChunkCacheConfig::default(), store.clone())
                .await
                .unwrap(),
        ),
        store,
        keys: ObjectKeys::new(""),
        throttle: Throttle::new(None),
        part_bytes: 5 << 20,
    });
    let remote = RemotePartition::open(ctx, Uuid::from_u128(1), 0, 0)
        .await
        .unwrap();
    let sealed = log.sealed_segment_views(0, i64::MAX, 10).unwrap();
    assert_eq!(sealed.len(), 1);
    remote.upload(&sealed[0], 0).await.unwrap();
    // 11+ MiB in 5 MiB parts: create, 3 parts and complete, plus the indexes and the manifest.
    assert_eq!(stats.puts.load(std::sync::atomic::Ordering::Relaxed), 5 + 2);
    let got = remote.read(0, 64 << 20, true).await.unwrap();
    assert_eq!(ranges(&got).len(), count);
    assert_eq!(got, log.read(0, 64 << 20, i64::MAX, true).unwrap());
}

#[tokio::test]
async fn timestamp_and_epoch_lookups_cover_the_remote_part() {
    let s = setup(100, 64 << 20).await;
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    upload_all(&s, &remote, 0).await;
    // Record i has timestamp 10_000 + i.
    assert_eq!(
        remote.offset_for_timestamp(10_555, 0).await.unwrap(),
        Some((555, 10_555))
    );
    assert_eq!(
        remote.offset_for_timestamp(0, 0).await.unwrap(),
        Some((0, 10_000))
    );
    assert_eq!(
        remote.offset_for_timestamp(0, 37).await.unwrap(),
        Some((37, 10_030))
    );
    assert_eq!(remote.offset_for_timestamp(99_999, 0).await.unwrap(), None);
    assert_eq!(
        remote.max_timestamp_offset(0).await.unwrap(),
        Some((999, 10_999))
    );
    let epochs: Vec<(i32, i64)> = remote
        .epochs()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(epochs, vec![(0, 0), (1, 400), (2, 800)]);
}

#[tokio::test]
async fn retention_and_delete_records_move_the_start_and_collect_objects() {
    let s = setup(100, 64 << 20).await;
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    upload_all(&s, &remote, 0).await;
    let segments = remote.segment_count();
    let objects = || async {
        use futures::TryStreamExt;
        let prefix = Path::from("pfx/topics");
        s.ctx
            .store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    };
    assert_eq!(objects().await, segments * 2 + 1);

    // DeleteRecords inside the third segment frees the first two.
    let third = remote.manifest().segments[2].clone();
    let target = third.base_offset() + 3;
    assert_eq!(remote.advance_start(target, 0).await.unwrap(), 2);
    assert_eq!(remote.readable_start(), Some(target));
    assert!(matches!(
        remote.read(0, 100, true).await,
        Err(RemoteError::NotOffloaded { .. })
    ));
    assert_eq!(remote.collect_garbage(0).await.unwrap(), 2);
    assert_eq!(objects().await, (segments - 2) * 2 + 1);
    assert_eq!(remote.collect_garbage(0).await.unwrap(), 0);

    // Size retention: keep about 3 segments' worth.
    let keep = 3 * remote.manifest().segments[0].size_bytes as i64;
    let moved = remote.apply_retention(0, -1, keep, 0, 0).await.unwrap();
    assert!(moved.is_some());
    // Kafka's rule: drop the oldest segment only while what remains is still >= the limit.
    let m = remote.manifest();
    assert!(m.size_bytes() as i64 >= keep);
    assert!((m.size_bytes() - m.segments[0].size_bytes) < keep as u64);
    // Time retention: every record is older than now - 1 day.
    let now = 10_000 + 86_400_000 * 2;
    remote
        .apply_retention(now, 86_400_000, -1, 0, 0)
        .await
        .unwrap();
    assert_eq!(remote.readable_start(), None);
    remote.collect_garbage(0).await.unwrap();
    assert_eq!(objects().await, 1, "only the manifest is left");
}

#[tokio::test]
async fn outages_fail_uploads_cleanly_and_a_retry_succeeds() {
    let s = setup(60, 64 << 20).await;
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    let sealed = s.log.sealed_segment_views(0, i64::MAX, usize::MAX).unwrap();
    // Total outage.
    s.faulty.set_down(true);
    assert!(remote.upload(&sealed[0], 0).await.is_err());
    assert_eq!(remote.end_offset(), None);
    s.faulty.set_down(false);
    // The log PUT succeeds but the indexes PUT fails: nothing is recorded, nothing is left.
    s.faulty.fail_after(1, 1);
    assert!(remote.upload(&sealed[0], 0).await.is_err());
    assert_eq!(remote.end_offset(), None);
    // Writes fail but reads work (partial failure): uploads fail, reads of what is there work.
    remote.upload(&sealed[0], 0).await.unwrap();
    s.faulty.set_writes_down(true);
    assert!(remote.upload(&sealed[1], 0).await.is_err());
    let got = ranges(&remote.read(0, 1 << 20, true).await.unwrap());
    assert_eq!(got.first().unwrap().0, 0);
    s.faulty.set_writes_down(false);
    // Slow store: still correct.
    s.faulty.set_latency(std::time::Duration::from_millis(20));
    for seg in &sealed[1..] {
        remote.upload(seg, 0).await.unwrap();
    }
    s.faulty.set_latency(std::time::Duration::ZERO);
    let local = ranges(&s.log.read(0, usize::MAX, i64::MAX, false).unwrap());
    assert_eq!(read_everything(&remote, 0, 5000).await, local);
    // Only referenced objects remain (failed attempts were cleaned up).
    use futures::TryStreamExt;
    let listed = s
        .ctx
        .store
        .list(Some(&Path::from("pfx")))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(listed.len(), sealed.len() * 2 + 1);
    assert!(s.faulty.injected.load(std::sync::atomic::Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn a_deposed_leader_cannot_record_uploads() {
    let s = setup(40, 64 << 20).await;
    let sealed = s.log.sealed_segment_views(0, i64::MAX, usize::MAX).unwrap();
    let old = RemotePartition::open(s.ctx.clone(), s.topic, 0, 1)
        .await
        .unwrap();
    old.upload(&sealed[0], 1).await.unwrap();
    let new = RemotePartition::open(s.ctx.clone(), s.topic, 0, 2)
        .await
        .unwrap();
    new.upload(&sealed[1], 2).await.unwrap();
    let err = old.upload(&sealed[1], 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            RemoteError::Fenced {
                current: 2,
                ours: 1,
                ..
            }
        ),
        "{err}"
    );
    let stored = RemotePartition::open(s.ctx.clone(), s.topic, 0, 2)
        .await
        .unwrap();
    assert_eq!(stored.manifest(), new.manifest());
}

#[tokio::test]
async fn restore_seeds_an_empty_directory_to_continue_the_log() {
    let mut s = setup(50, 64 << 20).await;
    // An idempotent producer's last batch must be remembered across the restore.
    let p = crate::batch::test_support::Producer {
        id: 9,
        epoch: 0,
        base_sequence: 0,
    };
    let mut b = batch_with(5, &[], Compression::None, Some(p));
    s.log.append_batch(&mut b, 1, 0).unwrap();
    s.log.roll().unwrap();
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 1)
        .await
        .unwrap();
    upload_all(&s, &remote, 1).await;
    let end = s.log.log_end_offset();
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().join("t-0");
    assert!(remote.restore_into(&dir).await.unwrap());
    assert!(
        !remote.restore_into(&dir).await.unwrap(),
        "never over an existing log"
    );
    let mut restored = SegmentLog::open(&dir, LogConfig::default()).unwrap();
    assert_eq!(restored.log_start_offset(), end);
    assert_eq!(restored.log_end_offset(), end);
    assert_eq!(restored.leader_epochs().latest_epoch(), Some(1));
    // The retried batch is recognised as a duplicate.
    let mut retry = batch_with(5, &[], Compression::None, Some(p));
    let outcome = restored.append_batch(&mut retry, 1, 0).unwrap();
    assert!(
        matches!(outcome, crate::AppendOutcome::Duplicate { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_first_upload_records_a_log_start_inside_the_first_segment() {
    let mut s = setup(40, 64 << 20).await;
    // DeleteRecords ran before tiering: the log starts inside its first segment.
    s.log.purge_prefix(15).unwrap();
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    let sealed = s.log.sealed_segment_views(0, i64::MAX, usize::MAX).unwrap();
    assert!(sealed[0].base_offset < 15 && sealed[0].next_offset > 15);
    for seg in &sealed {
        remote.upload_above(seg, 0, 15).await.unwrap();
    }
    assert_eq!(remote.readable_start(), Some(15));
    let first = ranges(&remote.read(15, 1 << 20, true).await.unwrap());
    assert_eq!(
        first[0],
        (10, 19),
        "the batch holding the start comes whole, as Kafka does"
    );
    assert!(matches!(
        remote.read(5, 100, true).await,
        Err(RemoteError::NotOffloaded { .. })
    ));
}

#[tokio::test]
async fn a_tier_created_without_reading_finds_the_stored_manifest() {
    let s = setup(40, 64 << 20).await;
    let remote = RemotePartition::open(s.ctx.clone(), s.topic, 0, 0)
        .await
        .unwrap();
    upload_all(&s, &remote, 0).await;
    // At start the store was down, so the partition got an empty tier without a read.
    let lazy = RemotePartition::new_empty(s.ctx.clone(), s.topic, 0, 0);
    assert_eq!(lazy.end_offset(), None);
    s.faulty.set_down(true);
    assert!(lazy.ensure_loaded().await.is_err());
    s.faulty.set_down(false);
    lazy.ensure_loaded().await.unwrap();
    assert_eq!(lazy.manifest(), remote.manifest());
    assert_eq!(
        read_everything(&lazy, 0, 4096).await,
        read_everything(&remote, 0, 4096).await
    );
}
