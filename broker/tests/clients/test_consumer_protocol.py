"""KIP-848 consumer groups (`group.protocol=consumer`) against a real `strata` broker with confluent-kafka:
server-side assignment over ConsumerGroupHeartbeat, commits with member epochs, a member leaving, a
restart resuming from committed offsets, the range assignor, and ConsumerGroupDescribe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import confluent_kafka
import pytest
from confluent_kafka import Consumer, ConsumerGroupType, KafkaException

from strata_helpers import FAST_CLIENT_CONF, admin, create_topic, fill, wait_until
from strata_helpers import Member as _Member

FLAGS = ["--group-consumer-heartbeat-interval-ms", "300", "--group-consumer-session-timeout-ms", "6000"]

pytestmark = pytest.mark.skipif(confluent_kafka.libversion()[1] < 0x020C0000,
                                reason="librdkafka >= 2.12 needed for group.protocol=consumer")


def Member(bootstrap: str, group: str, topic: str, **conf) -> _Member:  # noqa: N802
    """A KIP-848 member thread that commits every record synchronously after recording it."""
    return _Member(bootstrap, group, topic, kip848_consumer, sync_commit=True, **conf)


def kip848_consumer(bootstrap: str, group: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        **FAST_CLIENT_CONF,
        "group.id": group,
        "group.protocol": "consumer",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    return Consumer(base)


def committed_set(members: list[Member]) -> list[bytes]:
    return [v for m in members for v in m.committed]


def test_three_members_split_six_partitions_and_take_over_on_close(broker_factory, topic_name):
    b = broker_factory(*FLAGS)
    create_topic(admin(b.bootstrap), topic_name, partitions=6)
    values = fill(b.bootstrap, topic_name, 6, 20)
    members = [Member(b.bootstrap, "kip848-spread", topic_name) for _ in range(3)]
    for m in members:
        m.start()
    try:
        wait_until(lambda: all(len(m.assignment) == 2 for m in members)
                   and sorted(p for m in members for p in m.assignment) == list(range(6)),
                   "three members with two partitions each", timeout=15)
        wait_until(lambda: len(committed_set(members)) >= len(values), "every record consumed", timeout=15)
        seen = committed_set(members)
        assert sorted(seen) == sorted(values), "each record exactly once"

        adm = admin(b.bootstrap)  # kept alive until its future resolves
        d = adm.describe_consumer_groups(["kip848-spread"])["kip848-spread"].result(timeout=10)
        assert d.type == ConsumerGroupType.CONSUMER
        assert len(d.members) == 3
        assert sorted(tp.partition for mem in d.members for tp in mem.assignment.topic_partitions) \
            == list(range(6))

        # One member closes: the other two take over its partitions, and new records are consumed once.
        members[0].stop()
        rest = members[1:]
        wait_until(lambda: sorted(p for m in rest for p in m.assignment) == list(range(6)),
                   "the remaining members own every partition", timeout=15)
        more = fill(b.bootstrap, topic_name, 6, 10, start=20)
        wait_until(lambda: more <= set(committed_set(members)), "new records consumed", timeout=15)
        all_seen = committed_set(members)
        assert sorted(all_seen) == sorted(values | more), "no record lost or committed twice"
    finally:
        for m in members:
            m.stop()


def test_restarted_member_resumes_from_committed_offsets(broker_factory, topic_name):
    b = broker_factory(*FLAGS)
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    first = fill(b.bootstrap, topic_name, 2, 5)
    m = Member(b.bootstrap, "kip848-resume", topic_name)
    m.start()
    wait_until(lambda: set(m.committed) >= first, "first batch consumed", timeout=15)
    m.stop()
    second = fill(b.bootstrap, topic_name, 2, 5, start=5)
    m2 = Member(b.bootstrap, "kip848-resume", topic_name)
    m2.start()
    try:
        wait_until(lambda: set(m2.committed) >= second, "second batch consumed", timeout=15)
        time.sleep(0.5)
        assert not set(m2.seen) & first, "the restarted member resumed after its commits"
    finally:
        m2.stop()


def test_range_assignor_and_describe(broker_factory, topic_name):
    b = broker_factory(*FLAGS)
    create_topic(admin(b.bootstrap), topic_name, partitions=3)
    members = [Member(b.bootstrap, "kip848-range", topic_name, **{"group.remote.assignor": "range"})
               for _ in range(2)]
    for m in members:
        m.start()
    try:
        wait_until(lambda: sorted(len(m.assignment) for m in members) == [1, 2]
                   and sorted(p for m in members for p in m.assignment) == [0, 1, 2],
                   "range layout over two members", timeout=15)
        # Range gives contiguous partitions: the member with two owns 0 and 1.
        assert [0, 1] in [m.assignment for m in members]
        adm = admin(b.bootstrap)
        d = adm.describe_consumer_groups(["kip848-range"])["kip848-range"].result(timeout=10)
        assert d.type == ConsumerGroupType.CONSUMER
        assert d.partition_assignor == "range"
        listed = adm.list_consumer_groups().result(timeout=10)
        assert any(g.group_id == "kip848-range" and g.type == ConsumerGroupType.CONSUMER
                   for g in listed.valid)
    finally:
        for m in members:
            m.stop()


def test_broker_restart_keeps_the_consumer_group_and_its_commits(broker_factory, topic_name):
    b = broker_factory(*FLAGS)
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    first = fill(b.bootstrap, topic_name, 2, 5)
    m = Member(b.bootstrap, "kip848-restart", topic_name)
    m.start()
    wait_until(lambda: set(m.committed) >= first, "first batch consumed", timeout=15)
    m.stop()
    b.restart()
    adm = admin(b.bootstrap)
    listed = adm.list_consumer_groups().result(timeout=10)
    assert any(g.group_id == "kip848-restart" and g.type == ConsumerGroupType.CONSUMER for g in listed.valid)
    second = fill(b.bootstrap, topic_name, 2, 5, start=5)
    m2 = Member(b.bootstrap, "kip848-restart", topic_name)
    m2.start()
    try:
        wait_until(lambda: set(m2.committed) >= second, "second batch consumed after the restart", timeout=15)
        assert not set(m2.seen) & first, "commits survived the restart"
    finally:
        m2.stop()


def test_killed_member_is_removed_after_the_session_timeout(broker_factory, topic_name):
    b = broker_factory(*FLAGS)
    create_topic(admin(b.bootstrap), topic_name, partitions=2)
    script = textwrap.dedent(f"""
        from confluent_kafka import Consumer
        c = Consumer({{"bootstrap.servers": "{b.bootstrap}", "group.id": "kip848-kill",
                      "group.protocol": "consumer"}})
        c.subscribe(["{topic_name}"])
        while True:
            c.poll(0.1)
    """)
    victim = subprocess.Popen([sys.executable, "-c", script])
    m = Member(b.bootstrap, "kip848-kill", topic_name)
    try:
        adm = admin(b.bootstrap)

        def members() -> int:
            try:
                d = adm.describe_consumer_groups(["kip848-kill"])["kip848-kill"].result(timeout=10)
            except KafkaException:  # not created yet
                return 0
            return len(d.members)

        wait_until(lambda: members() == 1, "the subprocess joined", timeout=15)
        m.start()
        wait_until(lambda: len(m.assignment) == 1, "the partitions split over two members", timeout=15)
        victim.kill()
        victim.wait()
        killed_at = time.monotonic()
        wait_until(lambda: m.assignment == [0, 1], "the survivor owns both partitions", timeout=15)
        assert time.monotonic() - killed_at >= 4, "removed by the 6 s session timeout, not earlier"
    finally:
        if victim.poll() is None:
            victim.kill()
        m.stop()
