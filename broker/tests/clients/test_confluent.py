"""confluent-kafka (librdkafka) against a real `strata` broker: admin, produce, fetch, offsets, configs,
restarts, retention and kill -9 under an idempotent load."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    OffsetSpec,
    ResourceType,
)

from conftest import LONG_TESTS
from strata_helpers import (
    admin,
    consume,
    consumer,
    create_topic,
    partition_count,
    producer,
    raw_metadata,
    topic_names,
    wait_futures,
    wait_until,
    watermarks,
)

HERE = Path(__file__).resolve().parent

# The topic configs the broker supports, per the broker's contract.
SUPPORTED_TOPIC_CONFIGS = {
    "cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms",
    "max.message.bytes", "message.timestamp.type", "flush.messages", "flush.ms",
}


def kafka_error(exc: BaseException) -> KafkaError:
    """The KafkaError inside an exception raised by a confluent-kafka future or call."""
    assert isinstance(exc, KafkaException), f"expected KafkaException, got {type(exc).__name__}: {exc}"
    return exc.args[0]


def _source(entry) -> ConfigSource:
    """A config entry's source as a ConfigSource member."""
    return entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)


def describe_topic_configs(adm, topic: str) -> dict:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return wait_futures(adm.describe_configs([res]))[res]


def describe_broker_configs(adm, node_id: int = 0) -> dict:
    res = ConfigResource(ResourceType.BROKER, str(node_id))
    return wait_futures(adm.describe_configs([res]))[res]


# ---------------------------------------------------------------------------------------------------
# Topics and admin
# ---------------------------------------------------------------------------------------------------

def test_create_topic_with_configs_and_validate_only(broker, topic_name):
    adm = admin(broker.bootstrap)
    configs = {"retention.ms": "123456", "segment.bytes": "1048576", "cleanup.policy": "delete"}

    create_topic(adm, topic_name, partitions=3, config=configs, validate_only=True)
    time.sleep(0.5)
    assert topic_name not in topic_names(adm), "validate_only CreateTopics created the topic"

    create_topic(adm, topic_name, partitions=3, config=configs)
    assert partition_count(adm, topic_name) == 3
    described = describe_topic_configs(adm, topic_name)
    for name, value in configs.items():
        assert described[name].value == value, f"{name}: {described[name].value!r} != {value!r}"
        assert _source(described[name]) == ConfigSource.DYNAMIC_TOPIC_CONFIG, \
            f"{name} source {described[name].source}, expected DYNAMIC_TOPIC_CONFIG"

    with pytest.raises(KafkaException) as e:
        create_topic(adm, topic_name, partitions=1)
    assert kafka_error(e.value).code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_create_topic_rejects_invalid_config(broker, topic_name):
    adm = admin(broker.bootstrap)
    with pytest.raises(KafkaException) as e:
        create_topic(adm, topic_name, config={"retention.ms": "not-a-number"})
    assert kafka_error(e.value).code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as e:
        create_topic(adm, topic_name, partitions=0)
    assert kafka_error(e.value).code() == KafkaError.INVALID_PARTITIONS
    assert topic_name not in topic_names(adm)


@pytest.mark.parametrize("name", ["bad name", "a" * 250, "..", ".", "in/valid", "ünïcode"])
def test_bad_topic_name(broker, name):
    adm = admin(broker.bootstrap)
    with pytest.raises(KafkaException) as e:
        create_topic(adm, name)
    assert kafka_error(e.value).code() == KafkaError.TOPIC_EXCEPTION, \
        f"CreateTopics({name!r}) gave {kafka_error(e.value)}, expected INVALID_TOPIC_EXCEPTION (17)"
    assert name not in topic_names(adm)


def test_create_partitions_grows_topic(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=2)
    wait_futures(adm.create_partitions([NewPartitions(topic_name, 5)], operation_timeout=10))
    wait_until(lambda: partition_count(adm, topic_name) == 5, "5 partitions in metadata")

    p = producer(broker.bootstrap, acks="all")
    for part in range(5):
        p.produce(topic_name, value=f"v{part}".encode(), partition=part)
    p.flush()
    assert not p.errors(), p.errors()
    for part in range(5):
        msgs = consume(broker.bootstrap, topic_name, [part], count=1)
        assert msgs[0].value() == f"v{part}".encode()
        assert msgs[0].offset() == 0

    with pytest.raises(KafkaException) as e:
        wait_futures(adm.create_partitions([NewPartitions(topic_name, 3)], operation_timeout=10))
    assert kafka_error(e.value).code() == KafkaError.INVALID_PARTITIONS
    assert partition_count(adm, topic_name) == 5


