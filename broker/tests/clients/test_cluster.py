"""Three `strata broker` processes as one cluster: each node is a broker and a voter of the embedded
metadata quorum (combined mode). Real clients (confluent-kafka, kcat) against it: partition placement,
produce/consume through every node, a consumer group spanning nodes, controller failover (kill -9),
broker fencing (SIGSTOP / SIGCONT / kill -9), a full cluster restart and bad quorum configuration.

These tests use replication factor 1 topics, so the partitions of a fenced or dead broker have no leader
(-1) until it returns, and come back on that same broker; replicated topics are in `test_replication.py`.
Run with `-s` to see the measured failover and fencing times.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import NewTopic

from conftest import CLUSTER_SESSION_TIMEOUT_MS, Broker, Cluster, _reported_brokers, free_ports, port_open
from strata_helpers import FAST_CLIENT_CONF, admin, consume, create_topic, fill, producer, wait_futures, wait_until

GROUP_FLAGS = ["--group-initial-rebalance-delay-ms", "0"]
SESSION_S = CLUSTER_SESSION_TIMEOUT_MS / 1000
# How long after its session timeout a silent broker may still be listed (heartbeat interval, the
# controller's check period, propagation to every broker, slow CI).
FENCE_SLACK_S = 10.0


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------

def client_view(bootstrap: str, topic: str):
    """(broker id -> (host, port), partition -> PartitionMetadata of `topic` or None) from confluent-kafka's
    list_topics, with `bootstrap` as the only bootstrap server of a fresh client (nothing cached)."""
    md = admin(bootstrap).list_topics(timeout=10)
    brokers = {b.id: (b.host, b.port) for b in md.brokers.values()}
    t = md.topics.get(topic)
    return brokers, (None if t is None else dict(t.partitions)), md


def wait_client_view(c: Cluster, bootstrap: str, topic: str, partitions: int, brokers: set[int]) -> dict[int, int]:
    """Until list_topics through `bootstrap` lists exactly `brokers` (at their addresses) and `topic` with
    `partitions` partitions, each led by one of them; returns partition -> leader."""
    def ok():
        try:
            listed, parts, _ = client_view(bootstrap, topic)
        except KafkaException:
            return None
        if listed != {i: ("127.0.0.1", c.node(i).port) for i in brokers}:
            return None
        if parts is None or sorted(parts) != list(range(partitions)):
            return None
        if any(pm.leader not in brokers or pm.error is not None for pm in parts.values()):
            return None
        return {p: pm.leader for p, pm in parts.items()}
    return wait_until(ok, f"list_topics via {bootstrap}: brokers {sorted(brokers)}, {topic} with {partitions} "
                          f"led partitions", timeout=30, interval=0.2)


def kcat(bootstrap: str, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> str:
    """Runs kcat with `bootstrap` as its only bootstrap server; fails with kcat's stderr on a non-zero exit."""
    cmd = ["kcat", "-b", bootstrap, "-X", "socket.timeout.ms=10000", *args]
    r = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}"
    return r.stdout.decode()


