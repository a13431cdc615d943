"""Tiered storage end to end: a real `strata` broker offloading to a real S3-compatible server (s3s-fs with
SigV4 checking, or moto's server), read back by confluent-kafka (librdkafka) clients.

Segments are made tiny (64 KiB) and local retention shorter than that, so a few MB of records put most of
the log in the object store only.
"""

from __future__ import annotations

import re
import shutil
import threading
import time

import pytest
from confluent_kafka import TopicPartition

from conftest import LONG_TESTS, S3Server
from strata_helpers import (admin, consume, consumer, create_topic, producer, wait_futures, wait_until,
                            watermarks)

SEGMENT = 64 * 1024
TIERED_FLAGS = [
    "--broker-config", f"segment.bytes={SEGMENT}",
    "--broker-config", "local.retention.bytes=1",
    "--remote-task-interval-ms", "200",
    "--log-retention-check-interval-ms", "500",
]


def tiered_broker(broker_factory, s3: S3Server, *extra: str, start: bool = True):
    return broker_factory(*s3.broker_flags(), *TIERED_FLAGS, *extra, env=S3Server.broker_env(), start=start)


def metric(text: str, name: str, labels: str | None = None) -> float:
    """One sample of `strata_<name>` (with exactly `labels`, e.g. 'topic="t",partition="0"')."""
    pattern = rf"^strata_{name}" + (r"\{" + re.escape(labels) + r"\}" if labels else r"(\{[^}]*\})?") + r" (\S+)$"
    values = [float(m.group(m.lastindex)) for m in re.finditer(pattern, text, re.M)]
    assert values, f"metric strata_{name}{{{labels or ''}}} not exported"
    return sum(values)


# Record i is stamped TS_BASE + i: recent enough that the default 7-day retention keeps it.
TS_BASE = int(time.time() * 1000) - 3_600_000


def value_of(i: int) -> bytes:
    return (f"rec-{i:07d}-" + "x" * (150 + i % 97)).encode()


def produce_range(bootstrap: str, topic: str, start: int, count: int, **conf) -> None:
    # Small batches so that segments (64 KiB) hold many of them.
    p = producer(bootstrap, **{"linger.ms": 20, "acks": "all", "batch.size": 16384, **conf})
    for i in range(start, start + count):
        p.produce(topic, value=value_of(i), key=str(i).encode(), partition=0, timestamp=TS_BASE + i)
    p.flush(60)
    assert not p.errors(), p.errors()[:3]


def check_range(bootstrap: str, topic: str, start: int, end: int) -> None:
    """Consumes [start, end) and checks every record's offset, key and value."""
    msgs = consume(bootstrap, topic, [0], count=end - start, start=start, timeout=90,
                   **{"fetch.max.bytes": 4 * 1024 * 1024})
    for n, m in enumerate(msgs[: end - start]):
        i = start + n
        assert m.offset() == i, f"offset {m.offset()} where {i} was expected"
        assert m.key() == str(i).encode() and m.value() == value_of(i), f"wrong record at offset {i}"


def partition_dir_bytes(broker, topic: str) -> int:
    d = broker.data_dir / f"{topic}-0"
    return sum(f.stat().st_size for f in d.glob("*.log"))


def wait_offloaded(broker, topic: str, upto: int, timeout: float = 60.0) -> None:
    """Until the remote log reaches `upto` (all sealed segments below it offloaded) and local retention
    has removed the offloaded local segments."""
    def done():
        m = broker.metrics()
        lag = metric(m, "remote_upload_lag_segments", f'topic="{topic}",partition="0"')
        remote = metric(m, "remote_log_size_bytes", f'topic="{topic}",partition="0"')
        return lag == 0 and remote > 0 and partition_dir_bytes(broker, topic) < 3 * SEGMENT
    wait_until(done, f"{topic} offloaded", timeout=timeout, interval=0.3)
    # Everything before the active segment is remote: reading it must not need the local log.
    assert consumer_low_local(broker, topic) > 0 or upto == 0