def test_delete_topic_and_recreate_empty(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=2)
    p = producer(broker.bootstrap, acks="all")
    for i in range(20):
        p.produce(topic_name, value=b"old-%d" % i, partition=i % 2)
    p.flush()
    del p
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 10)

    wait_futures(adm.delete_topics([topic_name], operation_timeout=10))
    wait_until(lambda: topic_name not in topic_names(adm), "deleted topic to leave metadata")

    with pytest.raises(KafkaException) as e:
        wait_futures(adm.delete_topics([topic_name], operation_timeout=10))
    assert kafka_error(e.value).code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    create_topic(adm, topic_name, partitions=1)
    assert partition_count(adm, topic_name) == 1
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 0)
    assert consume(broker.bootstrap, topic_name, [0]) == []
    p = producer(broker.bootstrap, acks="all")
    p.produce(topic_name, value=b"new", partition=0)
    p.flush()
    msgs = consume(broker.bootstrap, topic_name, [0])
    assert [(m.offset(), m.value()) for m in msgs] == [(0, b"new")]


def test_describe_cluster(broker):
    adm = admin(broker.bootstrap)
    desc = adm.describe_cluster(request_timeout=10).result(timeout=30)
    assert desc.cluster_id, "empty cluster id"
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(0, "127.0.0.1", broker.port)]
    assert desc.controller is not None and desc.controller.id == 0


def test_metrics_endpoint(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name)
    p = producer(broker.bootstrap, acks="all")
    p.produce(topic_name, value=b"m", partition=0)
    p.flush()
    text = broker.metrics()
    assert "# TYPE" in text and "# HELP" in text, "not Prometheus text exposition"
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples, "no samples"
    assert any(topic_name in line for line in samples), "no per-topic or per-partition sample for the topic"


# ---------------------------------------------------------------------------------------------------
# Produce and fetch
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_codec_roundtrip(broker, topic_name, codec, rng):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=1)
    p = producer(broker.bootstrap, **{"compression.type": codec, "linger.ms": 20, "acks": "all"})
    base_ts = int(time.time() * 1000) - 60_000
    sent = []
    for i in range(300):
        key = None if i % 17 == 0 else f"key-{i}".encode()
        if i % 29 == 0:
            value = None  # tombstone
        elif i % 50 == 7:
            value = (f"big-{i}-" * 2000).encode()  # compressible, spans many KiB
        else:
            value = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        headers = [("h1", f"v{i}".encode()), ("dup", b"a"), ("dup", b"b")] if i % 3 else []
        if i % 11 == 0:
            headers.append(("nullh", None))
        ts = base_ts + i * 7
        sent.append((key, value, headers, ts))
        p.produce(topic_name, key=key, value=value, headers=headers, timestamp=ts, partition=0)
        if i % 100 == 99:
            p.flush()
    p.flush()
    assert not p.errors(), [str(d.error) for d in p.errors()]
    assert sorted(d.offset for d in p.deliveries) == list(range(300))

    msgs = consume(broker.bootstrap, topic_name, [0], count=300)
    assert len(msgs) == 300
    for i, (m, (key, value, headers, ts)) in enumerate(zip(msgs, sent)):
        assert m.offset() == i
        assert m.key() == key, f"record {i} key"
        assert m.value() == value, f"record {i} value"
        assert (m.headers() or []) == headers, f"record {i} headers {m.headers()} != {headers}"
        assert m.timestamp() == (1, ts), f"record {i} timestamp {m.timestamp()} != (CreateTime, {ts})"


def test_keyed_messages_follow_client_partitioner(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=6)
    keys = [f"user-{i}".encode() for i in range(60)]
    p = producer(broker.bootstrap, acks="all")
    for k in keys:
        p.produce(topic_name, key=k, value=b"first")
    p.flush()
    for k in keys:
        p.produce(topic_name, key=k, value=b"second")
    p.flush()
    assert not p.errors()
    first = {d.key: d.partition for d in p.deliveries if d.value == b"first"}
    second = {d.key: d.partition for d in p.deliveries if d.value == b"second"}
    assert first == second, "the same key went to different partitions"
    assert len(set(first.values())) > 1, "all keys on one partition: partitioner not exercised"

    msgs = consume(broker.bootstrap, topic_name, list(range(6)))
    assert len(msgs) == 120
    for m in msgs:
        assert first[m.key()] == m.partition(), f"key {m.key()} consumed from partition {m.partition()}"
    by_offset = {(d.partition, d.offset): (d.key, d.value) for d in p.deliveries}
    for m in msgs:
        assert by_offset[(m.partition(), m.offset())] == (m.key(), m.value()), \
            "delivery report offset does not match the consumed record"


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(broker, topic_name, acks):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=2)
    p = producer(broker.bootstrap, acks=acks)
    for i in range(200):
        p.produce(topic_name, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2)
    p.flush()
    assert not p.errors(), [str(d.error) for d in p.errors()]
    if acks != "0":
        for part in range(2):
            assert sorted(d.offset for d in p.deliveries if d.partition == part) == list(range(100))

    if acks == "0":  # nothing acknowledges the writes: wait until they are visible
        wait_until(lambda: all(watermarks(broker.bootstrap, topic_name, q)[1] == 100 for q in range(2)),
                   "acks=0 writes to become visible")
    for part in range(2):
        msgs = consume(broker.bootstrap, topic_name, [part], count=100)
        assert [m.value() for m in msgs] == [b"v%d" % i for i in range(part, 200, 2)]
        assert [m.offset() for m in msgs] == list(range(100))
        assert watermarks(broker.bootstrap, topic_name, part) == (0, 100)


