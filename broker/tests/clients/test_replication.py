"""Partition replication (RFC 0006) with real clients on three `strata broker` processes: every partition a
Raft group over its segment log. Replication factor 3, acks=all committed on a quorum, kill -9 and SIGSTOP
of a leader while an idempotent producer keeps writing (nothing acknowledged is lost, nothing duplicated),
min.insync.replicas, a group coordinator moving with its `__consumer_offsets` partition, a returning replica
catching up into the ISR, and preferred-leader election (ElectLeaders) after a restart.

Run with `-s` to see the measured failover times.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, ElectionType, KafkaError, TopicPartition

from replication_helpers import (Writer, alter_reassignments, create_replicated, finish_and_check,
                                 list_reassignments, partition_state, read_all, wait_replicated)
from strata_helpers import admin, fill, producer, wait_futures, wait_until

GROUP_FLAGS = ["--group-initial-rebalance-delay-ms", "0"]


def gauge(c, node: int, name: str) -> float:
    """A metric without labels from a node's metrics endpoint."""
    for line in c.node(node).metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in node {node}'s metrics")


# ---------------------------------------------------------------------------------------------------
# 1. Three replicas, metadata, acks=all through a kill -9 of a leader
# ---------------------------------------------------------------------------------------------------

def test_rf3_topic_survives_kill9_of_a_leader_without_losing_an_acknowledged_write(cluster_factory, topic_name):
    c = cluster_factory(3)
    parts = 6
    create_replicated(c.node(1).bootstrap, topic_name, parts)
    state = wait_replicated(c, topic_name, parts, {1, 2, 3})
    for p, (leader, replicas, _) in state.items():
        assert sorted(replicas) == [1, 2, 3], (p, replicas)
    # Preferred leaders are spread: every broker is first in some replica list and leads something.
    assert {r[0] for _, r, _ in state.values()} == {1, 2, 3}, state
    # Every node answers the same replicas.
    for i in c.ids:
        s = partition_state(c.node(i).bootstrap, topic_name)
        assert s is not None and {p: r for p, (_, r, _) in s.items()} == {p: r for p, (_, r, _) in state.items()}

    w = Writer(c.bootstrap_all, topic_name, parts)
    w.start()
    wait_until(lambda: len(w.p.deliveries) >= 300, "300 acknowledged writes before the fault", timeout=30)
    victim = state[0][0]
    others = {1, 2, 3} - {victim}
    led_before = {p for p, (leader, _, _) in state.items() if leader == victim}
    c.kill9(victim)
    t0 = time.monotonic()
    wait_replicated(c, topic_name, parts, others, isr=others, via=min(others), timeout=30)
    failover_s = time.monotonic() - t0
    count = len(w.p.deliveries)
    wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 more acknowledged writes after the failover",
               timeout=60)
    print(f"\nkill -9 of node {victim} (leading partitions {sorted(led_before)}): every partition led by "
          f"{sorted(others)} with ISR {sorted(others)} after {failover_s:.2f}s")

    # Read through both survivors: one history, every acknowledged value in it once.
    acked = finish_and_check(w, c, topic_name, parts, sorted(others))
    assert len(acked) == w.sent, (len(acked), w.sent)


# ---------------------------------------------------------------------------------------------------
# 2. A killed replica returns, catches up into the ISR and serves the same history
# ---------------------------------------------------------------------------------------------------