def consumer_low_local(broker, topic: str) -> int:
    """The first offset still on local disk (ListOffsets EARLIEST_LOCAL, -4)."""
    from kafka.protocol.list_offsets import ListOffsetsRequest

    from strata_helpers import raw_request
    resp = raw_request(broker.bootstrap, ListOffsetsRequest[4](replica_id=-1, isolation_level=0,
                                                               topics=[(topic, [(0, -1, -4)])]))
    _, parts = resp.topics[0]
    _, error, _, offset, _ = parts[0]
    assert error == 0, f"ListOffsets EARLIEST_LOCAL failed with error {error}"
    return offset


def test_history_past_local_retention_is_read_back_from_s3(broker_factory, s3_factory, topic_name):
    s3 = s3_factory("s3s")
    b = tiered_broker(broker_factory, s3)
    adm = admin(b.bootstrap)
    create_topic(adm, topic_name)
    n = 30_000
    produce_range(b.bootstrap, topic_name, 0, n)
    wait_offloaded(b, topic_name, n)
    local_start = consumer_low_local(b, topic_name)
    assert local_start > n // 2, f"only offsets >= {local_start} should be local"

    # Every record from offset 0, through the cache, with content checks.
    check_range(b.bootstrap, topic_name, 0, n)
    # The objects are really in the S3 server: a manifest and .log/.indexes pairs.
    keys = s3.keys("cluster/topics/")
    assert any(k.endswith("/0/manifest.json") for k in keys), keys[:5]
    logs = [k for k in keys if k.endswith(".log")]
    assert len(logs) >= 5 and len([k for k in keys if k.endswith(".indexes")]) == len(logs)
    assert watermarks(b.bootstrap, topic_name, 0) == (0, n)
    # Lookups by timestamp land in the remote part (record i has timestamp base + i).
    c = consumer(b.bootstrap)
    try:
        found = c.offsets_for_times([TopicPartition(topic_name, 0, TS_BASE + 1234)], timeout=10)
        assert found[0].offset == 1234
    finally:
        c.close()
    m = b.metrics()
    assert metric(m, "remote_get_requests") > 0 and metric(m, "remote_cache_misses") > 0
    assert metric(m, "remote_segments_uploaded") >= len(logs)

    # A second read of the same history is served from the cache.
    gets = metric(b.metrics(), "remote_get_requests")
    check_range(b.bootstrap, topic_name, 0, 2000)
    assert metric(b.metrics(), "remote_get_requests") == gets, "a warm re-read made GETs"

    # DeleteRecords inside the remote part moves the log start and frees the segments below it.
    from confluent_kafka.admin import DeletedRecords  # noqa: F401 (confluent-kafka >= 2.4)
    res = wait_futures(adm.delete_records([TopicPartition(topic_name, 0, 10_000)]))
    assert list(res.values())[0].low_watermark == 10_000
    assert watermarks(b.bootstrap, topic_name, 0)[0] == 10_000
    check_range(b.bootstrap, topic_name, 10_000, 10_100)
    wait_until(lambda: len([k for k in s3.keys("cluster/topics/") if k.endswith(".log")]) < len(logs),
               "remote segments below the new log start to be deleted")


def test_empty_data_dir_restart_serves_the_offloaded_history(broker_factory, s3_factory, topic_name):
    s3 = s3_factory("s3s")
    b = tiered_broker(broker_factory, s3)
    create_topic(admin(b.bootstrap), topic_name, config={"retention.ms": "-1"})
    n = 20_000
    produce_range(b.bootstrap, topic_name, 0, n, **{"enable.idempotence": True})
    wait_offloaded(b, topic_name, n)
    remote_end = consumer_low_local(b, topic_name)
    b.stop()
    # The disk is lost; the object store is all that is left.
    shutil.rmtree(b.data_dir)
    b.start()
    adm = admin(b.bootstrap)
    wait_until(lambda: topic_name in adm.list_topics(timeout=10).topics, "the topic to be known again")
    low, high = watermarks(b.bootstrap, topic_name, 0)
    assert (low, high) == (0, remote_end), f"expected the offloaded history [0, {remote_end})"
    check_range(b.bootstrap, topic_name, 0, remote_end)
    # New records continue after the offloaded history.
    produce_range(b.bootstrap, topic_name, remote_end, 100)
    check_range(b.bootstrap, topic_name, remote_end - 10, remote_end + 100)