def group_consumer(bootstrap: str, group: str, **conf) -> Consumer:
    """A subscribing group member that commits only when told to."""
    base = {
        "bootstrap.servers": bootstrap,
        **FAST_CLIENT_CONF,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 200,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    return Consumer(base)


def poll_values(c: Consumer, count: int, timeout: float = 45.0, settle: float = 0.0) -> list[bytes]:
    """Values of the messages polled until `count` arrived, then `settle` seconds more (so duplicates or
    records that should not be there show up). Fails on non-retriable consumer errors."""
    out: list[bytes] = []

    def poll_once():
        m = c.poll(0.2)
        if m is None:
            return
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF or (err.retriable() and not err.fatal()):
                return
            raise KafkaException(err)
        out.append(m.value())

    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        poll_once()
    assert len(out) >= count, f"polled {len(out)} of {count} messages within {timeout}s"
    end = time.monotonic() + settle
    while time.monotonic() < end:
        poll_once()
    return out


def group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets (OffsetFetch through an admin client on `bootstrap`)."""
    adm = admin(bootstrap)  # referenced until the futures resolve (a collected client cancels them)
    got = wait_futures(adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]))
    return {(tp.topic, tp.partition): tp.offset for tp in got[group].topic_partitions}


def patient_group_offsets(bootstrap: str, group: str, timeout: float = 40.0) -> dict[tuple[str, int], int]:
    """`group_offsets`, retried on retriable errors and timeouts until `timeout`; the errors seen are
    in the failure message."""
    deadline = time.monotonic() + timeout
    errors = []
    while True:
        try:
            return group_offsets(bootstrap, group)
        except KafkaException as e:
            err = e.args[0]
            errors.append(f"{time.monotonic() - deadline + timeout:.1f}s: {err.str()}")
            transient = err.retriable() or err.code() in (
                KafkaError._TIMED_OUT, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR)
            if not transient or time.monotonic() >= deadline:
                raise AssertionError(f"OffsetFetch via {bootstrap} kept failing: {errors}") from e
            time.sleep(0.5)


def topic_ids(bootstrap: str, names) -> dict[str, tuple[int, int]]:
    """name -> topic id (as the two 64-bit halves) from DescribeTopics through `bootstrap`."""
    adm = admin(bootstrap)  # referenced until the futures resolve
    futs = adm.describe_topics(TopicCollection(list(names)), request_timeout=10)
    out = {}
    for name, f in futs.items():
        tid = f.result(timeout=20).topic_id
        out[name] = (tid.get_most_significant_bits(), tid.get_least_significant_bits())
        assert out[name] != (0, 0), f"{name} has the zero topic id"
    return out


def write_and_read_back(write_via: str, read_via: str, topic: str, partitions, prefix: str) -> None:
    """Produces `<prefix>-<p>` to each of `partitions` (acks=all) through `write_via` and reads exactly
    those records back from them through `read_via`."""
    p = producer(write_via, acks="all")
    for x in sorted(partitions):
        p.produce(topic, value=f"{prefix}-{x}".encode(), partition=x)
    p.flush(30)
    assert not p.errors(), p.errors()[:3]
    msgs = consume(read_via, topic, sorted(partitions))
    assert sorted(m.value() for m in msgs) == sorted(f"{prefix}-{x}".encode() for x in partitions)


def try_create(bootstrap: str, name: str, partitions: int) -> str | None:
    """One CreateTopics attempt; None on success (or when an earlier, timed-out attempt created it), else
    the error."""
    adm = admin(bootstrap)  # referenced until the futures resolve
    try:
        wait_futures(adm.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                       operation_timeout=5, request_timeout=8), timeout=12)
        return None
    except KafkaException as e:
        err = e.args[0] if e.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return None
        return str(e)
    except Exception as e:  # noqa: BLE001 - a timed-out future and the like: try again
        return repr(e)


def partitions_of(view_leaders: dict[int, int], node_id: int) -> set[int]:
    return {p for p, leader in view_leaders.items() if leader == node_id}


# ---------------------------------------------------------------------------------------------------
# 1. Placement and metadata from every node
# ---------------------------------------------------------------------------------------------------

def test_three_nodes_spread_partition_leaders_and_every_node_serves_the_same_metadata(cluster_factory, topic_name):
    c = cluster_factory(3)
    everyone = {1, 2, 3}
    # A fresh cluster answers Metadata on every node, the same cluster id and controller everywhere, and
    # no topic exists that nobody created: internal topics (__consumer_offsets and the like) are not
    # needed for any of this (they may exist only if flagged internal).
    views = [c.metadata(i) for i in c.ids]
    assert all(v is not None for v in views)
    for v in views:
        assert v.brokers == {i: ("127.0.0.1", c.node(i).port) for i in everyone}, v.brokers
        assert v.cluster_id and v.cluster_id == views[0].cluster_id, [x.cluster_id for x in views]
        stray = {t for t in v.leaders if t not in v.internal and not t.startswith("__")}
        assert not stray, f"node {v.node_id} lists topics nobody created: {stray}"
        # Metadata's controller_id only has to be a live broker (KRaft hands out any broker there).
        assert v.controller_id in everyone, v.controller_id
    # DescribeCluster through every node and the leader gauge name the same active controller.
    ctrl = c.controller_id()
    assert ctrl in everyone
    wait_until(lambda: all(c.describe_controller(i) == ctrl for i in c.ids), f"every node to name controller {ctrl}")
    wait_until(lambda: c.metrics_controller() == ctrl, f"strata_controller_is_leader to be 1 on node {ctrl} only")

    create_topic(admin(c.node(1).bootstrap), topic_name, partitions=30)
    raw = c.wait_topic(topic_name, 30)
    for b in c.bootstraps:
        assert wait_client_view(c, b, topic_name, 30, everyone) == raw, f"list_topics via {b} disagrees with raw Metadata"
    led = Counter(raw.values())
    assert set(led) == everyone, f"leaders {dict(led)}"
    assert all(9 <= n <= 11 for n in led.values()), f"30 partitions over 3 fresh brokers, leaders per node: {dict(led)}"
    # Replication factor 1: every partition's only replica and ISR member is its leader.
    for b in c.bootstraps:
        _, parts, _ = client_view(b, topic_name)
        for p, pm in parts.items():
            assert list(pm.replicas) == [pm.leader] and list(pm.isrs) == [pm.leader], (p, pm.replicas, pm.isrs)


# ---------------------------------------------------------------------------------------------------
# 2. Produce and consume through every node
# ---------------------------------------------------------------------------------------------------

def test_confluent_produce_and_consume_through_every_node(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(admin(c.node(1).bootstrap), topic_name, partitions=6)
    leaders = c.wait_topic(topic_name, 6)
    assert set(leaders.values()) == {1, 2, 3}
    expected: list[tuple[bytes, bytes]] = []
    for i in c.ids:
        j = i % 3 + 1
        p = producer(c.node(i).bootstrap, acks="all")
        sent = [(f"k{i}-{n % 101}".encode(), f"via{i}-{n}".encode()) for n in range(600)]
        for k, v in sent:
            p.produce(topic_name, value=v, key=k)
        p.flush()
        assert not p.errors(), p.errors()[:3]
        used = {d.partition for d in p.deliveries}
        assert {leaders[x] for x in used} == {1, 2, 3}, f"records via node {i} reached partitions {used} only"
        expected += sent

        msgs = consume(c.node(j).bootstrap, topic_name, list(range(6)))
        got = [(m.key(), m.value()) for m in msgs]
        assert sorted(got) == sorted(expected), (f"produced via node {i}, consumed via node {j}: "
                                                 f"{len(got)} records, {len(expected)} expected")
        # Per key, the order of production survives (one key, one partition).
        for key in {k for k, _ in sent}:
            assert [v for k, v in got if k == key] == [v for k, v in expected if k == key], f"order of {key!r}"


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (infra/test-deps.sh)")
def test_kcat_produce_and_consume_through_every_node(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(admin(c.node(1).bootstrap), topic_name, partitions=6)
    leaders = c.wait_topic(topic_name, 6)
    expected: list[tuple[str, str]] = []
    for i in c.ids:
        j = i % 3 + 1
        lines = [f"k{i}-{n % 101}:kcat{i}-{n}" for n in range(400)]
        kcat(c.node(i).bootstrap, "-P", "-t", topic_name, "-K", ":", stdin="\n".join(lines).encode() + b"\n")
        expected += [tuple(line.split(":", 1)) for line in lines]

        out = kcat(c.node(j).bootstrap, "-C", "-t", topic_name, "-e", "-o", "beginning", "-q",
                   "-f", "%p\\t%k\\t%s\\n")
        rows = [line.split("\t") for line in out.splitlines()]
        got = sorted((k, v) for _, k, v in rows)
        assert got == sorted(expected), (f"kcat produced via node {i}, consumed via node {j}: {len(got)} records, "
                                         f"{len(expected)} expected")
        mine = {int(p) for p, _, v in rows if v.startswith(f"kcat{i}-")}
        assert {leaders[x] for x in mine} == {1, 2, 3}, f"kcat records via node {i} reached partitions {mine} only"


# ---------------------------------------------------------------------------------------------------
# 3. A consumer group across nodes
# ---------------------------------------------------------------------------------------------------

def test_group_commits_through_one_node_and_resumes_through_another(cluster_factory, topic_name):
    c = cluster_factory(3, *GROUP_FLAGS)
    create_topic(admin(c.node(1).bootstrap), topic_name, partitions=30)
    c.wait_topic(topic_name, 30)
    first = fill(c.node(1).bootstrap, topic_name, 30, 10)
    group = f"g-{topic_name}"

    c1 = group_consumer(c.node(2).bootstrap, group)
    try:
        c1.subscribe([topic_name])
        seen = poll_values(c1, len(first), settle=1.0)
        assert sorted(seen) == sorted(first), f"first member: {len(seen)} records, {len(first)} produced"
        c1.commit(asynchronous=False)
        committed = c1.committed([TopicPartition(topic_name, p) for p in range(30)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {p: 10 for p in range(30)}
    finally:
        c1.close()

    # The commit is visible through the other nodes (one group coordinator, whoever asks).
    for b in (c.node(1).bootstrap, c.node(3).bootstrap):
        assert group_offsets(b, group) == {(topic_name, p): 10 for p in range(30)}, f"offsets via {b}"
    adm = admin(c.node(1).bootstrap)
    desc = adm.describe_consumer_groups([group])[group].result(timeout=10)
    assert desc.coordinator.id in c.ids and desc.coordinator.port == c.node(desc.coordinator.id).port

    second = fill(c.node(3).bootstrap, topic_name, 30, 5, start=10)
    c2 = group_consumer(c.node(3).bootstrap, group)
    try:
        c2.subscribe([topic_name])
        seen2 = poll_values(c2, len(second), settle=2.0)
        again = set(seen2) & first
        assert not again, f"{len(again)} committed records delivered again, e.g. {sorted(again)[:5]}"
        assert sorted(seen2) == sorted(second), f"second member: {len(seen2)} records, {len(second)} new"
        c2.commit(asynchronous=False)
    finally:
        c2.close()
    assert group_offsets(c.node(2).bootstrap, group) == {(topic_name, p): 15 for p in range(30)}


# ---------------------------------------------------------------------------------------------------
# 4. Controller failover
# ---------------------------------------------------------------------------------------------------

def test_kill9_of_the_active_controller_elects_another_and_the_node_rejoins(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(admin(c.node(1).bootstrap), topic_name, partitions=30)
    before = c.wait_topic(topic_name, 30)
    old = c.controller_id()
    assert c.metrics_controller() in (old, None), "the leader gauge names another controller than DescribeCluster"
    live = [i for i in c.ids if i != old]
    dead_parts = partitions_of(before, old)
    alive_parts = sorted(set(before) - dead_parts)
    assert dead_parts and alive_parts

    created = f"{topic_name}-while-down"
    creating: dict = {"errors": []}

    def create_until_ok():
        # CreateTopics through a live node, retried from the moment of the kill.
        while time.monotonic() - t0 < 30:
            err = try_create(c.node(live[0]).bootstrap, created, 30)
            if err is None:
                creating["at"] = time.monotonic() - t0
                return
            creating["errors"].append(err)
            time.sleep(0.05)

    t0 = time.monotonic()
    c.kill9(old)
    creator = threading.Thread(target=create_until_ok, daemon=True)
    creator.start()

    def new_controller():
        x = c.describe_controller(live[0], timeout=2)
        return x if x in live else None
    new = wait_until(new_controller, f"DescribeCluster via node {live[0]} to name a controller other than {old}",
                     timeout=15, interval=0.05)
    elected_s = time.monotonic() - t0
    creator.join(40)
    assert "at" in creating, f"CreateTopics kept failing for 30s after the kill: {creating['errors'][-3:]}"
    print(f"\nkill -9 of controller {old}: node {live[0]} names controller {new} after {elected_s:.2f}s; "
          f"first successful CreateTopics {creating['at']:.2f}s after the kill "
          f"({len(creating['errors'])} failed attempts before)")
    # The other live node and the leader gauge agree on the new controller.
    wait_until(lambda: c.describe_controller(live[1], timeout=2) == new, f"node {live[1]} to name controller {new}")
    wait_until(lambda: c.metrics_controller() == new, f"strata_controller_is_leader to be 1 on node {new} only")

    # Partitions led by live nodes take writes at once, through either live node.
    p = producer(c.node(live[1]).bootstrap, acks="all", **{"message.timeout.ms": 20000})
    during = set()
    for part in alive_parts:
        for n in range(5):
            v = f"during-{part}-{n}".encode()
            during.add(v)
            p.produce(topic_name, value=v, partition=part)
    p.flush(30)
    assert not p.errors(), p.errors()[:3]

    # After its session timeout the dead node is fenced: not listed, its partitions leaderless (RF=1),
    # the others unchanged.
    def fenced():
        for i in live:
            v = c.metadata(i, [topic_name])
            if v is None or set(v.brokers) != set(live):
                return False
            lead = v.leaders.get(topic_name, {})
            if any(lead.get(x) != -1 for x in dead_parts) or any(lead.get(x) != before[x] for x in alive_parts):
                return False
        return True
    wait_until(fenced, f"node {old} fenced with its partitions leaderless", timeout=SESSION_S + FENCE_SLACK_S)
    _, parts, _ = client_view(c.node(live[0]).bootstrap, topic_name)
    for x in dead_parts:
        assert parts[x].leader == -1, (x, parts[x].leader)
        assert parts[x].error is None or parts[x].error.code() == KafkaError.LEADER_NOT_AVAILABLE, parts[x].error
    msgs = consume(c.node(live[0]).bootstrap, topic_name, alive_parts)
    assert sorted(m.value() for m in msgs) == sorted(during)

    # The killed node comes back: registered, unfenced, its partitions led by it again, the topic created
    # while it was down known to it, and the records written meanwhile readable through it.
    c.restart(old)
    assert c.wait_topic(topic_name, 30) == before, "leaders moved: with RF=1 a partition can only return to its node"
    c.wait_topic(created, 30)
    wait_client_view(c, c.node(old).bootstrap, created, 30, {1, 2, 3})
    wait_client_view(c, c.node(old).bootstrap, topic_name, 30, {1, 2, 3})
    msgs = consume(c.node(old).bootstrap, topic_name, alive_parts)
    assert sorted(m.value() for m in msgs) == sorted(during)
    assert c.controller_id() in c.ids
    write_and_read_back(c.node(old).bootstrap, c.node(live[0]).bootstrap, topic_name, dead_parts, "back")


# ---------------------------------------------------------------------------------------------------
# 5. Fencing of a silent broker
# ---------------------------------------------------------------------------------------------------

def test_a_silent_broker_is_fenced_then_unfenced_and_a_killed_one_after_restart(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_topic(admin(c.node(1).bootstrap), topic_name, partitions=30)
    before = c.wait_topic(topic_name, 30)
    ctrl = c.controller_id()
    victim = next(i for i in c.ids if i != ctrl)
    others = [i for i in c.ids if i != victim]
    mine = partitions_of(before, victim)
    assert mine

    def fenced():
        for i in others:
            v = c.metadata(i, [topic_name])
            if v is None or victim in v.brokers or set(v.brokers) != set(others):
                return False
            lead = v.leaders.get(topic_name, {})
            if any(lead.get(p) != (-1 if p in mine else before[p]) for p in before):
                return False
        return True

    def unfenced(via):
        for i in via:
            v = c.metadata(i, [topic_name])
            if v is None or set(v.brokers) != {1, 2, 3} or v.leaders.get(topic_name) != before:
                return False
        return True

    c.pause(victim)
    t0 = time.monotonic()
    wait_until(fenced, f"paused node {victim} fenced by nodes {others}", timeout=SESSION_S + FENCE_SLACK_S)
    fenced_s = time.monotonic() - t0
    # Its last heartbeat was at most one interval before the pause: fencing it sooner breaks the session.
    assert fenced_s >= SESSION_S / 2, f"node {victim} fenced {fenced_s:.2f}s after it went silent"
    _, parts, _ = client_view(c.node(others[0]).bootstrap, topic_name)
    assert {p for p, pm in parts.items() if pm.leader == -1} == mine

    c.resume(victim)
    t1 = time.monotonic()
    wait_until(lambda: unfenced(c.ids), f"node {victim} unfenced after SIGCONT, its partitions led by it again",
               timeout=15)
    unfenced_s = time.monotonic() - t1
    print(f"\nSIGSTOP of node {victim}: fenced after {fenced_s:.2f}s; SIGCONT: unfenced after {unfenced_s:.2f}s")

    c.kill9(victim)
    t2 = time.monotonic()
    wait_until(fenced, f"killed node {victim} fenced by nodes {others}", timeout=SESSION_S + FENCE_SLACK_S)
    killed_fenced_s = time.monotonic() - t2
    c.restart(victim)
    wait_until(lambda: unfenced(c.ids), f"restarted node {victim} unfenced, its partitions led by it again",
               timeout=30)
    print(f"kill -9 of node {victim}: fenced after {killed_fenced_s:.2f}s; restart to unfenced "
          f"{time.monotonic() - t2 - killed_fenced_s:.2f}s")
    # Its partitions take writes again, and the data is readable through another node.
    write_and_read_back(c.node(victim).bootstrap, c.node(others[0]).bootstrap, topic_name, mine, "after")


# ---------------------------------------------------------------------------------------------------
# 6. Full cluster restart
# ---------------------------------------------------------------------------------------------------

def test_full_cluster_restart_keeps_topics_data_and_committed_offsets(cluster_factory, topic_name):
    c = cluster_factory(3, *GROUP_FLAGS)
    topics = {f"{topic_name}-a": 6, f"{topic_name}-b": 30}
    adm = admin(c.bootstrap_all)
    for t, n in topics.items():
        create_topic(adm, t, partitions=n)
    leaders = {t: c.wait_topic(t, n) for t, n in topics.items()}
    ids = topic_ids(c.node(1).bootstrap, topics)
    assert len(set(ids.values())) == len(topics)
    data = {t: fill(c.node(2).bootstrap, t, n, 7) for t, n in topics.items()}

    group = f"g-{topic_name}"
    ta = f"{topic_name}-a"
    gc = group_consumer(c.node(3).bootstrap, group)
    try:
        gc.subscribe([ta])
        assert sorted(poll_values(gc, len(data[ta]), settle=0.5)) == sorted(data[ta])
        gc.commit(asynchronous=False)
    finally:
        gc.close()
    committed = group_offsets(c.node(1).bootstrap, group)
    assert committed == {(ta, p): 7 for p in range(6)}

    c.stop_all()  # SIGTERM to all three at once; each must exit 0
    c.start_all()
    restarted = time.monotonic()

    for t, n in topics.items():
        assert c.wait_topic(t, n) == leaders[t], f"leaders of {t} changed across the restart"
    for i in c.ids:
        assert topic_ids(c.node(i).bootstrap, topics) == ids, f"topic ids via node {i} changed across the restart"
    for k, (t, n) in enumerate(topics.items()):
        via = c.node(k % 3 + 1).bootstrap
        msgs = consume(via, t, list(range(n)))
        assert sorted(m.value() for m in msgs) == sorted(data[t]), f"records of {t} after the restart"
    # After a full restart every `__consumer_offsets` group elects and its coordinator loads; until
    # then OffsetFetch answers a retriable error, and librdkafka's admin call gives up at its request
    # timeout (10 s here) where a Java admin waits default.api.timeout.ms (60 s): retry like one.
    for b in c.bootstraps:
        assert patient_group_offsets(b, group) == committed, f"committed offsets via {b} after the restart"
    print(f"\ncommitted offsets served through every broker {time.monotonic() - restarted:.2f}s after the restart")

    # The group resumes where it committed: only what was produced after the restart.
    new = fill(c.node(1).bootstrap, ta, 6, 3, start=7)
    gc = group_consumer(c.node(2).bootstrap, group)
    try:
        gc.subscribe([ta])
        seen = poll_values(gc, len(new), settle=2.0)
        assert sorted(seen) == sorted(new), f"{len(seen)} records after the restart, {len(new)} new"
    finally:
        gc.close()


# ---------------------------------------------------------------------------------------------------
# 7. Bad quorum configuration
# ---------------------------------------------------------------------------------------------------

def _voters(ports: list[int]) -> str:
    return ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))


@pytest.mark.parametrize("case", ["not-a-voter", "no-port", "duplicate-id"])
def test_bad_controller_voters_exit_nonzero_naming_the_problem(tmp_path, case):
    ports = free_ports(3)
    if case == "not-a-voter":
        node_id, voters, needles = 4, _voters(ports), ["not one of the voters"]
    elif case == "no-port":
        node_id, voters, needles = 1, "1@nohostport", ["nohostport"]
    else:
        node_id, voters, needles = 1, f"1@127.0.0.1:{ports[0]},1@127.0.0.1:{ports[1]}", []
    b = Broker(tmp_path / "data", tmp_path / "logs", ["--controller-voters", voters], node_id=node_id)
    try:
        r = subprocess.run(b.command(), stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"strata broker --node-id {node_id} --controller-voters {voters} kept running instead of "
                    f"refusing the configuration")
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, f"exit 0 with --node-id {node_id} --controller-voters {voters}:\n{err}"
    assert re.search(r"controller[-_ ]voters", err), f"the error does not name controller voters:\n{err}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in the error:\n{err}"
    assert not port_open(b.port), "the Kafka port was bound with a bad configuration"


def test_dedicated_controller_with_broker_only_nodes(tmp_path, request, topic_name):
    """`--roles controller` runs a voter and nothing else; `--roles broker` nodes (ids that are not
    voters) register with it, follow its metadata, carry every partition, and are fenced by it when
    they die and unfenced when they return."""
    cport, ctl_kafka = free_ports(2)
    voters = f"1@127.0.0.1:{cport}"
    logs = tmp_path / "logs"
    ctl = Broker(tmp_path / "ctl", logs, ["--roles", "controller", "--controller-voters", voters,
                                          "--controller-listen", f"127.0.0.1:{cport}"],
                 name="controller1", node_id=1, port=ctl_kafka)
    brokers = [Broker(tmp_path / f"b{i}", logs, ["--roles", "broker", "--controller-voters", voters,
                                                 "--broker-session-timeout-ms", str(CLUSTER_SESSION_TIMEOUT_MS),
                                                 "--broker-heartbeat-interval-ms", "500"],
                      name=f"broker{i}", node_id=i) for i in (2, 3)]
    _reported_brokers(request).extend([ctl, *brokers])
    try:
        ctl.spawn()
        wait_until(lambda: port_open(cport), "the controller port to open")
        for b in brokers:
            b.start()
        assert not port_open(ctl_kafka), "a controller-only node serves no Kafka clients"
        b2, b3 = brokers
        adm = admin(b2.bootstrap)
        create_topic(adm, topic_name, partitions=10)

        def leaders():
            _, parts, md = client_view(b3.bootstrap, topic_name)
            if parts is None or len(parts) != 10 or sorted(md.brokers) != [2, 3]:
                return None
            return Counter(pm.leader for pm in parts.values())
        assert wait_until(leaders, "both broker-only nodes to lead partitions") == Counter({2: 5, 3: 5})

        p = producer(b3.bootstrap)
        sent = [f"r-{i}".encode() for i in range(200)]
        for v in sent:
            p.produce(topic_name, value=v)
        p.flush()
        assert not p.errors(), p.errors()[:3]
        got = consume(b2.bootstrap, topic_name, range(10))
        assert sorted(m.value() for m in got) == sorted(sent)

        # The dedicated controller fences a dead broker-only node and unfences it when it returns.
        b3.kill9()
        def fenced():
            brokers_listed, parts, _ = client_view(b2.bootstrap, topic_name)
            return set(brokers_listed) == {2} and Counter(pm.leader for pm in parts.values()) == Counter({2: 5, -1: 5})
        wait_until(fenced, "node 3 to be fenced", timeout=30)
        b3.start()
        assert wait_until(leaders, "node 3 to lead its partitions again", timeout=30) == Counter({2: 5, 3: 5})
    finally:
        errors = []
        for b in [*brokers, ctl]:
            if b.running() and b.stop(check=False) != 0:
                errors.append(f"{b.name} exited uncleanly")
        assert not errors, errors


def test_producer_ids_are_unique_across_the_cluster_and_restarts(cluster_factory):
    """InitProducerId through every node: each node hands out ids from its own controller-allocated
    block, so no id repeats across nodes, and a restarted node never reuses one."""
    from kafka.protocol.init_producer_id import InitProducerIdRequest

    from strata_helpers import raw_request

    c = cluster_factory(3)

    def ids(node: int, n: int) -> list[int]:
        out = []
        for _ in range(n):
            r = raw_request(c.node(node).bootstrap,
                            InitProducerIdRequest[0](transactional_id=None, transaction_timeout_ms=60000))
            assert r.error_code == 0, r
            assert r.producer_epoch == 0
            out.append(r.producer_id)
        return out

    seen = {i: ids(i, 5) for i in c.ids}
    every = [x for v in seen.values() for x in v]
    assert len(set(every)) == len(every), f"a producer id was handed out twice: {seen}"
    for v in seen.values():
        assert v == sorted(v) and len(set(v)) == len(v)
    c.restart(2, kill=True)
    again = ids(2, 5)
    assert not set(again) & set(every), f"node 2 reused producer ids after its restart: {again}"