def test_restarted_replica_catches_up_into_the_isr_and_serves_the_same_history(cluster_factory, topic_name):
    c = cluster_factory(3, "--auto-leader-rebalance-enable", "false")
    parts = 6
    create_replicated(c.node(1).bootstrap, topic_name, parts)
    state = wait_replicated(c, topic_name, parts, {1, 2, 3})
    w = Writer(c.bootstrap_all, topic_name, parts)
    w.start()
    wait_until(lambda: len(w.p.deliveries) >= 300, "300 acknowledged writes before the fault", timeout=30)
    victim = state[0][0]
    others = {1, 2, 3} - {victim}
    c.kill9(victim)
    wait_replicated(c, topic_name, parts, others, isr=others, via=min(others), timeout=30)
    count = len(w.p.deliveries)
    wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 writes while the victim is down", timeout=60)
    # Metrics: the survivors lead every partition, each under-replicated; none offline.
    wait_until(lambda: sum(gauge(c, i, "strata_under_replicated_partitions") for i in others) == parts,
               f"{parts} under-replicated partitions in the survivors' metrics", timeout=20)
    assert all(gauge(c, i, "strata_offline_partitions") == 0 for i in others)
    c.restart(victim)
    t0 = time.monotonic()
    wait_replicated(c, topic_name, parts, {1, 2, 3}, via=min(others), timeout=40)
    rejoin_s = time.monotonic() - t0
    wait_until(lambda: sum(gauge(c, i, "strata_under_replicated_partitions") for i in c.ids) == 0,
               "no under-replicated partition in any broker's metrics", timeout=20)
    count = len(w.p.deliveries)
    wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 writes after the victim rejoined", timeout=60)
    print(f"\nnode {victim} back in the ISR of all {parts} partitions {rejoin_s:.2f}s after its restart")

    # With auto.leader.rebalance.enable=false nothing moves leadership back; a preferred election does.
    before = partition_state(c.node(victim).bootstrap, topic_name)
    assert before is not None and not any(leader == victim for leader, _, _ in before.values()), before
    adm = admin(c.node(victim).bootstrap)
    tps = [TopicPartition(topic_name, p) for p in range(parts)]
    # (confluent-kafka 2.12 raises SystemError for any keyword argument here.)
    result = adm.elect_leaders(ElectionType.PREFERRED, tps).result(timeout=40)
    led = {p for p, (leader, replicas, _) in before.items() if replicas[0] == victim}
    assert led, before
    for tp, err in result.items():
        if tp.partition in led:
            assert err is None, (tp, err)
    # The admin client sends ElectLeaders to the controller, which answered once its own metadata view
    # showed the new leaders; the victim's view catches up a metadata round trip later, as in Kafka.
    wait_replicated(c, topic_name, parts, {1, 2, 3}, via=victim, timeout=20, preferred=True)

    count = len(w.p.deliveries)
    wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 writes after the preferred election", timeout=60)
    finish_and_check(w, c, topic_name, parts, [min(others), victim])


# ---------------------------------------------------------------------------------------------------
# 3. SIGSTOP of a leader: alive but silent, replaced; it returns as a follower
# ---------------------------------------------------------------------------------------------------

def test_sigstopped_leader_is_replaced_and_returns_as_a_follower_then_leads_again(cluster_factory, topic_name):
    # auto.leader.rebalance.enable (the default) with a 1 s check: leadership goes back by itself.
    c = cluster_factory(3, "--leader-imbalance-check-interval-seconds", "1")
    parts = 4
    create_replicated(c.node(1).bootstrap, topic_name, parts)
    state = wait_replicated(c, topic_name, parts, {1, 2, 3})
    w = Writer(c.bootstrap_all, topic_name, parts)
    w.start()
    wait_until(lambda: len(w.p.deliveries) >= 300, "300 acknowledged writes before the fault", timeout=30)
    victim = state[0][0]
    others = {1, 2, 3} - {victim}
    c.pause(victim)
    t0 = time.monotonic()
    try:
        wait_replicated(c, topic_name, parts, others, isr=others, via=min(others), timeout=30)
        replaced_s = time.monotonic() - t0
        count = len(w.p.deliveries)
        wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 writes while the old leader is stopped",
                   timeout=60)
    finally:
        c.resume(victim)
    wait_replicated(c, topic_name, parts, {1, 2, 3}, via=min(others), timeout=40)
    t1 = time.monotonic()

    def preferred_lead():
        s = partition_state(c.node(victim).bootstrap, topic_name)
        return s if s and all(leader == replicas[0] for leader, replicas, _ in s.values()) else None
    wait_until(preferred_lead, "every partition led by its preferred replica again", timeout=30, interval=0.3)
    print(f"\nSIGSTOP of node {victim}: partitions re-led by {sorted(others)} after {replaced_s:.2f}s; "
          f"back in the ISR after SIGCONT, preferred leaders restored {time.monotonic() - t1:.2f}s later")
    count = len(w.p.deliveries)
    wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 writes after SIGCONT", timeout=60)
    finish_and_check(w, c, topic_name, parts, [victim, *sorted(others)])