def test_object_store_outage_keeps_produce_working_and_loses_nothing(broker_factory, s3_factory, topic_name):
    s3 = s3_factory("s3s")
    # A local limit the outage will hit: produce gets a retriable KAFKA_STORAGE_ERROR until uploads resume.
    limit = 24 * SEGMENT
    b = tiered_broker(broker_factory, s3, "--local-disk-limit-bytes", str(limit))
    create_topic(admin(b.bootstrap), topic_name)
    outage = 60.0 if LONG_TESTS else 30.0
    p = producer(b.bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 10, "batch.size": 16384,
                                 "message.timeout.ms": int((outage + 90) * 1000)})
    stop = threading.Event()
    sent = [0]

    def run():
        i = 0
        while not stop.is_set():
            p.produce(topic_name, value=value_of(i), key=str(i).encode(), partition=0)
            i += 1
            if i % 200 == 0:
                time.sleep(0.05)
        sent[0] = i

    t = threading.Thread(target=run)
    t.start()
    try:
        time.sleep(3)
        s3.stop()
        outage_started = time.monotonic()
        wait_until(lambda: metric(b.metrics(), "remote_upload_errors") > 0, "uploads to fail", timeout=20)
        wait_until(lambda: "local disk limit reached" in b.stderr_tail(400),
                   "produce to be refused at the local disk limit", timeout=outage)
        time.sleep(max(0.0, outage - (time.monotonic() - outage_started)))
        s3.start()
        time.sleep(5)
    finally:
        stop.set()
        t.join()
    p.flush(outage + 90)
    errors = p.errors()
    assert not errors, f"{len(errors)} deliveries failed, first: {errors[0].error}"
    acked = sorted((d.offset, d.key) for d in p.deliveries)
    assert len(acked) == sent[0]
    # Every acknowledged record is in the log exactly once, at its acknowledged offset, in order.
    assert [o for o, _ in acked] == list(range(len(acked))), "acknowledged offsets are not 0..n-1"
    wait_offloaded(b, topic_name, len(acked), timeout=120)
    msgs = consume(b.bootstrap, topic_name, [0], count=len(acked), timeout=120,
                   **{"fetch.max.bytes": 4 * 1024 * 1024})
    assert [(m.offset(), m.key()) for m in msgs] == acked
    assert partition_dir_bytes(b, topic_name) < limit


def test_total_retention_deletes_remote_segments(broker_factory, s3_factory, topic_name):
    s3 = s3_factory("moto")  # moto's server enforces conditional puts on the manifest
    b = tiered_broker(broker_factory, s3)
    adm = admin(b.bootstrap)
    # Total retention of about 6 segments across both tiers.
    create_topic(adm, topic_name, config={"retention.bytes": str(6 * SEGMENT)})
    n = 20_000
    produce_range(b.bootstrap, topic_name, 0, n)
    wait_offloaded(b, topic_name, n)

    def segment_objects():
        return len([k for k in s3.keys("cluster/topics/") if k.endswith(".log")])
    wait_until(lambda: 0 < segment_objects() <= 7, "segments beyond retention to be deleted from the bucket")
    assert metric(b.metrics(), "remote_segments_deleted") > 0
    low = watermarks(b.bootstrap, topic_name, 0)[0]
    assert low > 0
    check_range(b.bootstrap, topic_name, low, n)


def test_topic_deletion_removes_objects_even_across_an_outage_and_a_restart(broker_factory, s3_factory,
                                                                            topic_name):
    s3 = s3_factory("s3s")
    b = tiered_broker(broker_factory, s3)
    adm = admin(b.bootstrap)
    create_topic(adm, topic_name)
    produce_range(b.bootstrap, topic_name, 0, 10_000)
    wait_offloaded(b, topic_name, 10_000)
    assert s3.keys("cluster/topics/")
    s3.stop()
    wait_futures(adm.delete_topics([topic_name], operation_timeout=10))
    b.restart()
    time.sleep(1)
    s3.start()
    wait_until(lambda: not s3.keys("cluster/topics/"), "every object of the deleted topic to go", timeout=30)
    # The broker's metadata copy in the bucket no longer lists the topic.
    wait_until(lambda: topic_name.encode() not in s3.client().get_object(
        Bucket="strata", Key="cluster/cluster/metadata.json")["Body"].read(), "the metadata copy to be updated")