def test_consume_from_middle_and_end(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name)
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 50})
    for i in range(50):
        p.produce(topic_name, value=b"%d" % i, partition=0)
    p.flush()
    msgs = consume(broker.bootstrap, topic_name, [0], start=37)
    assert [m.offset() for m in msgs] == list(range(37, 50)), "fetch from inside a batch"
    assert consume(broker.bootstrap, topic_name, [0], start=OFFSET_END) == []
    assert consume(broker.bootstrap, topic_name, [0], start=50) == []


def test_log_append_time_topic(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 20, "compression.type": "gzip"})
    for i in range(20):
        p.produce(topic_name, value=b"%d" % i, timestamp=before - 3_600_000 + i, partition=0)
    p.flush()
    after = int(time.time() * 1000)
    assert not p.errors()
    for d in p.deliveries:
        kind, ts = d.timestamp
        assert kind == 2 and before <= ts <= after, \
            f"delivery report timestamp {d.timestamp}, expected (LogAppendTime, {before}..{after})"
    msgs = consume(broker.bootstrap, topic_name, [0], count=20)
    for m in msgs:
        kind, ts = m.timestamp()
        assert kind == 2, f"offset {m.offset()}: timestamp type {kind}, expected LogAppendTime (2)"
        assert before <= ts <= after, f"offset {m.offset()}: append time {ts} outside {before}..{after}"
    c = consumer(broker.bootstrap)
    try:
        # The producer's (old) timestamps are gone: lookups use the append time.
        got = c.offsets_for_times([TopicPartition(topic_name, 0, before - 1000)], timeout=10)[0]
        assert got.offset == 0
        got = c.offsets_for_times([TopicPartition(topic_name, 0, after + 60_000)], timeout=10)[0]
        assert got.offset == -1
    finally:
        c.close()


def test_message_too_large(broker_factory, topic_name):
    broker = broker_factory("--message-max-bytes", "4096")
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, config={"max.message.bytes": "1024"})
    other = topic_name + "-brokerdefault"
    create_topic(adm, other)
    assert describe_topic_configs(adm, other)["max.message.bytes"].value == "4096"

    p = producer(broker.bootstrap, acks="all", **{"compression.type": "none"})
    p.produce(topic_name, value=bytes(2000), partition=0)
    p.flush()
    errs = p.errors()
    assert len(errs) == 1 and errs[0].error.code() == KafkaError.MSG_SIZE_TOO_LARGE, \
        f"2000-byte record to a topic with max.message.bytes=1024: {[str(d.error) for d in errs]}"

    p = producer(broker.bootstrap, acks="all", **{"compression.type": "none"})
    p.produce(other, value=bytes(8000), partition=0)
    p.flush()  # separate batches: the broker refuses a whole batch
    p.produce(other, value=bytes(100), partition=0)
    p.flush()
    codes = [d.error.code() if d.error else None for d in p.deliveries]
    assert codes.count(KafkaError.MSG_SIZE_TOO_LARGE) == 1 and codes.count(None) == 1, \
        f"8000-byte record with broker message.max.bytes=4096: {codes}"

    p = producer(broker.bootstrap, acks="all")
    p.produce(topic_name, value=b"small", partition=0)
    p.flush()
    assert not p.errors()
    assert [m.value() for m in consume(broker.bootstrap, topic_name, [0])] == [b"small"]
    assert [m.value() for m in consume(broker.bootstrap, other, [0])] == [bytes(100)]


# ---------------------------------------------------------------------------------------------------
# Offsets
# ---------------------------------------------------------------------------------------------------

