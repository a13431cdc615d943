"""Client-side helpers for the confluent-kafka (librdkafka) tests: admin calls that wait, a producer that
records delivery reports, and a consumer that reads assigned partitions from explicit offsets.

These consumers never join a group: they `assign()` partitions with explicit offsets and never commit
(group membership is tested in test_groups.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

FAST_CLIENT_CONF = {
    "socket.timeout.ms": 10000,
    "topic.metadata.refresh.interval.ms": 5000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 500,
    "retry.backoff.ms": 50,
}


def admin(bootstrap: str, **conf) -> AdminClient:
    """An AdminClient for the broker."""
    return AdminClient({"bootstrap.servers": bootstrap, **FAST_CLIENT_CONF, **conf})


def wait_futures(futures: dict, timeout: float = 30.0) -> dict:
    """Waits for every future of an admin call; raises the first error."""
    return {k: f.result(timeout=timeout) for k, f in futures.items()}


def topic_names(adm: AdminClient) -> set[str]:
    """Names of all topics (a Metadata request for all topics, which never auto-creates)."""
    return set(adm.list_topics(timeout=10).topics.keys())


def partition_count(adm: AdminClient, topic: str) -> int:
    """Number of partitions of an existing topic, from an all-topics Metadata request."""
    md = adm.list_topics(timeout=10).topics.get(topic)
    assert md is not None, f"topic {topic} not in metadata"
    assert md.error is None, f"topic {topic} metadata error {md.error}"
    return len(md.partitions)


def create_topic(adm: AdminClient, name: str, partitions: int = 1, config: dict | None = None,
                 validate_only: bool = False) -> None:
    """Creates a topic (replication factor 1) and, unless validate_only, waits until metadata shows it."""
    nt = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
    wait_futures(adm.create_topics([nt], operation_timeout=10, validate_only=validate_only))
    if not validate_only:
        wait_until(lambda: name in topic_names(adm), f"topic {name} to appear in metadata")


def wait_until(cond, what: str, timeout: float = 20.0, interval: float = 0.1):
    """Polls cond() until it returns a truthy value; fails with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value {last!r})")


@dataclass
class Delivery:
    """One delivery report."""
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    error: KafkaError | None
    timestamp: tuple[int, int]
    opaque: object = None