def test_read_cache_disk_tier_stays_within_its_bound(broker_factory, s3_factory, topic_name, tmp_path):
    s3 = s3_factory("s3s")
    cache_dir = tmp_path / "cache"
    bound = 2 * 1024 * 1024
    b = tiered_broker(broker_factory, s3, "--remote-cache-dir", str(cache_dir),
                      "--remote-cache-disk-bytes", str(bound), "--remote-cache-memory-bytes", str(256 * 1024),
                      "--remote-cache-chunk-bytes", str(64 * 1024))
    create_topic(admin(b.bootstrap), topic_name)
    n = 30_000  # about 6 MB, three times the disk tier
    produce_range(b.bootstrap, topic_name, 0, n)
    wait_offloaded(b, topic_name, n)
    for _ in range(2):
        check_range(b.bootstrap, topic_name, 0, n)
        used = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
        assert used <= bound, f"disk cache holds {used} bytes, above its {bound}-byte bound"
    # A range that fits in the cache is served from it the second time.
    start = consumer_low_local(b, topic_name) - 2000
    check_range(b.bootstrap, topic_name, start, start + 2000)
    hits, gets = metric(b.metrics(), "remote_cache_hits"), metric(b.metrics(), "remote_get_requests")
    check_range(b.bootstrap, topic_name, start, start + 2000)
    assert metric(b.metrics(), "remote_cache_hits") > hits
    assert metric(b.metrics(), "remote_get_requests") == gets


def test_reassignment_copies_only_the_local_tail_and_the_new_replica_serves_the_offloaded_history(
        cluster_factory, s3_factory, topic_name):
    """RFC 0006 "Reassignment" with tiering on: a replica added by AlterPartitionReassignments installs a
    snapshot naming the offloaded history (remote manifest, producer state, epochs) and copies only the
    local tail; once it leads, it serves the whole history, the offloaded part from the object store."""
    from confluent_kafka import ElectionType
    from confluent_kafka.admin import NewTopic

    from replication_helpers import alter_reassignments, list_reassignments, partition_state

    s3 = s3_factory("s3s")
    c = cluster_factory(4, *s3.broker_flags(), *TIERED_FLAGS, "--auto-leader-rebalance-enable", "false",
                        env=S3Server.broker_env())
    adm = admin(c.node(1).bootstrap)  # referenced until the futures resolve
    wait_futures(adm.create_topics([NewTopic(topic_name, num_partitions=1, replica_assignment=[[1, 2, 3]])],
                                   operation_timeout=20, request_timeout=25), timeout=30)
    wait_until(lambda: (s := partition_state(c.node(1).bootstrap, topic_name)) and set(s[0][2]) == {1, 2, 3},
               "three replicas in sync", timeout=30)
    n = 12_000  # ~2.7 MB: about 40 segments of 64 KiB
    produce_range(c.bootstrap_all, topic_name, 0, n)
    leader = partition_state(c.node(1).bootstrap, topic_name)[0][0]
    wait_offloaded(c.node(leader), topic_name, n)
    history = sum(len(value_of(i)) for i in range(n))

    t0 = time.monotonic()
    assert alter_reassignments(c.node(2).port, topic_name, {0: [4, 1, 2]}) == {0: 0}

    def moved():
        s = partition_state(c.node(4).bootstrap, topic_name)
        return s and s[0][1] == [4, 1, 2] and set(s[0][2]) == {1, 2, 4} and not list_reassignments(c.node(4).port)
    wait_until(moved, "replicas 4, 1, 2 in sync and the reassignment complete", timeout=60, interval=0.2)
    moved_s = time.monotonic() - t0
    copied = partition_dir_bytes(c.node(4), topic_name)
    assert copied < 3 * SEGMENT < history / 10, f"node 4 copied {copied} bytes of a {history}-byte history"
    wait_until(lambda: not (c.node(3).data_dir / f"{topic_name}-0").exists(), "node 3's replica removed",
               timeout=30)

    # As a follower it reads the manifest the leader wrote (the agreed offloaded end passed its view):
    # its log starts at 0 again, not at the snapshot boundary.
    labels = f'topic="{topic_name}",partition="0"'
    wait_until(lambda: metric(c.node(4).metrics(), "remote_log_start_offset", labels) == 0
               and metric(c.node(4).metrics(), "log_start_offset", labels) == 0,
               "node 4's view of the offloaded history", timeout=20)

    # Node 4 becomes the leader (its preferred replica) and serves offset 0 onwards: the offloaded part
    # through the object store, since it never had it on disk.
    gets = metric(c.node(4).metrics(), "remote_get_requests")
    adm4 = admin(c.node(4).bootstrap)  # referenced until the future resolves
    result = adm4.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic_name, 0)]).result(timeout=40)
    assert all(err is None for err in result.values()), result
    wait_until(lambda: (s := partition_state(c.node(4).bootstrap, topic_name)) and s[0][0] == 4,
               "node 4 leads", timeout=30)
    check_range(c.node(4).bootstrap, topic_name, 0, n)
    assert metric(c.node(4).metrics(), "remote_get_requests") > gets, "node 4 served the history without the object store"
    # As the leader it takes writes and offloads them.
    produce_range(c.bootstrap_all, topic_name, n, 3000)
    wait_offloaded(c.node(4), topic_name, n + 3000)
    check_range(c.node(1).bootstrap, topic_name, n - 100, n + 3000)
    print(f"\nreassigned a {history / 2**20:.1f} MiB tiered partition in {moved_s:.2f}s; "
          f"node 4 copied {copied / 1024:.0f} KiB")