def test_list_offsets_by_timestamp(broker, topic_name, rng):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=1)
    base = int(time.time() * 1000) - 3_600_000
    # Several batches; one record in the middle of a batch has the maximum timestamp.
    timestamps = [base + 10 * i for i in range(60)]
    max_idx = 33
    timestamps[max_idx] = base + 10_000_000
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 100, "compression.type": "lz4"})
    for i, ts in enumerate(timestamps):
        p.produce(topic_name, value=b"%d" % i, timestamp=ts, partition=0)
        if i % 20 == 19:
            p.flush()
    p.flush()
    assert not p.errors()

    c = consumer(broker.bootstrap)
    try:
        # Every record's own timestamp finds that record (the first offset with timestamp >= target).
        for ts in timestamps:
            # The answer is the first offset whose timestamp is >= ts: the record itself, except after
            # the max-timestamp record, which then answers for every later (smaller) timestamp.
            expected = next(j for j, t in enumerate(timestamps) if t >= ts)
            got = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=10)[0]
            assert got.error is None, got.error
            assert got.offset == expected, f"offsets_for_times({ts}) = {got.offset}, expected {expected}"
        # Between two records: the next one.
        got = c.offsets_for_times([TopicPartition(topic_name, 0, timestamps[5] + 3)], timeout=10)[0]
        assert got.offset == 6
        # Before everything: offset 0. After everything: -1 (no such record).
        got = c.offsets_for_times([TopicPartition(topic_name, 0, base - 1000)], timeout=10)[0]
        assert got.offset == 0
        got = c.offsets_for_times([TopicPartition(topic_name, 0, timestamps[max_idx] + 1)], timeout=10)[0]
        assert got.offset == -1, f"timestamp after every record gave offset {got.offset}, expected -1"
        assert c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10, cached=False) == (0, 60)
    finally:
        c.close()

    tp = TopicPartition(topic_name, 0)
    for spec, expected_offset, expected_ts in [
        (OffsetSpec.earliest(), 0, None),
        (OffsetSpec.latest(), 60, None),
        (OffsetSpec.max_timestamp(), max_idx, timestamps[max_idx]),
        (OffsetSpec.for_timestamp(timestamps[10]), 10, timestamps[10]),
    ]:
        res = adm.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=30)
        assert res.offset == expected_offset, f"list_offsets({spec}) offset {res.offset} != {expected_offset}"
        if expected_ts is not None:
            assert res.timestamp == expected_ts, f"list_offsets({spec}) timestamp {res.timestamp} != {expected_ts}"


def test_delete_records_moves_low_watermark(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=2)
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 20})
    for i in range(100):
        p.produce(topic_name, value=b"%d" % i, partition=0)
    p.produce(topic_name, value=b"other", partition=1)
    p.flush()

    tp = TopicPartition(topic_name, 0, 40)
    res = adm.delete_records([tp], request_timeout=10)
    (fut,) = res.values()
    assert fut.result(timeout=30).low_watermark == 40
    assert watermarks(broker.bootstrap, topic_name, 0) == (40, 100)
    assert watermarks(broker.bootstrap, topic_name, 1) == (0, 1), "DeleteRecords touched another partition"

    msgs = consume(broker.bootstrap, topic_name, [0], start=OFFSET_BEGINNING)
    assert [m.offset() for m in msgs] == list(range(40, 100))
    assert msgs[0].value() == b"40"
    # A position below the log start is out of range: auto.offset.reset=earliest restarts at 40.
    msgs = consume(broker.bootstrap, topic_name, [0], start=5)
    assert msgs and msgs[0].offset() == 40

    with pytest.raises(KafkaException) as e:
        (fut,) = adm.delete_records([TopicPartition(topic_name, 0, 1000)], request_timeout=10).values()
        fut.result(timeout=30)
    assert kafka_error(e.value).code() == KafkaError.OFFSET_OUT_OF_RANGE

    # -1 means "up to the high watermark".
    (fut,) = adm.delete_records([TopicPartition(topic_name, 0, OFFSET_END)], request_timeout=10).values()
    assert fut.result(timeout=30).low_watermark == 100
    assert watermarks(broker.bootstrap, topic_name, 0) == (100, 100)


# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------

