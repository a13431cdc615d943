"""The fault-injection checker (issue 11, part 3): three real `strata broker` processes on loopback, a
replication-factor-3 topic, a workload of idempotent acks=all producers and consumers (by assign and by
subscribe, committing), and randomized faults from a printed seed:

- `kill9`: SIGKILL a broker, restart it after a while on the same data directory;
- `pause`: SIGSTOP a broker (alive, sockets open, silent), SIGCONT it after a while;
- `cut`: cut every replication link to and from a broker (Raft traffic and Strata's heartbeats go
  through TCP proxies this harness controls, named to each broker with `--replication-peer-overrides`),
  heal them after a while. The metadata quorum's links stay up: a partial partition;
- `s3down` (tiered runs): SIGKILL the S3-compatible server every broker offloads to (`s3s-fs`, objects on
  disk), start it again on the same port and directory after a while: an object-store outage while
  leaders upload and readers fetch offloaded history.

A tiered run (`tiered=True`, what the test command runs) rolls 32 KiB segments and keeps one byte of
them locally, so most of the history is read back from the object store, by replicas that did not
upload it, after leaderships moved.

After each fault heals, the checker waits until every partition has a leader and all three replicas in the
ISR, and until every producer and the assign consumer made progress (7). At the end every partition is read
from the beginning through every broker and checked:

1. one (partition, offset) holds one value in every read (the live reads and the final ones);
2. every acknowledged send is read, at the offset its acknowledgement named (no lost writes);
3. no value is read at two offsets (no duplicates under idempotence);
4. no value whose send failed with a definite error is read;
5. one producer's acknowledged sends to a partition are at increasing offsets;
6. the group's committed offsets never go backwards (sampled throughout);
7. producers and consumers make progress after faults heal.

`run(...)` returns a `Report`; `Report.violations` lists what failed. The bounded form runs in the test
command (`test_fault_checker.py`); the long form (`STRATA_LONG_TESTS=1`, `STRATA_CHECKER_ROUNDS`) runs
outside CI and its result goes to `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import Cluster, S3Server, free_ports
from replication_helpers import Writer, create_replicated, partition_state, read_all, wait_replicated
from strata_helpers import wait_until

# Errors after which a send may or may not have been written (not definite failures, property 4).
INDEFINITE = {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT,
              KafkaError._TRANSPORT, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError._PURGE_INFLIGHT}

FAULTS = ("kill9", "pause", "cut")
TIERED_FAULTS = FAULTS + ("s3down",)
TIERED_SEGMENT = 32 * 1024
TIERED_FLAGS = ["--broker-config", f"segment.bytes={TIERED_SEGMENT}", "--broker-config", "local.retention.bytes=1",
                "--remote-task-interval-ms", "200", "--log-retention-check-interval-ms", "500"]


# ---------------------------------------------------------------------------------------------------
# Replication links through proxies
# ---------------------------------------------------------------------------------------------------

class LinkProxy:
    """A TCP proxy for one ordered broker pair's replication link (the dialer's requests and the acceptor's
    answers share the connection). `cut()` closes every live connection and closes new ones at once (the
    dialer sees a dead peer); `heal()` lets connections through again."""

    def __init__(self, listen_port: int, target_port: int):
        self.target_port = target_port
        self.cut_flag = threading.Event()
        self.lock = threading.Lock()
        self.live: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self.server.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            if self.cut_flag.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.live += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data or self.cut_flag.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        self.cut_flag.set()
        with self.lock:
            live, self.live = self.live, []
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def heal(self):
        self.cut_flag.clear()

    def close(self):
        self.stopped.set()
        self.cut()
        self.server.close()


class Links:
    """Proxies for every ordered pair of `ids`; `flags(i)` are the flags that route node i's replication
    traffic through them."""

    def __init__(self, ids: list[int]):
        self.ids = ids
        ports = free_ports(len(ids) + len(ids) * (len(ids) - 1))
        self.listen = {i: ports[k] for k, i in enumerate(ids)}
        rest = ports[len(ids):]
        self.proxies: dict[tuple[int, int], LinkProxy] = {}
        for i in ids:
            for j in ids:
                if i != j:
                    self.proxies[(i, j)] = LinkProxy(rest.pop(), self.listen[j])

    def flags(self, i: int) -> list[str]:
        overrides = ",".join(f"{j}=127.0.0.1:{self.proxies[(i, j)].server.getsockname()[1]}"
                             for j in self.ids if j != i)
        return ["--replication-listen", f"127.0.0.1:{self.listen[i]}",
                "--replication-peer-overrides", overrides]

    def isolate(self, node: int):
        for (a, b), p in self.proxies.items():
            if node in (a, b):
                p.cut()

    def heal_all(self):
        for p in self.proxies.values():
            p.heal()

    def close(self):
        for p in self.proxies.values():
            p.close()


# ---------------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------------

class AssignReader(threading.Thread):
    """Reads every partition from the beginning for as long as it runs, through all brokers; records
    (partition, offset) -> value and every conflicting re-read (property 1)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": "checker-assign-unused",
                           "enable.auto.commit": False, "enable.auto.offset.store": False,
                           "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000,
                           "fetch.wait.max.ms": 100, "socket.timeout.ms": 5000})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.seen: dict[tuple[int, int], bytes] = {}
        self.conflicts: list[tuple[int, int, bytes, bytes]] = []
        self.stop_flag = threading.Event()
        self.errors: list[str] = []

    def run(self):
        try:
            while not self.stop_flag.is_set():
                m = self.c.poll(0.2)
                if m is None:
                    continue
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF and not m.error().retriable():
                        self.errors.append(str(m.error()))
                    continue
                key = (m.partition(), m.offset())
                old = self.seen.setdefault(key, m.value())
                if old != m.value():
                    self.conflicts.append((*key, old, m.value()))
        finally:
            self.c.close()

    def finish(self):
        self.stop_flag.set()
        self.join(30)