@dataclass
class RecordingProducer:
    """A Producer whose delivery reports are collected in order of arrival."""
    producer: Producer
    deliveries: list[Delivery] = field(default_factory=list)

    def produce(self, topic: str, value=None, key=None, partition: int | None = None, headers=None,
                timestamp: int | None = None, opaque=None) -> None:
        """Produces one message; polls and retries while the local queue is full."""
        def on_delivery(err, msg, opaque=opaque):
            self.deliveries.append(Delivery(msg.key(), msg.value(), msg.partition(), msg.offset(), err,
                                            msg.timestamp(), opaque))
        kwargs = {"value": value, "key": key, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        while True:
            try:
                self.producer.produce(topic, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Waits for every outstanding delivery report; fails if some are still missing."""
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} messages still undelivered after {timeout}s"

    def errors(self) -> list[Delivery]:
        """Deliveries that failed."""
        return [d for d in self.deliveries if d.error is not None]


def producer(bootstrap: str, **conf) -> RecordingProducer:
    """A RecordingProducer with the given librdkafka configuration (dots as usual in keys)."""
    base = {"bootstrap.servers": bootstrap, **FAST_CLIENT_CONF, "linger.ms": 5}
    base.update(conf)
    return RecordingProducer(Producer(base))


def consumer(bootstrap: str, **conf) -> Consumer:
    """A Consumer for manual assignment. librdkafka's Python binding insists on a group.id, but with
    assign() and no commits the group is never joined (offsets may be looked up, none are stored)."""
    base = {
        "bootstrap.servers": bootstrap,
        **FAST_CLIENT_CONF,
        "group.id": "strata-tests-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    return Consumer(base)


def consume(bootstrap: str, topic: str, partitions, count: int | None = None, start=OFFSET_BEGINNING,
            timeout: float = 30.0, until_eof: bool = True, **conf) -> list:
    """Reads from `partitions` (list of ints) starting at `start` (an offset, or one per partition as a
    dict) until `count` messages arrived or, when count is None, until every partition reported EOF.
    Returns the messages in arrival order; fails on any consumer error other than EOF."""
    c = consumer(bootstrap, **conf)
    try:
        tps = []
        for p in partitions:
            off = start[p] if isinstance(start, dict) else start
            tps.append(TopicPartition(topic, p, off))
        c.assign(tps)
        out = []
        eof = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if count is not None and len(out) >= count:
                break
            if count is None and until_eof and eof >= set(partitions):
                break
            msg = c.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    continue
                raise KafkaException(err)
            eof.discard(msg.partition())
            out.append(msg)
        if count is not None:
            assert len(out) >= count, f"consumed {len(out)} of {count} messages from {topic} within {timeout}s"
        else:
            assert eof >= set(partitions), f"no EOF on partitions {set(partitions) - eof} within {timeout}s"
        return out
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) watermark read from the broker (ListOffsets), not from a cache."""
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def raw_request(bootstrap: str, request):
    """Sends one kafka-python protocol request object on a fresh connection and returns the decoded
    response, for APIs or fields the client libraries do not expose."""
    import socket

    from kafka.protocol.parser import KafkaProtocol

    host, port = bootstrap.rsplit(":", 1)
    proto = KafkaProtocol(client_id="strata-tests")
    proto.send_request(request)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(proto.send_bytes())
        while True:
            chunk = s.recv(65536)
            assert chunk, f"broker closed the connection instead of answering {type(request).__name__}"
            responses = proto.receive_bytes(chunk)
            if responses:
                return responses[0][1]


def raw_metadata(bootstrap: str, topics: list[str] | None, allow_auto_topic_creation: bool):
    """One Metadata v4 request, so a test controls allow_auto_topic_creation exactly."""
    from kafka.protocol.metadata import MetadataRequest

    return raw_request(bootstrap, MetadataRequest[4](topics=topics,
                                                     allow_auto_topic_creation=allow_auto_topic_creation))


def fill(bootstrap: str, topic: str, partitions: int, per_partition: int, start: int = 0) -> set[bytes]:
    """Produces values `<partition>-<i>` for i in start..start+per_partition to each partition; returns
    them."""
    p = producer(bootstrap)
    values = set()
    for part in range(partitions):
        for i in range(start, start + per_partition):
            v = f"{part}-{i}".encode()
            values.add(v)
            p.produce(topic, value=v, partition=part)
    p.flush()
    assert not p.errors()
    return values


class Member(threading.Thread):
    """A group consumer in a thread: polls, records every message, optionally commits each one
    synchronously and records the ones whose commit succeeded. `make_consumer(bootstrap, group, **conf)`
    builds the client (classic or KIP-848 settings)."""

    def __init__(self, bootstrap: str, group: str, topic: str, make_consumer, sync_commit: bool = False,
                 **conf):
        super().__init__(daemon=True)
        self.bootstrap, self.group, self.topic, self.conf = bootstrap, group, topic, conf
        self.make_consumer, self.sync_commit = make_consumer, sync_commit
        self.seen: list[bytes] = []
        self.committed: list[bytes] = []
        self.assignment: list[int] = []
        self.assigns = 0
        self.revokes = 0
        self.first_message_at: float | None = None
        self.stop_flag = threading.Event()
        self.closed = threading.Event()
        self.error: Exception | None = None

    def run(self):
        try:
            c = self.make_consumer(self.bootstrap, self.group, **self.conf)

            def on_assign(_c, parts):
                self.assigns += 1

            def on_revoke(_c, parts):
                self.revokes += 1

            c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
            while not self.stop_flag.is_set():
                m = c.poll(0.1)
                self.assignment = sorted(tp.partition for tp in c.assignment())
                if m is None or m.error():
                    continue
                if self.first_message_at is None:
                    self.first_message_at = time.monotonic()
                self.seen.append(m.value())
                if self.sync_commit:
                    try:
                        c.commit(message=m, asynchronous=False)
                        self.committed.append(m.value())
                    except Exception:  # noqa: BLE001 - a failed commit just means "not committed"
                        pass
            c.close()
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            self.closed.set()

    def stop(self):
        self.stop_flag.set()
        self.closed.wait(20)
        assert self.error is None, self.error
