"""Consumer groups against a real `strata` broker: confluent-kafka (librdkafka) group members, commits,
restarts, static membership, cooperative rebalancing, admin calls, kafka-python and kcat groups."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from strata_helpers import FAST_CLIENT_CONF, admin, create_topic, fill, producer, wait_futures, wait_until
from strata_helpers import Member as _Member

FAST = ["--group-initial-rebalance-delay-ms", "0"]


def Member(bootstrap: str, group: str, topic: str, sync_commit: bool = False, **conf) -> _Member:  # noqa: N802
    """A classic-protocol member thread (see strata_helpers.Member)."""
    return _Member(bootstrap, group, topic, group_consumer, sync_commit=sync_commit, **conf)


def group_consumer(bootstrap: str, group: str, **conf) -> Consumer:
    """A subscribing group member with short timers so rebalances are quick."""
    base = {
        "bootstrap.servers": bootstrap,
        **FAST_CLIENT_CONF,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 200,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    return Consumer(base)


def describe(bootstrap: str, group: str):
    """DescribeGroups through the admin client (kept alive until its future resolves)."""
    adm = admin(bootstrap)
    return adm.describe_consumer_groups([group])[group].result(timeout=10)


def test_three_members_spread_evenly_and_consume_within_4s(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=6)
    started = time.monotonic()
    members = [Member(b.bootstrap, "g-spread", topic_name) for _ in range(3)]
    for m in members:
        m.start()
    stop = threading.Event()

    def produce_forever():
        p = producer(b.bootstrap)
        i = 0
        while not stop.is_set():
            p.produce(topic_name, value=str(i).encode(), partition=i % 6)
            i += 1
            time.sleep(0.01)
        p.flush()

    feeder = threading.Thread(target=produce_forever, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: all(len(m.assignment) == 2 for m in members)
                   and sorted(p for m in members for p in m.assignment) == list(range(6)),
                   "three members with two partitions each", timeout=4)
        wait_until(lambda: all(m.first_message_at for m in members), "every member consuming",
                   timeout=max(0.1, started + 4 - time.monotonic()))
        d = describe(b.bootstrap, "g-spread")
        assert len(d.members) == 3
        assert str(d.state).endswith("STABLE")
    finally:
        stop.set()
        feeder.join(10)
        for m in members:
            m.stop()


def test_default_initial_rebalance_delay_holds_the_first_join(broker_factory, topic_name):
    b = broker_factory()
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    m = Member(b.bootstrap, "g-delay", topic_name)
    started = time.monotonic()
    m.start()
    try:
        wait_until(lambda: m.assignment == [0, 1], "assignment", timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed >= 2.5, f"assigned after {elapsed:.2f}s; the 3000 ms initial delay was not applied"
    finally:
        m.stop()


def test_member_leaves_and_the_rest_take_over_without_loss_or_duplicates(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=6)
    values = fill(b.bootstrap, topic_name, 6, 40)
    conf = {"enable.auto.commit": False, "max.poll.interval.ms": 10000}
    members = [Member(b.bootstrap, "g-leave", topic_name, sync_commit=True, **conf) for _ in range(3)]
    for m in members:
        m.start()
    wait_until(lambda: all(len(m.assignment) == 2 for m in members), "even spread", timeout=10)
    wait_until(lambda: len(members[0].committed) >= 5, "first member committing", timeout=10)
    left_at = time.monotonic()
    members[0].stop()
    wait_until(lambda: sorted(p for m in members[1:] for p in m.assignment) == list(range(6)),
               "the remaining members own all six partitions", timeout=5)
    took = time.monotonic() - left_at
    committed_total = lambda: sum(len(m.committed) for m in members)  # noqa: E731
    wait_until(lambda: committed_total() >= len(values), "every record committed", timeout=20)
    for m in members[1:]:
        m.stop()
    committed = [v for m in members for v in m.committed]
    assert len(committed) == len(set(committed)), "a record was processed and committed twice"
    assert set(committed) == values
    assert took < 3, f"rebalance after LeaveGroup took {took:.2f}s"


KILLED_MEMBER = r"""
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 200, "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]])
while True:
    c.poll(0.1)
    if c.assignment():
        print("assigned", flush=True)