def test_describe_configs_defaults_and_sources(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, config={"retention.ms": "3600000"})
    cfg = describe_topic_configs(adm, topic_name)
    missing = SUPPORTED_TOPIC_CONFIGS - set(cfg)
    assert not missing, f"DescribeConfigs lacks {missing}"
    assert cfg["retention.ms"].value == "3600000"
    assert _source(cfg["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not cfg["retention.ms"].is_default
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["retention.bytes"].value == "-1"
    assert cfg["message.timestamp.type"].value == "CreateTime"
    for name in SUPPORTED_TOPIC_CONFIGS - {"retention.ms"}:
        assert _source(cfg[name]) == ConfigSource.DEFAULT_CONFIG, f"{name} source {_source(cfg[name])}"
        assert cfg[name].is_default, f"{name} not flagged default"
        assert cfg[name].value is not None and cfg[name].value != "", f"{name} has no value"


def test_describe_configs_broker_flags_are_static_broker_config(broker_factory, topic_name):
    broker = broker_factory("--log-retention-ms", "7200000", "--message-max-bytes", "500000",
                            "--num-partitions", "3")
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name)
    cfg = describe_topic_configs(adm, topic_name)
    assert cfg["retention.ms"].value == "7200000"
    assert _source(cfg["retention.ms"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert cfg["max.message.bytes"].value == "500000"
    assert _source(cfg["max.message.bytes"]) == ConfigSource.STATIC_BROKER_CONFIG

    bcfg = describe_broker_configs(adm)
    for name, value in [("log.retention.ms", "7200000"), ("message.max.bytes", "500000"),
                        ("num.partitions", "3")]:
        assert name in bcfg, f"broker config {name} missing from DescribeConfigs(BROKER 0)"
        assert bcfg[name].value == value, f"broker {name} = {bcfg[name].value!r}, expected {value!r}"
        assert _source(bcfg[name]) == ConfigSource.STATIC_BROKER_CONFIG, f"broker {name} source"


def test_alter_configs_replaces_and_incremental_merges(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, config={"segment.bytes": "1048576", "max.message.bytes": "20000"})

    # AlterConfigs (legacy) replaces the whole set of topic overrides.
    res = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.ms": "5000",
                                                                     "max.message.bytes": "30000"})
    wait_futures(adm.alter_configs([res]))
    cfg = describe_topic_configs(adm, topic_name)
    assert cfg["retention.ms"].value == "5000"
    assert cfg["max.message.bytes"].value == "30000"
    assert _source(cfg["segment.bytes"]) == ConfigSource.DEFAULT_CONFIG, \
        "AlterConfigs must drop overrides it does not list (segment.bytes kept its override)"

    # IncrementalAlterConfigs changes only what it names.
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "7000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    wait_futures(adm.incremental_alter_configs([res]))
    cfg = describe_topic_configs(adm, topic_name)
    assert cfg["retention.ms"].value == "7000"
    assert cfg["segment.bytes"].value == "2097152"
    assert _source(cfg["segment.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert _source(cfg["max.message.bytes"]) == ConfigSource.DEFAULT_CONFIG

    # validate_only changes nothing.
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "9999", incremental_operation=AlterConfigOpType.SET)])
    wait_futures(adm.incremental_alter_configs([res], validate_only=True))
    assert describe_topic_configs(adm, topic_name)["retention.ms"].value == "7000"

    # A bad value is refused and leaves the config unchanged.
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "abc", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        wait_futures(adm.incremental_alter_configs([res]))
    assert kafka_error(e.value).code() == KafkaError.INVALID_CONFIG
    assert describe_topic_configs(adm, topic_name)["retention.ms"].value == "7000"

    # Configs of a topic that does not exist.
    res = ConfigResource(ResourceType.TOPIC, topic_name + "-missing", incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        wait_futures(adm.incremental_alter_configs([res]))
    assert kafka_error(e.value).code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_altered_max_message_bytes_takes_effect(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("max.message.bytes", "1000", incremental_operation=AlterConfigOpType.SET)])
    wait_futures(adm.incremental_alter_configs([res]))
    p = producer(broker.bootstrap, acks="all", **{"compression.type": "none"})
    p.produce(topic_name, value=bytes(3000), partition=0)
    p.flush()
    assert [d.error.code() if d.error else None for d in p.deliveries] == [KafkaError.MSG_SIZE_TOO_LARGE]


