"""Helpers for tests of replicated partitions on a `Cluster`: creating RF3 topics, reading partition state
(leader, replicas, ISR) from Metadata, waiting for a replication state, an idempotent acks=all writer thread,
reading a whole topic and checking a history against acknowledged writes."""

from __future__ import annotations

import threading
import time
from collections import Counter

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from conftest import Cluster
from strata_helpers import admin, consume, producer, wait_futures, wait_until


def create_replicated(bootstrap: str, name: str, partitions: int, rf: int = 3, config: dict | None = None) -> None:
    adm = admin(bootstrap)  # referenced until the futures resolve
    wait_futures(adm.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                             config=dict(config or {}))], operation_timeout=20, request_timeout=25),
                 timeout=30)


def partition_state(bootstrap: str, topic: str):
    """partition -> (leader, replicas, isr) from a fresh client's Metadata through `bootstrap`, or None."""
    try:
        md = admin(bootstrap).list_topics(topic, timeout=5)
    except KafkaException:
        return None
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return {p: (pm.leader, list(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}


def wait_replicated(c: Cluster, topic: str, partitions: int, live: set[int], isr: set[int] | None = None,
                    via: int | None = None, timeout: float = 40.0, preferred: bool = False):
    """Until Metadata (through `via`, or any live node) shows every partition led by a live broker with three
    replicas and exactly `isr` (default: `live`) in sync, and with `preferred` led by its first replica;
    returns the state."""
    isr = live if isr is None else isr
    node = via if via is not None else min(live)

    seen = []

    def ok():
        s = partition_state(c.node(node).bootstrap, topic)
        seen[:] = [s]
        if s is None or sorted(s) != list(range(partitions)):
            return None
        for leader, replicas, in_sync in s.values():
            if leader not in live or len(replicas) != 3 or set(in_sync) != isr:
                return None
            if preferred and leader != replicas[0]:
                return None
        return s
    what = "their preferred replica" if preferred else sorted(live)
    try:
        return wait_until(ok, f"{topic}: {partitions} partitions led by {what} with ISR {sorted(isr)}",
                          timeout=timeout, interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; last (leader, replicas, isr) per partition: {seen[0] if seen else None}") from None


class Writer(threading.Thread):
    """An idempotent acks=all producer writing unique values `w-<n>` round-robin over the partitions until
    stopped; records which values were acknowledged (with their partition and offset) and which failed."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, prefix: str = "w", pause: float = 0.01):
        super().__init__(daemon=True)
        self.prefix = prefix
        self.pause = pause  # seconds slept after every 50 sends
        self.p = producer(bootstrap, acks="all", **{"enable.idempotence": True, "linger.ms": 2,
                                                    "message.timeout.ms": 60000, "retry.backoff.ms": 50})
        self.topic, self.partitions = topic, partitions
        self.stop_flag = threading.Event()
        self.sent = 0

    def run(self):
        while not self.stop_flag.is_set():
            self.p.produce(self.topic, value=f"{self.prefix}-{self.sent}".encode(), partition=self.sent % self.partitions)
            self.sent += 1
            if self.sent % 50 == 0:
                self.p.producer.poll(0.01)
                time.sleep(self.pause)
        self.p.flush(90)

    def finish(self):
        self.stop_flag.set()
        self.join(120)
        assert not self.is_alive(), "the writer did not finish"
        acked = {d.value: (d.partition, d.offset) for d in self.p.deliveries if d.error is None}
        failed = [d for d in self.p.deliveries if d.error is not None]
        return acked, failed


def read_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    msgs = consume(bootstrap, topic, list(range(partitions)), timeout=60)
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    for m in msgs:
        out[m.partition()].append((m.offset(), m.value()))
    return out


def check_history(read: dict[int, list[tuple[int, bytes]]], acked: dict[bytes, tuple[int, int]]) -> None:
    """Every acknowledged value is read once, at the offset its acknowledgement named; no value twice."""
    values = Counter(v for rows in read.values() for _, v in rows)
    dup = [v for v, n in values.items() if n > 1]
    assert not dup, f"{len(dup)} values read twice, e.g. {dup[:5]}"
    at = {v: (p, o) for p, rows in read.items() for o, v in rows}
    lost = [v for v in acked if v not in at]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged values lost, e.g. {lost[:5]}"
    moved = [(v, acked[v], at[v]) for v in acked if at[v] != acked[v]]
    assert not moved, f"{len(moved)} values read at another offset than acknowledged, e.g. {moved[:3]}"
    for p, rows in read.items():
        offsets = [o for o, _ in rows]
        assert offsets == sorted(set(offsets)), f"partition {p}: offsets not strictly increasing"


def finish_and_check(w: Writer, c: Cluster, topic: str, partitions: int, nodes) -> dict:
    """Stops the writer (no send may have failed), reads the topic through each of `nodes` and checks that
    they serve one history holding every acknowledged value once at its acknowledged offset; returns the
    acknowledged values."""
    acked, failed = w.finish()
    assert not failed, f"{len(failed)} sends failed, e.g. {[(d.value, str(d.error)) for d in failed[:3]]}"
    nodes = list(nodes)
    first = read_all(c.node(nodes[0]).bootstrap, topic, partitions)
    check_history(first, acked)
    for i in nodes[1:]:
        assert read_all(c.node(i).bootstrap, topic, partitions) == first, f"node {i} serves another history"
    return acked


def alter_reassignments(port: int, topic: str, targets: dict[int, list[int] | None]):
    """AlterPartitionReassignments v0 through 127.0.0.1:port: partition -> error code (a target of None
    cancels)."""
    from kafka.protocol.admin import AlterPartitionReassignmentsRequest_v0

    from conftest import _raw_request
    req = AlterPartitionReassignmentsRequest_v0(
        timeout_ms=30000, topics=[(topic, [(p, r, {}) for p, r in targets.items()], {})], tags={})
    resp = _raw_request(port, req, 30)
    assert resp.error_code == 0, resp
    return {p[0]: p[1] for _, parts, _ in resp.responses for p in parts}


def list_reassignments(port: int):
    """ListPartitionReassignments v0 through 127.0.0.1:port: (topic, partition) -> (replicas, adding,
    removing)."""
    from kafka.protocol.admin import ListPartitionReassignmentsRequest_v0

    from conftest import _raw_request
    resp = _raw_request(port, ListPartitionReassignmentsRequest_v0(timeout_ms=10000, topics=None, tags={}), 10)
    assert resp.error_code == 0, resp
    return {(name, p[0]): (list(p[1]), list(p[2]), list(p[3])) for name, parts, _ in resp.topics for p in parts}