"""


def test_killed_member_is_removed_after_its_session_timeout(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=4)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MEMBER, b.bootstrap, "g-kill", topic_name],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    survivor = Member(b.bootstrap, "g-kill", topic_name)
    try:
        assert proc.stdout.readline().strip() == b"assigned"
        survivor.start()
        wait_until(lambda: len(survivor.assignment) == 2, "two members share the partitions", timeout=10)
        proc.kill()
        proc.wait()
        killed_at = time.monotonic()
        wait_until(lambda: survivor.assignment == [0, 1, 2, 3], "survivor takes every partition", timeout=15)
        assert time.monotonic() - killed_at >= 4, "member removed before its session timeout"
        assert len(describe(b.bootstrap, "g-kill").members) == 1
    finally:
        proc.kill()
        survivor.stop()


def test_cooperative_sticky_group(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=6)
    fill(b.bootstrap, topic_name, 6, 3)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = Member(b.bootstrap, "g-coop", topic_name, **conf)
    a.start()
    try:
        wait_until(lambda: len(a.assignment) == 6, "first member owns everything", timeout=10)
        c = Member(b.bootstrap, "g-coop", topic_name, **conf)
        c.start()
        wait_until(lambda: len(a.assignment) == 3 and len(c.assignment) == 3
                   and sorted(a.assignment + c.assignment) == list(range(6)),
                   "incremental rebalance splits 3/3", timeout=10)
        assert a.revokes >= 1 and a.assigns >= 1
        d = describe(b.bootstrap, "g-coop")
        assert d.partition_assignor == "cooperative-sticky"
        c.stop()
        wait_until(lambda: len(a.assignment) == 6, "first member takes the partitions back", timeout=10)
    finally:
        a.stop()


def test_static_member_restart_does_not_rebalance(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=4)
    conf = {"session.timeout.ms": 10000}
    x = Member(b.bootstrap, "g-static", topic_name, **{"group.instance.id": "x", **conf})
    y = Member(b.bootstrap, "g-static", topic_name, **{"group.instance.id": "y", **conf})
    x.start()
    y.start()
    try:
        wait_until(lambda: len(x.assignment) == 2 and len(y.assignment) == 2, "even spread", timeout=10)
        time.sleep(1)
        y_assigns, y_revokes, x_parts = y.assigns, y.revokes, x.assignment
        members_before = {m.group_instance_id for m in describe(b.bootstrap, "g-static").members}
        x.stop()  # a static member does not send LeaveGroup
        x2 = Member(b.bootstrap, "g-static", topic_name, **{"group.instance.id": "x", **conf})
        x2.start()
        try:
            wait_until(lambda: x2.assignment == x_parts, "restarted member gets its old partitions", timeout=10)
            time.sleep(1.5)
            assert (y.assigns, y.revokes) == (y_assigns, y_revokes), "the other member saw a rebalance"
            assert {m.group_instance_id for m in describe(b.bootstrap, "g-static").members} == members_before
        finally:
            x2.stop()
    finally:
        y.stop()


def test_auto_sync_async_commits_and_metadata(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=3)
    fill(b.bootstrap, topic_name, 3, 10)
    tp = lambda p, o=-1001, md=None: TopicPartition(topic_name, p, o, md) if md else TopicPartition(topic_name, p, o)  # noqa: E731

    # auto-commit
    c = group_consumer(b.bootstrap, "g-auto", **{"auto.commit.interval.ms": 200})
    c.subscribe([topic_name])
    got = 0
    deadline = time.monotonic() + 15
    while got < 30 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got += 1
    assert got == 30
    wait_until(lambda: [t.offset for t in c.committed([tp(0), tp(1), tp(2)], timeout=10)] == [10, 10, 10],
               "auto-commit of every partition", timeout=5)
    c.close()

    # sync and async commits with metadata; a fresh consumer reads them back.
    c = group_consumer(b.bootstrap, "g-manual", **{"enable.auto.commit": False})
    c.commit(offsets=[tp(0, 4, "sync-meta")], asynchronous=False)
    done = []
    c2 = group_consumer(b.bootstrap, "g-manual", **{"enable.auto.commit": False,
                                                   "on_commit": lambda err, parts: done.append(err)})
    c2.commit(offsets=[tp(1, 7, "async-meta")], asynchronous=True)
    wait_until(lambda: (c2.poll(0.1), done)[1], "async commit callback", timeout=10)
    assert done == [None]
    c2.close()
    c.close()
    c3 = group_consumer(b.bootstrap, "g-manual")
    got = {t.partition: (t.offset, t.metadata) for t in c3.committed([tp(0), tp(1), tp(2)], timeout=10)}
    c3.close()
    assert got[0] == (4, "sync-meta")
    assert got[1] == (7, "async-meta")
    assert got[2][0] < 0
    c4 = group_consumer(b.bootstrap, "g-manual", **{"enable.auto.commit": False})
    try:
        c4.commit(offsets=[tp(2, 1, "x" * 5000)], asynchronous=False)
        raise AssertionError("a 5000-byte metadata commit succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.OFFSET_METADATA_TOO_LARGE, e
    finally:
        c4.close()


def test_commits_survive_sigterm_and_kill9_restarts_and_consumer_resumes(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    fill(b.bootstrap, topic_name, 2, 10)
    c = group_consumer(b.bootstrap, "g-durable", **{"enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic_name, 0, 3, "m0"), TopicPartition(topic_name, 1, 6)],
             asynchronous=False)
    c.close()

    def committed():
        cc = group_consumer(b.bootstrap, "g-durable")
        try:
            return [(t.offset, t.metadata) for t in
                    cc.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)], timeout=10)]
        finally:
            cc.close()

    assert committed() == [(3, "m0"), (6, None)] or committed() == [(3, "m0"), (6, "")]
    b.restart()
    assert committed()[0] == (3, "m0")
    # A commit acknowledged just before kill -9 is durable.
    c = group_consumer(b.bootstrap, "g-durable", **{"enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic_name, 0, 5, "m1")], asynchronous=False)
    c.close()
    b.restart(kill=True)
    assert [o for o, _ in committed()] == [5, 6]

    # A subscribing consumer resumes from the committed offsets.
    c = group_consumer(b.bootstrap, "g-durable", **{"enable.auto.commit": False})
    c.subscribe([topic_name])
    first = {}
    deadline = time.monotonic() + 15
    while len(first) < 2 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            first.setdefault(m.partition(), m.offset())
    c.close()
    assert first == {0: 5, 1: 6}


def offset_delete(bootstrap: str, group: str, topic: str, partitions: list[int]):
    """OffsetDelete v0 by hand (no client library exposes it): returns (error, {partition: error})."""
    def s(x: str) -> bytes:
        return struct.pack(">h", len(x)) + x.encode()
    body = s(group) + struct.pack(">i", 1) + s(topic) + struct.pack(">i", len(partitions))
    body += b"".join(struct.pack(">i", p) for p in partitions)
    header = struct.pack(">hhi", 47, 0, 7) + s("strata-tests")
    frame = header + body
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
    data = buf[4:]
    pos = 4  # correlation id
    err, _throttle, ntopics = struct.unpack(">hii", data[pos:pos + 10])
    pos += 10
    out = {}
    for _ in range(ntopics):
        (n,) = struct.unpack(">h", data[pos:pos + 2])
        pos += 2 + n
        (np_,) = struct.unpack(">i", data[pos:pos + 4])
        pos += 4
        for _ in range(np_):
            p, e = struct.unpack(">ih", data[pos:pos + 6])
            pos += 6
            out[p] = e
    return err, out


def test_admin_list_describe_delete_groups_and_offsets(broker_factory, topic_name):
    b = broker_factory(*FAST)
    adm = admin(b.bootstrap)
    create_topic(adm, topic_name, partitions=2)
    fill(b.bootstrap, topic_name, 2, 2)
    m = Member(b.bootstrap, "g-admin", topic_name)
    m.start()
    try:
        wait_until(lambda: m.assignment == [0, 1], "member assigned", timeout=10)
        c = group_consumer(b.bootstrap, "g-simple", **{"enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic_name, 0, 1), TopicPartition(topic_name, 1, 2)], asynchronous=False)
        c.close()
        listed = {g.group_id: g for g in adm.list_consumer_groups().result(timeout=10).valid}
        assert {"g-admin", "g-simple"} <= set(listed)
        d = describe(b.bootstrap, "g-admin")
        assert len(d.members) == 1 and d.partition_assignor == "range"
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1]
        assert d.members[0].host == "/127.0.0.1"
        # A group with members cannot be deleted, nor can the offsets of a topic it consumes.
        res = adm.delete_consumer_groups(["g-admin"])["g-admin"]
        try:
            res.result(timeout=10)
            raise AssertionError("deleting a non-empty group succeeded")
        except Exception as e:  # noqa: BLE001
            assert e.args[0].code() == KafkaError.NON_EMPTY_GROUP, e
        m.stop()
        err, parts = offset_delete(b.bootstrap, "g-simple", topic_name, [0])
        assert (err, parts) == (0, {0: 0})
        offs = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g-simple")])["g-simple"]
        remaining = {tp.partition: tp.offset for tp in offs.result(timeout=10).topic_partitions}
        assert remaining == {1: 2}
        wait_futures(adm.delete_consumer_groups(["g-simple", "g-admin"]))
        listed = {g.group_id for g in adm.list_consumer_groups().result(timeout=10).valid}
        assert not {"g-admin", "g-simple"} & listed
        err, _ = offset_delete(b.bootstrap, "g-simple", topic_name, [0])
        assert err == 69, "GROUP_ID_NOT_FOUND"
    finally:
        m.stop()


def test_lag_metric(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=1)
    fill(b.bootstrap, topic_name, 1, 10)
    c = group_consumer(b.bootstrap, "g-lag", **{"enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic_name, 0, 4)], asynchronous=False)
    c.close()
    line = f'strata_consumer_group_lag{{group="g-lag",topic="{topic_name}",partition="0"}} 6'
    assert line in b.metrics()


def test_kafka_python_group_consumer(broker_factory, topic_name):
    from kafka import KafkaConsumer

    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    values = fill(b.bootstrap, topic_name, 2, 5)
    c = KafkaConsumer(topic_name, bootstrap_servers=b.bootstrap, group_id="g-kpy", auto_offset_reset="earliest",
                      consumer_timeout_ms=10000, enable_auto_commit=False)
    got = set()
    for msg in c:
        got.add(msg.value)
        if got == values:
            break
    c.commit()
    c.close()
    assert got == values
    adm = admin(b.bootstrap)
    offs = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions("g-kpy")])["g-kpy"].result(timeout=10)
    assert sorted(tp.offset for tp in offs.topic_partitions) == [5, 5]


def test_kcat_balanced_consumer(broker_factory, topic_name):
    b = broker_factory(*FAST)
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    values = fill(b.bootstrap, topic_name, 2, 3)
    group = f"g-kcat-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(["kcat", "-b", b.bootstrap, "-G", group, "-o", "beginning", "-c", str(len(values)),
                          "-e", "-X", "session.timeout.ms=6000", topic_name],
                         capture_output=True, timeout=40)
    got = set(out.stdout.split())
    assert got == values, out.stderr.decode()[-2000:]


def test_sigterm_does_not_wait_for_a_parked_join(broker_factory, topic_name):
    b = broker_factory("--group-initial-rebalance-delay-ms", "20000")
    create_topic(admin(b.bootstrap), topic_name, partitions=1)
    m = Member(b.bootstrap, "g-parked", topic_name)
    m.start()
    try:
        adm = admin(b.bootstrap)
        wait_until(lambda: any(g.group_id == "g-parked"
                               for g in adm.list_consumer_groups().result(timeout=10).valid),
                   "the join to be parked in the initial delay", timeout=10)
        started = time.monotonic()
        b.stop()
        took = time.monotonic() - started
        assert took < 5, f"SIGTERM took {took:.1f}s with a JoinGroup parked"
    finally:
        m.stop()


def test_clients_cannot_write_create_or_delete_internal_topics(broker_factory, topic_name):
    """__consumer_offsets is the coordinator's: a client's produce, create or delete is refused with
    INVALID_TOPIC_EXCEPTION, and the broker still restarts with its commits intact afterwards."""
    broker = broker_factory("--group-initial-rebalance-delay-ms", "0")
    adm = admin(broker.bootstrap)
    create_topic(adm, topic_name, partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = group_consumer(broker.bootstrap, group, **{"enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic_name, 0, 7)], asynchronous=False)
    finally:
        c.close()

    p = producer(broker.bootstrap, **{"message.timeout.ms": 5000, "retries": 0})
    p.produce("__consumer_offsets", value=b"\x00garbage", partition=0)
    p.flush(10)
    errs = [d.error for d in p.deliveries]
    assert len(errs) == 1 and errs[0] is not None, f"produce to the internal topic was accepted: {errs}"
    assert errs[0].code() == KafkaError.TOPIC_EXCEPTION, errs[0]

    with pytest.raises(KafkaException) as deleted:
        wait_futures(adm.delete_topics(["__consumer_offsets"]))
    assert deleted.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    from confluent_kafka.admin import NewTopic
    with pytest.raises(KafkaException) as created:
        wait_futures(adm.create_topics([NewTopic("__transaction_state", 1, 1)]))
    assert created.value.args[0].code() == KafkaError.TOPIC_EXCEPTION

    broker.stop()
    broker.start()
    adm = admin(broker.bootstrap)
    got = wait_futures(adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]))
    offsets = {(tp.topic, tp.partition): tp.offset for tp in got[group].topic_partitions}
    assert offsets == {(topic_name, 0): 7}, offsets