def test_incremental_alter_broker_config(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name)
    res = ConfigResource(ResourceType.BROKER, "0", incremental_configs=[
        ConfigEntry("log.retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    wait_futures(adm.incremental_alter_configs([res]))
    bcfg = describe_broker_configs(adm)
    assert bcfg["log.retention.ms"].value == "7200000"
    assert _source(bcfg["log.retention.ms"]) == ConfigSource.DYNAMIC_BROKER_CONFIG
    cfg = describe_topic_configs(adm, topic_name)
    assert cfg["retention.ms"].value == "7200000", "topic without override must inherit the broker value"
    assert _source(cfg["retention.ms"]) == ConfigSource.DYNAMIC_BROKER_CONFIG


# ---------------------------------------------------------------------------------------------------
# Auto-create
# ---------------------------------------------------------------------------------------------------

def test_auto_create_on_produce_and_metadata(broker_factory, topic_name):
    broker = broker_factory("--num-partitions", "3")
    adm = admin(broker.bootstrap)

    p = producer(broker.bootstrap, acks="all")
    p.produce(topic_name, value=b"hello")
    p.flush()
    assert not p.errors(), [str(d.error) for d in p.errors()]
    assert topic_name in topic_names(adm)
    assert partition_count(adm, topic_name) == 3, "auto-created topic must get --num-partitions"

    by_meta = topic_name + "-meta"
    resp = raw_metadata(broker.bootstrap, [by_meta], allow_auto_topic_creation=False)
    assert [(t[0], t[1]) for t in resp.topics] == [(3, by_meta)], \
        f"Metadata(allow_auto_topic_creation=false) for a missing topic: {resp.topics}"
    assert by_meta not in topic_names(adm)
    resp = raw_metadata(broker.bootstrap, [by_meta], allow_auto_topic_creation=True)
    assert resp.topics[0][1] == by_meta and resp.topics[0][0] in (0, 5), \
        f"Metadata(allow_auto_topic_creation=true): {resp.topics} (expected NONE or LEADER_NOT_AVAILABLE)"
    wait_until(lambda: by_meta in topic_names(adm), "metadata auto-created topic")
    assert partition_count(adm, by_meta) == 3


def test_auto_create_disabled(broker_factory, topic_name):
    broker = broker_factory("--auto-create-topics-enable", "false")
    adm = admin(broker.bootstrap)
    resp = raw_metadata(broker.bootstrap, [topic_name], allow_auto_topic_creation=True)
    assert [(t[0], t[1]) for t in resp.topics] == [(3, topic_name)], \
        f"Metadata with auto-create disabled on the broker: {resp.topics}, expected UNKNOWN_TOPIC_OR_PARTITION"

    p = producer(broker.bootstrap, acks="all", **{"message.timeout.ms": 3000,
                                                  "topic.metadata.propagation.max.ms": 1000})
    p.produce(topic_name, value=b"x")
    p.flush()
    codes = [d.error.code() if d.error else None for d in p.deliveries]
    assert codes and codes[0] in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                                  KafkaError._MSG_TIMED_OUT), f"produce to a missing topic: {codes}"
    assert topic_name not in topic_names(adm)


# ---------------------------------------------------------------------------------------------------
# Durability: restart, retention, kill -9, idempotence
# ---------------------------------------------------------------------------------------------------

def test_restart_keeps_topics_configs_data_offsets(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=3, config={"retention.ms": "86400000", "segment.bytes": "65536"})
    p = producer(broker.bootstrap, acks="all", **{"compression.type": "zstd"})
    for i in range(900):
        p.produce(topic_name, key=b"k%d" % i, value=(b"v%d-" % i) * 20, partition=i % 3)
    p.flush()
    assert not p.errors()
    (fut,) = adm.delete_records([TopicPartition(topic_name, 1, 50)], request_timeout=10).values()
    fut.result(timeout=30)
    before = {q: watermarks(broker.bootstrap, topic_name, q) for q in range(3)}
    assert before == {0: (0, 300), 1: (50, 300), 2: (0, 300)}

    broker.restart()
    adm = admin(broker.bootstrap)
    assert partition_count(adm, topic_name) == 3
    cfg = describe_topic_configs(adm, topic_name)
    assert cfg["retention.ms"].value == "86400000" and cfg["segment.bytes"].value == "65536"
    assert {q: watermarks(broker.bootstrap, topic_name, q) for q in range(3)} == before
    for q in range(3):
        msgs = consume(broker.bootstrap, topic_name, [q])
        first = before[q][0]
        assert [m.offset() for m in msgs] == list(range(first, 300))
        assert [m.value() for m in msgs] == [(b"v%d-" % i) * 20 for i in range(q + 3 * first, 900, 3)]

    p = producer(broker.bootstrap, acks="all")
    p.produce(topic_name, value=b"after-restart", partition=0)
    p.flush()
    assert [d.offset for d in p.deliveries] == [300]


@pytest.mark.slow
def test_retention_deletes_old_segments_while_consuming(broker_factory, topic_name):
    broker = broker_factory("--log-retention-check-interval-ms", "500")
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, config={"segment.bytes": str(16 * 1024), "retention.ms": "2000"})

    # A reader that starts at the beginning and holds almost nothing in its prefetch queue, so while it
    # is not polled its position stays near offset 0 and retention deletes the log under it.
    c = consumer(broker.bootstrap, **{"fetch.max.bytes": 4096, "message.max.bytes": 4096,
                                      "max.partition.fetch.bytes": 4096, "queued.max.messages.kbytes": 1,
                                      "queued.min.messages": 1, "fetch.queue.backoff.ms": 10})
    c.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
    try:
        p = producer(broker.bootstrap, acks="all", **{"linger.ms": 1, "batch.num.messages": 4})
        payload = b"x" * 1000
        for i in range(200):
            p.produce(topic_name, value=payload + b"old-%d" % i, partition=0)
        p.flush()
        assert not p.errors()

        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                first = m
        assert first is not None and first.offset() == 0, "the reader did not start at offset 0"

        low = wait_until(lambda: watermarks(broker.bootstrap, topic_name, 0)[0], "log start to advance",
                         timeout=30)
        assert low > 0

        # New data keeps flowing to the reader whose position was deleted (offset out of range, reset
        # to earliest).
        for i in range(50):
            p.produce(topic_name, value=b"new-%d" % i, partition=0)
        p.flush()
        assert not p.errors()
        new, offsets = [], []
        deadline = time.monotonic() + 30
        while len(new) < 50 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
                continue
            assert not m.error(), m.error()
            offsets.append(m.offset())
            if m.value().startswith(b"new-"):
                new.append(m)
        assert [m.value() for m in new] == [b"new-%d" % i for i in range(50)]
        assert [m.offset() for m in new] == list(range(200, 250))
        assert offsets == sorted(offsets), "the reader went backwards"
    finally:
        c.close()

    low, high = watermarks(broker.bootstrap, topic_name, 0)
    assert high == 250 and low > 0
    # From the beginning, and from a deleted offset (out of range, reset to earliest): never below low.
    for start in (OFFSET_BEGINNING, 0):
        msgs = consume(broker.bootstrap, topic_name, [0], start=start)
        assert all(m.offset() >= low for m in msgs), f"start={start}: read offset {msgs[0].offset()} < {low}"
        assert not msgs or msgs[-1].offset() == 249


@pytest.mark.slow
def test_retention_bytes(broker_factory, topic_name):
    broker = broker_factory("--log-retention-check-interval-ms", "300")
    adm = admin(broker.bootstrap)
    segment, retention = 16 * 1024, 50_000
    create_topic(adm, topic_name, config={"segment.bytes": str(segment), "retention.bytes": str(retention)})
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 1, "batch.num.messages": 4})
    for i in range(200):
        p.produce(topic_name, value=b"y" * 1000 + b"%d" % i, partition=0)
    p.flush()
    assert not p.errors()
    low = wait_until(lambda: watermarks(broker.bootstrap, topic_name, 0)[0], "size retention to delete",
                     timeout=30)
    time.sleep(1.0)  # a few more retention passes: nothing more may go
    low, high = watermarks(broker.bootstrap, topic_name, 0)
    assert high == 200
    kept = high - low
    # Whole segments go, oldest first, only while the rest still holds retention.bytes (~1 KiB records):
    # between retention.bytes and retention.bytes + one segment remain.
    assert retention // 1100 <= kept <= (retention + segment) // 1000 + 1, \
        f"{kept} records kept with retention.bytes={retention}, segment.bytes={segment}"
    msgs = consume(broker.bootstrap, topic_name, [0])
    assert [m.offset() for m in msgs] == list(range(low, 200))


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _read_acks(path: Path) -> list[tuple[int, int, int]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append(tuple(map(int, parts)))
    return out


def _check_log_against_acks(bootstrap: str, topic: str, partitions: int, acks: list[tuple[int, int, int]]):
    """Every acknowledged (partition, seq, offset) is in the log exactly once, at the acknowledged offset,
    and every partition holds its sequence numbers strictly increasing (no duplicates, no reordering)."""
    for q in range(partitions):
        msgs = consume(bootstrap, topic, [q], timeout=120)
        seqs = []
        at = {}
        for m in msgs:
            mp, seq = map(int, m.value().split(b":")[:2])
            assert mp == q, f"record for partition {mp} found in partition {q}"
            seqs.append(seq)
            at[seq] = m.offset()
        dups = len(seqs) - len(set(seqs))
        assert dups == 0, f"partition {q}: {dups} duplicated records"
        assert seqs == sorted(seqs), f"partition {q}: records out of order"
        acked = [(s, o) for (p, s, o) in acks if p == q]
        missing = [s for s, _ in acked if s not in at]
        assert not missing, f"partition {q}: {len(missing)} acknowledged records lost, first {missing[:10]}"
        wrong = [(s, o, at[s]) for s, o in acked if at[s] != o]
        assert not wrong, f"partition {q}: acknowledged offset differs from log offset (seq, acked, log): {wrong[:10]}"


@pytest.mark.slow
@pytest.mark.timeout(1500 if LONG_TESTS else 300)
def test_kill9_during_idempotent_load(broker_factory, topic_name, tmp_path, rng):
    broker = broker_factory()
    partitions = 3
    count = 1_000_000 if LONG_TESTS else 50_000
    kills = 10 if LONG_TESTS else 2
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=partitions)

    ack_file = tmp_path / "acks.txt"
    log_file = tmp_path / "load.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(HERE / "load_producer.py"), broker.bootstrap, topic_name,
                                 str(partitions), str(count), str(ack_file)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for k in range(kills):
            target = int(count * (k + 1) / (kills + 2) * rng.uniform(0.8, 1.2))
            wait_until(lambda: proc.poll() is not None or _count_lines(ack_file) >= target,
                       f"{target} acknowledged records before kill {k + 1}", timeout=300, interval=0.05)
            assert proc.poll() is None, (
                f"the load finished before kill {k + 1}; the kill must land mid-load (raise count)")
            broker.kill9()
            acked_at_kill = _count_lines(ack_file)
            print(f"kill -9 #{k + 1} after {acked_at_kill} acks")
            time.sleep(rng.uniform(0.2, 1.5))
            broker.start()
        rc = proc.wait(timeout=600 if LONG_TESTS else 180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    load_log = log_file.read_text()
    assert rc == 0, f"load producer exited {rc}:\n{load_log[-3000:]}"
    acks = _read_acks(ack_file)
    assert len(acks) == count, f"{len(acks)} of {count} records acknowledged:\n{load_log[-3000:]}"
    _check_log_against_acks(broker.bootstrap, topic_name, partitions, acks)


@pytest.mark.slow
def test_idempotent_producer_retries_across_restart(broker, topic_name):
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=2)
    p = producer(broker.bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                      "batch.num.messages": 20, "message.timeout.ms": 60000})
    total = 6000
    done = threading.Event()
    failures = []

    def produce_loop():
        try:
            for i in range(total):
                p.produce(topic_name, value=b"%d:%d" % (i % 2, i // 2), partition=i % 2)
                if i % 20 == 0:
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append(e)
        finally:
            done.set()

    t = threading.Thread(target=produce_loop)
    t.start()
    wait_until(lambda: len(p.deliveries) >= total // 4, "a quarter of the records delivered", timeout=60,
               interval=0.01)
    outstanding = len(p.producer)
    broker.stop()  # SIGTERM while records are queued and in flight; the producer keeps producing
    assert outstanding > 0, "nothing was in flight when the broker stopped: the test proves nothing"
    time.sleep(1.0)
    delivered_before_restart = len(p.deliveries)
    broker.start()
    t.join(timeout=120)
    assert done.is_set() and not failures, failures
    p.flush(90)
    errs = p.errors()
    assert not errs, f"{len(errs)} deliveries failed, first: {errs[0].error}"
    assert len(p.deliveries) == total
    assert delivered_before_restart < total, "everything was delivered before the restart"
    acks = []
    for d in p.deliveries:
        q, s = map(int, d.value.split(b":"))
        acks.append((q, s, d.offset))
    _check_log_against_acks(broker.bootstrap, topic_name, 2, acks)
    for q in range(2):
        assert watermarks(broker.bootstrap, topic_name, q)[1] == total // 2, \
            f"partition {q}: high watermark counts duplicates"


def test_compacted_topic_refuses_keyless_records(broker, topic_name):
    """Kafka's rule (with KIP-467 record errors): a compacted topic accepts keyed records only; in a batch
    mixing both, the keyless records fail with INVALID_RECORD and the rest of that batch with librdkafka's
    INVALID_DIFFERENT_RECORD; nothing of the batch is written."""
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=1, config={"cleanup.policy": "compact"})
    p = producer(broker.bootstrap, **{"linger.ms": 50, "retries": 0})
    for i in range(10):
        p.produce(topic_name, value=b"v%d" % i, key=None if i % 5 == 0 else b"k%d" % i, partition=0)
    p.flush(30)
    errors = [d.error.code() if d.error else None for d in p.deliveries]
    assert errors.count(KafkaError.INVALID_RECORD) == 2, errors
    assert None not in errors, f"part of a batch with keyless records was accepted: {errors}"
    p2 = producer(broker.bootstrap)
    p2.produce(topic_name, value=b"ok", key=b"k", partition=0)
    p2.flush(30)
    assert p2.deliveries[0].error is None, p2.deliveries[0].error
    assert p2.deliveries[0].offset == 0, "the refused batch must not have been written"


@pytest.mark.parametrize("target", ["uncompressed", "lz4", "zstd"])
def test_topic_compression_type_recompresses(broker, topic_name, target):
    """compression.type other than `producer` makes the broker re-encode batches: consumers get every
    record intact, the stored batches use the topic's codec, and idempotent producers still work."""
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=1, config={"compression.type": target})
    p = producer(broker.bootstrap, **{"compression.type": "gzip", "enable.idempotence": True, "linger.ms": 20})
    sent = [(b"k%d" % i, b"value-%d-" % i * 20) for i in range(200)]
    for k, v in sent:
        p.produce(topic_name, key=k, value=v, partition=0, headers=[("h", k)])
    p.flush(30)
    assert all(d.error is None for d in p.deliveries), [d.error for d in p.deliveries if d.error][:3]
    got = consume(broker.bootstrap, topic_name, [0], count=len(sent))
    assert [(m.key(), m.value()) for m in got] == sent
    assert [m.headers() for m in got] == [[("h", k)] for k, _ in sent]
    # The stored codec, read from the raw batch attributes in the partition's segment file.
    import glob
    seg = sorted(glob.glob(str(broker.data_dir / f"{topic_name}-0" / "*.log")))[0]
    raw = open(seg, "rb").read()
    codec = int.from_bytes(raw[21:23], "big") & 7
    assert codec == {"uncompressed": 0, "lz4": 3, "zstd": 4}[target]


def test_generic_broker_config_flag_sets_topic_defaults(broker_factory, topic_name):
    """`--broker-config KEY=VALUE` sets any topic default by Kafka name; topics inherit it and
    DescribeConfigs reports it as a static broker config."""
    broker = broker_factory("--broker-config", "compression.type=zstd",
                            "--broker-config", "log.index.interval.bytes=8192")
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=1)
    topic = describe_topic_configs(adm, topic_name)
    assert topic["compression.type"].value == "zstd"
    assert _source(topic["compression.type"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert topic["index.interval.bytes"].value == "8192"
    brk = describe_broker_configs(adm)
    assert brk["compression.type"].value == "zstd"
    assert _source(brk["log.index.interval.bytes"]) == ConfigSource.STATIC_BROKER_CONFIG