# ---------------------------------------------------------------------------------------------------
# 4. min.insync.replicas
# ---------------------------------------------------------------------------------------------------

def _send_one(bootstrap: str, topic: str, acks: str, value: bytes):
    # retries=0: NOT_ENOUGH_REPLICAS is retriable, and a retrying client would only report a timeout.
    p = producer(bootstrap, acks=acks, **{"message.timeout.ms": 10000, "retries": 0})
    p.produce(topic, value=value, partition=0)
    p.flush(15)
    assert len(p.deliveries) == 1, p.deliveries
    return p.deliveries[0]


def test_min_insync_replicas_refuses_acks_all_below_it_and_accepts_acks_1(cluster_factory, topic_name):
    c = cluster_factory(3)
    create_replicated(c.node(1).bootstrap, topic_name, 1, config={"min.insync.replicas": "3"})
    state = wait_replicated(c, topic_name, 1, {1, 2, 3})
    leader = state[0][0]
    d = _send_one(c.bootstrap_all, topic_name, "all", b"three-in-sync")
    assert d.error is None, d.error
    victim = next(i for i in (1, 2, 3) if i != leader)
    c.kill9(victim)
    live = {1, 2, 3} - {victim}
    wait_replicated(c, topic_name, 1, live, isr=live, via=leader, timeout=30)
    refused = _send_one(c.node(leader).bootstrap, topic_name, "all", b"two-in-sync-acks-all")
    assert refused.error is not None and refused.error.code() in (
        KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND), refused.error
    accepted = _send_one(c.node(leader).bootstrap, topic_name, "1", b"two-in-sync-acks-1")
    assert accepted.error is None, accepted.error
    c.restart(victim)
    wait_replicated(c, topic_name, 1, {1, 2, 3}, via=leader, timeout=40)
    again = _send_one(c.bootstrap_all, topic_name, "all", b"three-in-sync-again")
    assert again.error is None, again.error
    values = [v for _, v in read_all(c.node(victim).bootstrap, topic_name, 1)[0]]
    if refused.error.code() == KafkaError.NOT_ENOUGH_REPLICAS:
        # Refused before the append: never written.
        assert values == [b"three-in-sync", b"two-in-sync-acks-1", b"three-in-sync-again"], values
    else:
        assert values[0] == b"three-in-sync" and values[-1] == b"three-in-sync-again", values


# ---------------------------------------------------------------------------------------------------
# 5. A group coordinator moves with its __consumer_offsets partition, commits intact
# ---------------------------------------------------------------------------------------------------