def test_embedded_default_tiers_to_the_local_filesystem(broker_factory, topic_name):
    # No object store flags: sealed segments go to file://<data-dir>/remote.
    b = broker_factory(*TIERED_FLAGS)
    create_topic(admin(b.bootstrap), topic_name)
    n = 10_000
    produce_range(b.bootstrap, topic_name, 0, n)
    wait_offloaded(b, topic_name, n)
    remote = b.data_dir / "remote" / "topics"
    objects = [p for p in remote.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in objects)
    assert len([p for p in objects if p.suffix == ".log"]) >= 5
    check_range(b.bootstrap, topic_name, 0, n)
    # And after a restart (the manifest is re-read, not the directory listed).
    b.restart()
    check_range(b.bootstrap, topic_name, 0, 1000)


def test_local_disk_limit_refuses_produce_and_recovers_without_tiering(broker_factory, topic_name):
    # No object store: only retention or DeleteRecords can free space; the guard still protects the disk.
    limit = 1024 * 1024
    b = broker_factory("--object-store", "off", "--broker-config", f"segment.bytes={SEGMENT}",
                       "--local-disk-limit-bytes", str(limit))
    adm = admin(b.bootstrap)
    create_topic(adm, topic_name)
    p = producer(b.bootstrap, **{"message.timeout.ms": 3000, "batch.size": 16384})
    for i in range(12_000):  # about 2.4 MB
        p.produce(topic_name, value=value_of(i), partition=0)
    p.producer.flush(30)
    failed = [d for d in p.deliveries if d.error is not None]
    assert failed, "produce past the local disk limit was accepted"
    assert "local disk limit reached" in b.stderr_tail(400)
    delivered = len(p.deliveries) - len(failed)
    assert delivered * 150 < 2 * limit
    # Freeing space (DeleteRecords up to the high watermark) lets produce in again.
    high = watermarks(b.bootstrap, topic_name, 0)[1]
    wait_futures(adm.delete_records([TopicPartition(topic_name, 0, high)]))

    def accepted():
        q = producer(b.bootstrap, **{"message.timeout.ms": 2000})
        q.produce(topic_name, value=b"after", partition=0)
        q.producer.flush(10)
        return all(d.error is None for d in q.deliveries) and q.deliveries
    wait_until(accepted, "produce to be accepted after space was freed", timeout=20)