class GroupReader(threading.Thread):
    """A subscribing group member that commits synchronously every 100 records (commits that fail during a
    fault are retried with the next batch)."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                           "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
                           "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 1000,
                           "fetch.wait.max.ms": 100})
        self.c.subscribe([topic])
        self.read = 0
        self.commits = 0
        self.stop_flag = threading.Event()

    def run(self):
        pending = 0
        try:
            while not self.stop_flag.is_set():
                m = self.c.poll(0.2)
                if m is None or m.error() is not None:
                    continue
                self.read += 1
                pending += 1
                if pending >= 100:
                    try:
                        self.c.commit(asynchronous=False)
                        self.commits += 1
                        pending = 0
                    except Exception:  # noqa: BLE001 - a coordinator moving; the next batch retries
                        pass
        finally:
            self.c.close()

    def finish(self):
        self.stop_flag.set()
        self.join(30)


class CommitMonitor(threading.Thread):
    """Samples the group's committed offsets (OffsetFetch through any broker) and records every partition
    whose committed offset went backwards (property 6)."""

    def __init__(self, cluster: Cluster, group: str):
        super().__init__(daemon=True)
        self.cluster, self.group = cluster, group
        self.high: dict[int, int] = {}
        self.backwards: list[tuple[int, int, int]] = []
        self.samples = 0
        self.stop_flag = threading.Event()

    def run(self):
        # kafka-python's admin client (pure Python): librdkafka's admin client aborts the process
        # under repeated coordinator failovers (rd_kafka_enq_once_del_source_return assertion).
        from kafka.admin import KafkaAdminClient

        a = None
        while not self.stop_flag.wait(0.5):
            try:
                if a is None:
                    a = KafkaAdminClient(bootstrap_servers=self.cluster.bootstrap_all.split(","),
                                         request_timeout_ms=5000, api_version_auto_timeout_ms=5000)
                got = a.list_consumer_group_offsets(self.group)
            except Exception:  # noqa: BLE001 - a coordinator moving; start afresh
                if a is not None:
                    try:
                        a.close()
                    except Exception:  # noqa: BLE001
                        pass
                a = None
                continue
            self.samples += 1
            for tp, om in got.items():
                if om.offset < 0:
                    continue
                prev = self.high.get(tp.partition, -1)
                if om.offset < prev:
                    self.backwards.append((tp.partition, prev, om.offset))
                self.high[tp.partition] = max(prev, om.offset)
        if a is not None:
            a.close()

    def finish(self):
        self.stop_flag.set()
        self.join(30)


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------

@dataclass
class Report:
    seed: int
    rounds: list[str] = field(default_factory=list)
    acked: int = 0
    failed_definite: int = 0
    failed_indefinite: int = 0
    read: int = 0
    moved: int = 0
    commits: int = 0
    commit_samples: int = 0
    uploaded: int = 0
    remote_reads: int = 0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"seed {self.seed}: {len(self.rounds)} rounds ({', '.join(self.rounds)}); {self.acked} acknowledged, "
                f"{self.failed_definite} definite and {self.failed_indefinite} indefinite failures, {self.read} "
                f"records read back, {self.moved} rounds moved leadership, {self.commits} group commits, {self.commit_samples} commit samples, "
                f"{self.uploaded} segments offloaded, {self.remote_reads} object-store GETs; "
                f"{len(self.violations)} violations")


def leader_epochs(c: Cluster, topic: str, via: int | None = None) -> dict[int, int]:
    """partition -> leader epoch (see `leaders_and_epochs`)."""
    return {p: e for p, (_, e) in leaders_and_epochs(c, topic, via).items()}


def leaders_and_epochs(c: Cluster, topic: str, via: int | None = None) -> dict[int, tuple[int, int]]:
    """partition -> (leader, leader epoch), from one raw Metadata v7 request to node `via` (default: any live
    node; confluent-kafka does not expose epochs)."""
    from kafka.protocol.metadata import MetadataRequest

    from conftest import _raw_request

    for node in c.nodes:
        if not node.running() or node.paused or (via is not None and node.node_id != via):
            continue
        try:
            resp = _raw_request(node.port, MetadataRequest[7](topics=[topic], allow_auto_topic_creation=False), 5)
        except (OSError, ConnectionError):
            continue
        for _error, name, _internal, parts in resp.topics:
            if name == topic:
                # (error, partition, leader, leader_epoch, replicas, isr, offline)
                return {p[1]: (p[2], p[3]) for p in parts}
    return {}


def make_cluster(cluster_factory, links: Links, s3: S3Server | None = None) -> Cluster:
    """Three brokers with their replication links through `links`; with `s3`, tiered on it (one bucket
    prefix shared by all three, as in production)."""
    tiered = [*s3.broker_flags(), *TIERED_FLAGS] if s3 is not None else []
    c = cluster_factory(3, "--group-initial-rebalance-delay-ms", "0", "--replica-lag-time-max-ms", "3000",
                        "--leader-imbalance-check-interval-seconds", "2", *tiered,
                        env=S3Server.broker_env() if s3 is not None else None, start=False)
    for b in c.nodes:
        b.flags += links.flags(b.node_id)
    c.start_all()
    return c


def metric_sum(c: Cluster, node: int, name: str) -> float:
    """The sum of every sample of `strata_<name>` on a node (`name` may carry the labels of one sample);
    0 when it is not exported or the node is unreachable."""
    try:
        text = c.node(node).metrics()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == f"strata_{name}" or ("{" not in name and head.startswith(f"strata_{name}{{")):
            total += float(value)
    return total


def run(c: Cluster, links: Links, topic: str, seed: int, rounds: int, partitions: int = 4,
        hold: tuple[float, float] = (4.0, 8.0), log=print, s3: S3Server | None = None) -> Report:
    """`rounds` faults drawn from `seed` (each kind equally often); with `s3` the run is tiered and
    object-store outages are among the faults."""
    rng = random.Random(seed)
    faults = TIERED_FAULTS if s3 is not None else FAULTS
    report = Report(seed)
    create_replicated(c.node(1).bootstrap, topic, partitions)
    wait_replicated(c, topic, partitions, {1, 2, 3})
    writers = [Writer(c.bootstrap_all, topic, partitions, prefix=f"p{i}", pause=0.05) for i in range(2)]
    for w in writers:
        w.start()
    reader = AssignReader(c.bootstrap_all, topic, partitions)
    reader.start()
    group = f"checker-{topic}"
    member = GroupReader(c.bootstrap_all, topic, group)
    member.start()
    monitor = CommitMonitor(c, group)
    monitor.start()

    def progress(what: str):
        counts = [len(w.p.deliveries) for w in writers]
        seen, got = len(reader.seen), member.read
        try:
            wait_until(lambda: all(len(w.p.deliveries) >= n + 50 for w, n in zip(writers, counts))
                       and len(reader.seen) > seen and member.read > got, f"progress {what}", timeout=60,
                       interval=0.2)
        except AssertionError as e:
            report.violations.append(f"7. no progress {what}: {e}")
            return False
        return True

    try:
        progress("before the first fault")
        kinds = [faults[i % len(faults)] for i in range(rounds)]
        rng.shuffle(kinds)
        for n, kind in enumerate(kinds):
            # The victim leads something, so every fault must move leadership (checked below).
            # Leaders and epochs from one answer (leadership may move between two reads: auto rebalance).
            witness0 = c.ids[0]
            before = wait_until(lambda: leaders_and_epochs(c, topic, via=witness0), "partition state", timeout=20)
            before_epochs = {p: e for p, (_, e) in before.items()}
            leaders = sorted({leader for leader, _ in before.values() if leader in c.ids})
            victim = rng.choice(leaders)
            held = rng.uniform(*hold)
            if kind == "s3down":
                assert s3 is not None
                uploaded = sum(metric_sum(c, i, "remote_segments_uploaded") for i in c.ids)
                log(f"round {n + 1}/{rounds}: object store down for {held:.1f}s ({uploaded:.0f} segments offloaded)")
                report.rounds.append(kind)
                s3.stop()
                time.sleep(held)
                s3.start()
                if not progress(f"after round {n + 1} ({kind})"):
                    break
                try:
                    wait_until(lambda: sum(metric_sum(c, i, "remote_segments_uploaded") for i in c.ids) > uploaded,
                               "an upload after the object store came back", timeout=60, interval=0.5)
                except AssertionError as e:
                    report.violations.append(f"7. round {n + 1} ({kind}): {e}")
                    break
                continue
            log(f"round {n + 1}/{rounds}: {kind} node {victim} for {held:.1f}s")
            report.rounds.append(f"{kind}:{victim}")
            if kind == "kill9":
                c.kill9(victim)
                time.sleep(held)
                c.restart(victim)
            elif kind == "pause":
                c.pause(victim)
                time.sleep(held)
                c.resume(victim)
            else:
                links.isolate(victim)
                time.sleep(held)
                links.heal_all()
            # Judge through a broker that stayed up: a resumed or restarted one serves its old metadata
            # until it caught up with the quorum (like any Kafka broker's metadata cache).
            witness = min(set(c.ids) - {victim})
            try:
                wait_replicated(c, topic, partitions, {1, 2, 3}, via=witness, timeout=60)
            except AssertionError as e:
                report.violations.append(f"7. round {n + 1} ({kind} {victim}) did not heal: {e}")
                break
            try:
                wait_until(lambda: leader_epochs(c, topic, via=victim) == leader_epochs(c, topic, via=witness),
                           f"node {victim}'s metadata catching up", timeout=20, interval=0.2)
            except AssertionError as e:
                report.violations.append(f"round {n + 1}: {e}")
            if not progress(f"after round {n + 1} ({kind} node {victim})"):
                break
            after = partition_state(c.node(witness).bootstrap, topic) or {}
            epochs = leader_epochs(c, topic, via=witness)
            still = [p for p, (leader, _) in before.items()
                     if leader == victim and epochs.get(p, -1) <= before_epochs.get(p, -1)]
            if still:
                report.violations.append(f"harness: round {n + 1} ({kind} {victim}) moved no leadership of "
                                         f"partitions {still} (state after: {after}; epochs before "
                                         f"{before_epochs}, after {epochs})")
            else:
                report.moved += 1
    finally:
        links.heal_all()
        if s3 is not None and not s3.running():
            s3.start()
        for node in c.nodes:
            if node.paused:
                node.resume()
        results = [w.finish() for w in writers]
        member.finish()
        monitor.finish()
        reader.finish()

    if s3 is not None:
        # Wait for the uploads to catch up (every replica trims the same offloaded segments), so the
        # final reads below fetch most of the history from the object store.
        try:
            def caught_up() -> bool:
                led = leaders_and_epochs(c, topic)
                return len(led) == partitions and all(
                    metric_sum(c, leader, f'remote_upload_lag_segments{{topic="{topic}",partition="{p}"}}') == 0
                    for p, (leader, _) in led.items())
            wait_until(caught_up, "every leader's offload to catch up", timeout=90, interval=0.5)
        except AssertionError as e:
            report.violations.append(f"7. {e}")
        gets = {i: metric_sum(c, i, "remote_get_requests") for i in c.ids}
    # Final reads through every broker.
    final = {i: read_all(c.node(i).bootstrap, topic, partitions) for i in c.ids}
    first = final[c.ids[0]]
    for i in c.ids[1:]:
        if final[i] != first:
            report.violations.append(f"1. node {i} serves another history than node {c.ids[0]}")
    at: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for p, rows in first.items():
        for o, v in rows:
            at[v].append((p, o))
            live = reader.seen.get((p, o))
            if live is not None and live != v:
                report.violations.append(f"1. {p}@{o} was read as {live!r} and later as {v!r}")
    for p, o, a, b in reader.conflicts:
        report.violations.append(f"1. {p}@{o} read as {a!r} and as {b!r}")
    for v, places in at.items():
        if len(places) > 1:
            report.violations.append(f"3. {v!r} read at {places}")
    report.read = sum(len(r) for r in first.values())
    for w, (acked, failed) in zip(writers, results):
        report.acked += len(acked)
        for v, (p, o) in acked.items():
            if v not in at:
                report.violations.append(f"2. acknowledged {v!r} ({p}@{o}) lost")
            elif at[v][0] != (p, o):
                report.violations.append(f"2. acknowledged {v!r} at {p}@{o} but read at {at[v][0]}")
        for d in failed:
            if d.error.code() in INDEFINITE:
                report.failed_indefinite += 1
            else:
                report.failed_definite += 1
                if d.value in at:
                    report.violations.append(f"4. {d.value!r} failed ({d.error}) but was read at {at[d.value]}")
        # 5: in send order (the number in the value), a producer's acknowledged offsets per partition increase.
        last: dict[int, int] = {}
        ok = [d for d in w.p.deliveries if d.error is None]
        for d in sorted(ok, key=lambda d: int(d.value.rsplit(b"-", 1)[1])):
            if d.offset <= last.get(d.partition, -1):
                report.violations.append(f"5. {d.value!r} at {d.partition}@{d.offset} after offset "
                                         f"{last[d.partition]}")
            last[d.partition] = d.offset
    for p, prev, now in monitor.backwards:
        report.violations.append(f"6. committed offset of partition {p} went back from {prev} to {now}")
    report.commits, report.commit_samples = member.commits, monitor.samples
    if s3 is not None:
        report.uploaded = int(sum(metric_sum(c, i, "remote_segments_uploaded") for i in c.ids))
        report.remote_reads = int(sum(metric_sum(c, i, "remote_get_requests") - gets[i] for i in c.ids))
        if report.uploaded == 0 or report.remote_reads == 0:
            report.violations.append(f"tiered run offloaded {report.uploaded} segments and the final reads made "
                                     f"{report.remote_reads} object-store GETs: the remote tier was not exercised")
    if reader.errors:
        report.violations.append(f"assign reader errors: {reader.errors[:3]}")
    if report.commits == 0:
        report.violations.append("7. the group member never committed")
    return report