def test_committed_offsets_survive_kill9_of_the_group_coordinator(cluster_factory, topic_name):
    c = cluster_factory(3, *GROUP_FLAGS)
    parts = 3
    create_replicated(c.node(1).bootstrap, topic_name, parts)
    wait_replicated(c, topic_name, parts, {1, 2, 3})
    fill(c.node(1).bootstrap, topic_name, parts, 10)
    group = f"g-{topic_name}"
    cons = Consumer({"bootstrap.servers": c.bootstrap_all, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                     "heartbeat.interval.ms": 200, "topic.metadata.refresh.interval.ms": 1000})
    try:
        cons.assign([TopicPartition(topic_name, p, 0) for p in range(parts)])
        cons.commit(offsets=[TopicPartition(topic_name, p, 7) for p in range(parts)], asynchronous=False)
    finally:
        cons.close()
    adm = admin(c.node(1).bootstrap)
    coordinator = adm.describe_consumer_groups([group])[group].result(timeout=10).coordinator.id
    offsets = partition_state(c.node(1).bootstrap, "__consumer_offsets")
    assert offsets and all(len(r) == 3 for _, r, _ in offsets.values()), \
        f"__consumer_offsets is not replicated three ways: {offsets}"
    c.kill9(coordinator)
    live = sorted(set(c.ids) - {coordinator})

    def offsets_via_survivor():
        try:
            a = admin(c.node(live[0]).bootstrap)
            got = wait_futures(a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]), timeout=5)
        except Exception:  # noqa: BLE001 - the coordinator is moving
            return None
        o = {tp.partition: tp.offset for tp in got[group].topic_partitions}
        return o if o else None
    t0 = time.monotonic()
    got = wait_until(offsets_via_survivor, "committed offsets through a survivor", timeout=40, interval=0.3)
    moved_s = time.monotonic() - t0
    assert got == {p: 7 for p in range(parts)}, got
    survivor = admin(c.node(live[0]).bootstrap)  # referenced until the future resolves
    new = survivor.describe_consumer_groups([group])[group].result(timeout=10).coordinator.id
    assert new in live, (new, live)
    print(f"\nkill -9 of group coordinator {coordinator}: node {new} serves the commits after {moved_s:.2f}s")


# ---------------------------------------------------------------------------------------------------
# 6. Reassignment (AlterPartitionReassignments / ListPartitionReassignments) under load
# ---------------------------------------------------------------------------------------------------

def test_reassignment_moves_replicas_under_load_with_nothing_lost(cluster_factory, topic_name):
    c = cluster_factory(4)
    adm = admin(c.node(1).bootstrap)  # referenced until the futures resolve
    from confluent_kafka.admin import NewTopic
    wait_futures(adm.create_topics([NewTopic(topic_name, num_partitions=3, replica_assignment=[[1, 2, 3], [1, 2, 3], [2, 3, 1]])],
                                   operation_timeout=20, request_timeout=25), timeout=30)
    parts = 3
    wait_until(lambda: (s := partition_state(c.node(1).bootstrap, topic_name)) and len(s) == parts
               and all(set(isr) == {1, 2, 3} for _, _, isr in s.values()), "three replicas in sync", timeout=30)
    w = Writer(c.bootstrap_all, topic_name, parts)
    w.start()
    wait_until(lambda: len(w.p.deliveries) >= 2000, "2000 acknowledged writes before the move", timeout=60)

    # p0: the leader's broker (1) leaves and a new broker (4) joins as the preferred replica;
    # p1: shrink to two replicas; p2: cancelled right after it started (back to 2,3,1).
    targets = {0: [4, 2, 3], 1: [1, 2], 2: [4, 3, 1]}
    t0 = time.monotonic()
    codes = alter_reassignments(c.node(2).port, topic_name, targets)
    assert codes == {0: 0, 1: 0, 2: 0}, codes
    listed = list_reassignments(c.node(3).port)
    cancelled = alter_reassignments(c.node(3).port, topic_name, {2: None})
    assert cancelled == {2: 0}, cancelled
    # Nothing to cancel: NO_REASSIGNMENT_IN_PROGRESS (85) once p2 settled back, or 0 if still in flight.
    want = {0: [4, 2, 3], 1: [1, 2], 2: [2, 3, 1]}

    def settled():
        s = partition_state(c.node(1).bootstrap, topic_name)
        if not s or list_reassignments(c.node(1).port):
            return None
        for p, target in want.items():
            leader, replicas, isr = s[p]
            if replicas != target or set(isr) != set(target) or leader not in target:
                return None
        return s
    try:
        final = wait_until(settled, "reassignments complete", timeout=90, interval=0.3)
    except AssertionError:
        raise AssertionError(f"last state {partition_state(c.node(1).bootstrap, topic_name)}, "
                             f"in progress {list_reassignments(c.node(1).port)}") from None
    moved_s = time.monotonic() - t0
    assert (topic_name, 0) in listed or moved_s < 1, listed
    if (topic_name, 0) in listed:
        replicas, adding, removing = listed[(topic_name, 0)]
        assert adding == [4] and removing == [1] and set(replicas) == {1, 2, 3, 4}, listed
    codes = alter_reassignments(c.node(1).port, topic_name, {1: None})
    assert codes == {1: 85}, codes  # NO_REASSIGNMENT_IN_PROGRESS
    count = len(w.p.deliveries)
    wait_until(lambda: len(w.p.deliveries) >= count + 300, "300 writes after the move", timeout=60)
    print(f"\nreassignment of 3 partitions under load settled after {moved_s:.2f}s: {final}")
    finish_and_check(w, c, topic_name, parts, [4])
    # The removed replicas' data is gone: node 1 no longer holds p0, node 3 no longer holds p1.
    wait_until(lambda: not (c.node(1).data_dir / f"{topic_name}-0").exists()
               and not (c.node(3).data_dir / f"{topic_name}-1").exists(), "removed replicas deleted", timeout=30)
    assert (c.node(4).data_dir / f"{topic_name}-0").exists()


