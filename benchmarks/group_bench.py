#!/usr/bin/env python3
"""Consumer-group benchmarks (issue 4), with confluent-kafka against a running broker.

Measures, for the classic protocol (and `group.protocol=consumer` where the broker advertises it):
  * start-to-first-record: three members start together on a pre-filled 6-partition topic; the time
    until every member has received a record;
  * leave rebalance: one member closes (LeaveGroup); the time until the remaining two own all partitions;
  * commit throughput: synchronous commits one at a time, and asynchronous commits pipelined.

Usage: group_bench.py BOOTSTRAP [--protocol classic|consumer] [--rounds N]
Prints one human line per figure and a final `RESULT {json}` line. Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6


def make_topic(bootstrap: str) -> str:
    topic = f"gbench-{uuid.uuid4().hex[:8]}"
    adm = AdminClient({"bootstrap.servers": bootstrap})
    adm.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(PARTITIONS * 200):
        p.produce(topic, value=b"x" * 100, partition=i % PARTITIONS)
    assert p.flush(30) == 0
    return topic


def consumer_conf(bootstrap: str, group: str, protocol: str) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                     "partition.assignment.strategy": "range"})
    return conf


class Member(threading.Thread):
    def __init__(self, conf: dict, topic: str, start_at: float):
        super().__init__(daemon=True)
        self.conf, self.topic, self.start_at = conf, topic, start_at
        self.first_record_at: float | None = None
        self.assignment: set[int] = set()
        self.stop = threading.Event()
        self.closed = threading.Event()

    def run(self) -> None:
        c = Consumer(self.conf)

        def on_assign(_c, parts):
            self.assignment |= {p.partition for p in parts}

        def on_revoke(_c, parts):
            self.assignment -= {p.partition for p in parts}

        c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        while not self.stop.is_set():
            m = c.poll(0.05)
            if m is not None and m.error() is None and self.first_record_at is None:
                self.first_record_at = time.monotonic()
        c.close()
        self.closed.set()


def wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def group_round(bootstrap: str, topic: str, protocol: str) -> tuple[float, float]:
    group = f"g-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    members = [Member(consumer_conf(bootstrap, group, protocol), topic, t0) for _ in range(3)]
    for m in members:
        m.start()
    ok = wait(lambda: all(m.first_record_at for m in members), 60)
    first = max(m.first_record_at for m in members) - t0 if ok else float("nan")
    # Let the group settle, then one member leaves.
    wait(lambda: sum(len(m.assignment) for m in members) == PARTITIONS, 30)
    leaver, rest = members[0], members[1:]
    t1 = time.monotonic()
    leaver.stop.set()
    ok = wait(lambda: set().union(*(m.assignment for m in rest)) == set(range(PARTITIONS)), 60)
    rebalance = time.monotonic() - t1 if ok else float("nan")
    for m in rest:
        m.stop.set()
    for m in members:
        m.closed.wait(30)
    return first, rebalance


def commit_rates(bootstrap: str, topic: str, protocol: str) -> tuple[float, float]:
    group = f"c-{uuid.uuid4().hex[:8]}"
    c = Consumer(consumer_conf(bootstrap, group, protocol))
    c.subscribe([topic])
    wait(lambda: c.poll(0.1) is not None and bool(c.assignment()), 30)
    parts = c.assignment()
    n_sync = 1000
    t = time.monotonic()
    for i in range(n_sync):
        c.commit(offsets=[TopicPartition(parts[0].topic, parts[0].partition, i + 1)], asynchronous=False)
    sync_rate = n_sync / (time.monotonic() - t)
    n_async = 5000
    t = time.monotonic()
    for i in range(n_async):
        c.commit(offsets=[TopicPartition(parts[0].topic, parts[0].partition, n_sync + i + 1)],
                 asynchronous=True)
        c.poll(0)
    # Barrier: a synchronous commit is answered after every earlier one on the same connection.
    c.commit(offsets=[TopicPartition(parts[0].topic, parts[0].partition, n_sync + n_async + 1)],
             asynchronous=False)
    async_rate = n_async / (time.monotonic() - t)
    c.close()
    return sync_rate, async_rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("--protocol", default="classic", choices=["classic", "consumer"])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    topic = make_topic(args.bootstrap)
    firsts, rebalances = [], []
    for _ in range(args.rounds):
        f, r = group_round(args.bootstrap, topic, args.protocol)
        firsts.append(f)
        rebalances.append(r)
    sync_rate, async_rate = commit_rates(args.bootstrap, topic, args.protocol)
    med = statistics.median
    print(f"protocol={args.protocol}: start to first record in all 3 members "
          f"median {med(firsts):.3f}s (rounds {', '.join(f'{x:.3f}' for x in firsts)})")
    print(f"protocol={args.protocol}: one member leaves -> others own all partitions "
          f"median {med(rebalances):.3f}s (rounds {', '.join(f'{x:.3f}' for x in rebalances)})")
    print(f"protocol={args.protocol}: commits/s sync one-at-a-time {sync_rate:,.0f}, async pipelined {async_rate:,.0f}")
    print("RESULT " + json.dumps({"protocol": args.protocol, "first_record_s": firsts,
                                  "leave_rebalance_s": rebalances, "sync_commits_per_s": sync_rate,
                                  "async_commits_per_s": async_rate}))


if __name__ == "__main__":
    main()
