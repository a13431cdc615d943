"""kafka-python (a pure-Python client with its own protocol code) against a real `strata` broker."""

from __future__ import annotations

import importlib.util
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from kafka.protocol.admin import DescribeLogDirsRequest_v0, DescribeLogDirsResponse_v0
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.offset_for_leader_epoch import OffsetForLeaderEpochRequest

from strata_helpers import raw_request, wait_until


class DescribeLogDirsResponseV1(DescribeLogDirsResponse_v0):
    """DescribeLogDirs v1 has v0's wire format; kafka-python only ships v0, which Kafka 4 removed."""
    API_VERSION = 1


class DescribeLogDirsRequestV1(DescribeLogDirsRequest_v0):
    """DescribeLogDirs v1 request (same fields as v0)."""
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponseV1


def _lz4_available() -> bool:
    return importlib.util.find_spec("lz4") is not None


def _admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="strata-tests",
                            request_timeout_ms=15000)


def _create(adm: KafkaAdminClient, name: str, partitions: int = 1, configs: dict | None = None) -> None:
    adm.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                topic_configs=dict(configs or {}))], timeout_ms=10000)
    wait_until(lambda: name in adm.list_topics(), f"topic {name} in metadata")


def _read(broker, topic: str, partition: int, offset: int, count: int, timeout: float = 30.0) -> list:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, offset)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                out.extend(records)
        assert len(out) >= count, f"read {len(out)} of {count} records from {topic}-{partition}"
        return out
    finally:
        c.close()


@pytest.mark.parametrize("codec", ["gzip", pytest.param("lz4", marks=pytest.mark.skipif(
    not _lz4_available(), reason="python lz4 module not installed")), None])
def test_produce_consume_roundtrip(broker, topic_name, codec):
    adm = _admin(broker)
    _create(adm, topic_name, partitions=2)
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, acks="all", linger_ms=10)
    base_ts = int(time.time() * 1000) - 10_000
    futures = []
    for i in range(200):
        futures.append(prod.send(topic_name, key=b"k%d" % i, value=(b"value-%d-" % i) * (1 + i % 20),
                                 headers=[("i", str(i).encode())], partition=i % 2, timestamp_ms=base_ts + i))
    prod.flush()
    metas = [f.get(timeout=30) for f in futures]
    prod.close()
    for part in range(2):
        assert sorted(m.offset for m in metas if m.partition == part) == list(range(100))

    for part in range(2):
        got = _read(broker, topic_name, part, 0, 100)
        assert [r.offset for r in got] == list(range(100))
        for r, i in zip(got, range(part, 200, 2)):
            assert r.key == b"k%d" % i
            assert r.value == (b"value-%d-" % i) * (1 + i % 20)
            assert list(r.headers) == [("i", str(i).encode())]
            assert r.timestamp == base_ts + i and r.timestamp_type == 0

    # seek into the middle
    got = _read(broker, topic_name, 1, 57, 43)
    assert [r.offset for r in got] == list(range(57, 100))
    adm.close()


def test_admin_create_describe_delete(broker, topic_name):
    adm = _admin(broker)
    _create(adm, topic_name, partitions=4, configs={"retention.ms": "600000"})
    with pytest.raises(TopicAlreadyExistsError):
        adm.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=10000)

    (desc,) = adm.describe_topics([topic_name])
    assert desc["topic"] == topic_name
    assert desc["error_code"] == 0
    parts = sorted(desc["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    for p in parts:
        assert p["leader"] == 0 and p["replicas"] == [0] and p["isr"] == [0]

    (resp,) = adm.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])
    ((err, _msg, rtype, rname, entries),) = [tuple(r)[:5] for r in resp.resources]
    assert err == 0 and rname == topic_name
    values = {e[0]: e[1] for e in entries}
    assert values.get("retention.ms") == "600000", values
    assert values.get("cleanup.policy") == "delete", values

    (bresp,) = adm.describe_configs([ConfigResource(ConfigResourceType.BROKER, "0")])
    ((berr, _m, _t, bname, bentries),) = [tuple(r)[:5] for r in bresp.resources]
    assert berr == 0 and bname == "0" and len(bentries) > 0

    adm.delete_topics([topic_name], timeout_ms=10000)
    wait_until(lambda: topic_name not in adm.list_topics(), "topic gone from metadata")
    with pytest.raises(UnknownTopicOrPartitionError):
        adm.delete_topics([topic_name], timeout_ms=10000)
    adm.close()


def _produce_counts(broker, topic: str, counts: dict[int, int]) -> None:
    prod = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    futures = [prod.send(topic, value=b"x" * 100, partition=p) for p, n in counts.items() for _ in range(n)]
    prod.flush()
    for f in futures:
        f.get(timeout=30)
    prod.close()


def test_offset_for_leader_epoch(broker, topic_name):
    adm = _admin(broker)
    _create(adm, topic_name, partitions=2)
    _produce_counts(broker, topic_name, {0: 10, 1: 3})
    # The leader epoch is the Raft term of the partition's group; ask for the current one.
    md = raw_request(broker.bootstrap, MetadataRequest[7](topics=[topic_name], allow_auto_topic_creation=False))
    # v7 partition: (error, index, leader, leader_epoch, replicas, isr, offline)
    epochs = {p[1]: p[3] for t in md.topics for p in t[3]}
    assert all(e is not None and e >= 1 for e in epochs.values()), epochs
    resp = raw_request(broker.bootstrap, OffsetForLeaderEpochRequest[3](
        replica_id=-1, topics=[(topic_name, [(0, -1, epochs[0]), (1, -1, epochs[1])])]))
    ((topic, parts),) = resp.topics
    assert topic == topic_name
    # A single node leads with one epoch from offset 0: the end of that epoch is the log end.
    assert sorted(parts) == [(0, 0, epochs[0], 10), (0, 1, epochs[1], 3)], parts
    # An epoch below every known one gets itself and the start of the earliest (Kafka's answer).
    resp = raw_request(broker.bootstrap, OffsetForLeaderEpochRequest[3](
        replica_id=-1, topics=[(topic_name, [(0, -1, 0)])]))
    ((_, parts),) = resp.topics
    assert parts == [(0, 0, 0, 0)], parts
    resp = raw_request(broker.bootstrap, OffsetForLeaderEpochRequest[3](
        replica_id=-1, topics=[(topic_name, [(7, -1, 0)])]))
    ((_, ((err, part, _epoch, _end),)),) = resp.topics
    assert (err, part) == (3, 7), "unknown partition must give UNKNOWN_TOPIC_OR_PARTITION"
    adm.close()


def test_describe_log_dirs(broker, topic_name):
    adm = _admin(broker)
    _create(adm, topic_name, partitions=2)
    _produce_counts(broker, topic_name, {0: 20})
    resp = raw_request(broker.bootstrap, DescribeLogDirsRequestV1(topics=None))
    assert len(resp.log_dirs) == 1, resp.log_dirs
    ((err, log_dir, topics),) = resp.log_dirs
    assert err == 0 and log_dir, resp.log_dirs
    sizes = {p[0]: p[1] for name, parts in topics if name == topic_name for p in parts}
    assert set(sizes) == {0, 1}, f"partitions of {topic_name} in DescribeLogDirs: {topics}"
    assert sizes[0] >= 20 * 100 and sizes[1] == 0, sizes
    adm.close()