# ---------------------------------------------------------------------------------------------------
# 7. Fetch from follower (KIP-392): a consumer with client.rack reads from the replica in its rack
# ---------------------------------------------------------------------------------------------------

def _bytes_out(c, node: int, topic: str) -> float:
    total = 0.0
    for line in c.node(node).metrics().splitlines():
        if line.startswith("strata_bytes_out_total{") and f'topic="{topic}"' in line:
            total += float(line.split()[-1])
    return total


def test_consumer_with_client_rack_reads_from_the_follower_in_its_rack(tmp_path, request, topic_name):
    from conftest import Cluster, _reported_brokers
    c = Cluster(tmp_path / "racks", tmp_path / "logs", 3,
                ["--replica-selector-class", "org.apache.kafka.common.replica.RackAwareReplicaSelector"])
    _reported_brokers(request).extend(c.nodes)
    for b in c.nodes:
        b.flags += ["--rack", f"zone-{b.node_id}"]
    try:
        c.start_all()
        adm = admin(c.node(1).bootstrap)  # referenced until the futures resolve
        from confluent_kafka.admin import NewTopic
        wait_futures(adm.create_topics([NewTopic(topic_name, num_partitions=1, replica_assignment=[[1, 2, 3]])],
                                       operation_timeout=20, request_timeout=25), timeout=30)
        wait_until(lambda: (s := partition_state(c.node(1).bootstrap, topic_name)) and s[0][0] == 1
                   and set(s[0][2]) == {1, 2, 3}, "led by 1 with three replicas in sync", timeout=30)
        p = producer(c.node(1).bootstrap, acks="all")
        values = [f"v-{i}".encode() for i in range(500)]
        for v in values:
            p.produce(topic_name, value=v, partition=0)
        p.flush(30)
        assert not p.errors()
        before = {i: _bytes_out(c, i, topic_name) for i in c.ids}
        from strata_helpers import consume
        got = consume(c.node(1).bootstrap, topic_name, [0], count=len(values), timeout=60,
                      **{"client.rack": "zone-3"})
        assert [m.value() for m in got] == values
        after = {i: _bytes_out(c, i, topic_name) for i in c.ids}
        served = {i: after[i] - before[i] for i in c.ids}
        print(f"\nbytes served per broker to a consumer in zone-3: {served}")
        assert served[3] > 0 and served[1] == 0 and served[2] == 0, served
    finally:
        errors = c.shutdown()
        assert not errors, errors
