#!/usr/bin/env python3
"""Cluster benchmark (run by benchmarks/cluster.sh): a 3-node `strata` cluster on this machine, each node a
broker and a voter of the embedded metadata quorum, measured from the outside with confluent-kafka and raw
Metadata requests.

  cluster_bench.py run --work-dir DIR [--rounds 3] [--topics 100] [--partitions 100] [--batch 10]
                       [--propagation-topics 20] [--only failover,partitions,propagation]
                       [--invocation "benchmarks/cluster.sh ..."]

Sections, in this order (each on the same running cluster):
  failover     kill -9 of the active controller, ROUNDS times: time until DescribeCluster through a live
               broker names a new controller, until the first CreateTopics through that broker succeeds
               (retried from the moment of the kill), until the dead node is fenced; then the node is
               restarted and the time until every node lists it again is recorded. Median over rounds.
  propagation  N topics (1 partition) created one at a time through node 1 while nodes 2 and 3 are
               polled with Metadata(topic) on kept-open connections (every 2 ms) until the topic is
               there with a leader: delay from the CreateTopics response (and from the request), p50/max.
  partitions   TOPICS x PARTITIONS partitions (default 100 x 100 = 10,000) created with CreateTopics of
               BATCH topics per request, one request at a time: time until every request returned, then
               until every node's own Metadata (all topics) shows all partitions with a leader.

The markdown section for benchmarks/RESULTS.md goes to stdout, progress to stderr. Node output is in
DIR/logs. Environment: STRATA_BIN (default $CARGO_TARGET_DIR/release/strata or target/release/strata).
Needs confluent-kafka (the test venv, ~/.cache/strata/venv, has it: bash infra/test-deps.sh).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_INTERVAL_MS = 500


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def strata_bin() -> Path:
    default = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release" / "strata"
    return Path(os.environ.get("STRATA_BIN") or default).resolve()


_HANDED_OUT: set[int] = set()


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports below the kernel's ephemeral range, so the clusters' own outgoing
    connections cannot take one before its broker binds it; none handed out twice in this process."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    pool = range(10000, low) if low >= 12000 else range(61000, 65536)
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    ports: list[int] = []
    for _ in range(50 * n + 100):
        if len(ports) == n:
            return ports
        port = rng.choice(pool)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        ports.append(port)
    if len(ports) < n:
        raise RuntimeError(f"found only {len(ports)} of {n} free ports in {pool}")
    return ports


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- raw requests (exactly one broker's answer, on a kept-open connection) ---------------------------

class KafkaConn:
    """A connection to one broker for two requests the benchmark needs answered by THAT broker (a client
    library routes DescribeCluster and CreateTopics to whichever node it believes is the controller):
    Metadata v4 (allow_auto_topic_creation=false) and DescribeCluster v0."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.correlation = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"127.0.0.1:{self.port} closed the connection")
            buf += chunk
        return bytes(buf)

    def _request(self, api_key: int, version: int, body: bytes, flexible: bool) -> "_Reader":
        """One round trip (reconnecting once on a broken connection); returns a reader positioned after
        the response header. Raises OSError when the broker cannot be reached."""
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.correlation += 1
                client = b"strata-cluster-bench"
                head = struct.pack(">hhih", api_key, version, self.correlation, len(client)) + client
                if flexible:
                    head += b"\x00"  # request header v2: no tagged fields
                frame = head + body
                self.sock.sendall(struct.pack(">i", len(frame)) + frame)
                (size,) = struct.unpack(">i", self._recv_exact(4))
                r = _Reader(self._recv_exact(size))
                corr = r.i32()
                if corr != self.correlation:
                    raise ConnectionError(f"correlation id {corr}, expected {self.correlation}")
                if flexible:
                    r.tagged_fields()  # response header v1
                return r
            except (OSError, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def metadata(self, topics: list[str] | None):
        """Metadata v4 -> (brokers {id: (host, port)}, controller_id, {topic: (error, {partition: leader})})."""
        if topics is None:
            body = struct.pack(">i", -1)
        else:
            body = struct.pack(">i", len(topics))
            for t in topics:
                raw = t.encode()
                body += struct.pack(">h", len(raw)) + raw
        body += b"\x00"  # allow_auto_topic_creation = false
        r = self._request(3, 4, body, flexible=False)
        r.i32()  # throttle_time_ms
        brokers = {}
        for _ in range(r.i32()):
            node, host, port, _rack = r.i32(), r.string(), r.i32(), r.string()
            brokers[node] = (host, port)
        r.string()  # cluster_id
        controller = r.i32()
        out = {}
        for _ in range(r.i32()):
            err, name, _internal = r.i16(), r.string(), r.i8()
            parts = {}
            for _ in range(r.i32()):
                _perr, idx, leader = r.i16(), r.i32(), r.i32()
                for _ in range(r.i32()):  # replicas
                    r.i32()
                for _ in range(r.i32()):  # isr
                    r.i32()
                parts[idx] = leader
            out[name] = (err, parts)
        return brokers, controller, out

    def create_topic(self, name: str, partitions: int, timeout_ms: int) -> tuple[int, str | None]:
        """CreateTopics v4 of one topic (replication factor 1) answered by this broker: (error code, message).
        0 = created; 36 = TOPIC_ALREADY_EXISTS; 41 = NOT_CONTROLLER."""
        raw = name.encode()
        body = struct.pack(">i", 1) + struct.pack(">h", len(raw)) + raw
        body += struct.pack(">ihii", partitions, 1, 0, 0)  # partitions, RF, no assignments, no configs
        body += struct.pack(">i", timeout_ms) + b"\x00"  # validate_only = false
        r = self._request(19, 4, body, flexible=False)
        r.i32()  # throttle_time_ms
        for _ in range(r.i32()):
            r.string()
            err = r.i16()
            msg = r.string()
            return err, msg
        return -1, "empty CreateTopics response"

    def controller(self) -> int | None:
        """DescribeCluster v0 answered by this broker: its controller_id (None on an error code or -1)."""
        r = self._request(60, 0, b"\x00\x00", flexible=True)  # include_cluster_authorized_operations=false
        r.i32()  # throttle_time_ms
        err = r.i16()
        r.compact_string()  # error_message
        r.compact_string()  # cluster_id
        controller = r.i32()
        return controller if err == 0 and controller >= 0 else None


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _take(self, fmt: str):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def i8(self):
        return self._take(">b")

    def i16(self):
        return self._take(">h")

    def i32(self):
        return self._take(">i")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def compact_string(self):
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


def metadata_once(port: int, topics: list[str] | None, timeout: float = 5.0):
    """One broker's Metadata on a fresh connection, None when it cannot be reached."""
    conn = KafkaConn(port, timeout)
    try:
        return conn.metadata(topics)
    except OSError:
        return None
    finally:
        conn.close()


def controller_once(port: int, timeout: float = 2.0) -> int | None:
    """One broker's DescribeCluster controller_id on a fresh connection, None when unknown or unreachable."""
    conn = KafkaConn(port, timeout)
    try:
        return conn.controller()
    except OSError:
        return None
    finally:
        conn.close()


# --- the cluster ----------------------------------------------------------------------------------

class Node:
    def __init__(self, node_id: int, port: int, metrics_port: int, controller_port: int, work: Path):
        self.node_id, self.port, self.metrics_port, self.controller_port = node_id, port, metrics_port, controller_port
        self.data_dir = work / f"node{node_id}"
        self.log_dir = work / "logs"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.voters = ""
        self.extra_flags: list[str] = []
        self.extra_env: dict[str, str] = {}

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        addr = self.bootstrap
        return [str(strata_bin()), "broker", "--node-id", str(self.node_id), "--listen", addr,
                "--advertised-listener", addr, "--data-dir", str(self.data_dir),
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--controller-voters", self.voters,
                "--controller-listen", f"127.0.0.1:{self.controller_port}",
                "--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS),
                "--broker-heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS), *self.extra_flags]

    def spawn(self) -> None:
        assert not self.running()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        out = open(self.log_dir / f"node{self.node_id}-{self.starts}.log", "wb")
        env = dict(os.environ)
        # The broker's own default filter (openraft's per-group info lines would cost more than the
        # work measured); STRATA_LOG or RUST_LOG in the environment still override it.
        env.setdefault("NO_COLOR", "1")
        env.update(self.extra_env)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env)
        out.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_port(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode} while starting "
                                   f"(see {self.log_dir})")
            if port_open(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"node {self.node_id} did not listen on {self.port} within {timeout}s")

    def kill9(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"node {self.node_id} did not exit within {timeout}s of SIGTERM; SIGKILL")
                self.kill9()

    def controller_gauge(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r"^strata_controller_is_leader(?:\{[^}]*\})?\s+(\S+)$", text, re.M)
        return float(m.group(1)) if m else None


class Cluster:
    system = "strata"

    def __init__(self, work: Path, n: int = 3):
        ports = free_ports(3 * n)
        self.nodes = [Node(i + 1, ports[i], ports[n + i], ports[2 * n + i], work) for i in range(n)]
        voters = ",".join(f"{b.node_id}@127.0.0.1:{b.controller_port}" for b in self.nodes)
        for b in self.nodes:
            b.voters = voters

    def node(self, i: int) -> Node:
        return self.nodes[i - 1]

    def live(self) -> list[Node]:
        return [b for b in self.nodes if b.running()]

    def start_all(self, timeout: float = 60.0) -> None:
        for b in self.nodes:
            if not b.running():
                b.spawn()
        for b in self.nodes:
            b.wait_port(timeout)
        for b in self.nodes:
            self.wait_listed(b.node_id, timeout)

    def stop_all(self) -> None:
        for b in self.nodes:
            if b.running():
                b.proc.send_signal(signal.SIGCONT)
                b.proc.terminate()
        for b in self.nodes:
            b.terminate()

    def listed_by(self, node_id: int, via: Node) -> bool | None:
        md = metadata_once(via.port, [])
        return None if md is None else node_id in md[0]

    def wait_listed(self, node_id: int, timeout: float = 60.0) -> float:
        """Until every live node's Metadata lists `node_id`; returns the seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if all(self.listed_by(node_id, b) for b in self.live()):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"node {node_id} not listed by every live node within {timeout}s")

    def controller(self, timeout: float = 30.0, exclude=()) -> int:
        """Active controller: DescribeCluster answered by each live node in turn, else the leader gauge."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for b in self.live():
                c = controller_once(b.port)
                if c is not None and c not in exclude:
                    return c
            gauges = [b.node_id for b in self.live() if b.controller_gauge() == 1.0]
            if len(gauges) == 1 and gauges[0] not in exclude:
                return gauges[0]
            time.sleep(0.1)
        raise RuntimeError("no active controller found")


# --- client helpers -------------------------------------------------------------------------------

def admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "reconnect.backoff.ms": 20,
                        "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 20})


def create_topics(adm, names: list[str], partitions: int, timeout: float,
                  request_timeout: float | None = None) -> str | None:
    """One CreateTopics request; None on success (TOPIC_ALREADY_EXISTS included: an earlier attempt that
    timed out on our side went through), else the error text."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    request_timeout = request_timeout or timeout + 5
    futs = adm.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
                             operation_timeout=timeout, request_timeout=request_timeout)
    errors = []
    for name, f in futs.items():
        try:
            f.result(timeout=request_timeout + 5)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                errors.append(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"{name}: {e!r}")
    return "; ".join(errors) if errors else None


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# --- sections -------------------------------------------------------------------------------------

def bench_failover(c: Cluster, rounds: int, run_id: str) -> list[dict]:
    """kill -9 of the active controller, `rounds` times. From the kill on, three threads:
    - DescribeCluster sent to one live broker (raw, kept-open connection, every 20 ms) until it names a
      live controller;
    - CreateTopics (1 partition) from a new confluent-kafka AdminClient bootstrapped on that broker,
      retried until it succeeds (librdkafka sends it to the controller that broker's Metadata names);
    - CreateTopics (1 partition) sent raw to that broker, retried until it succeeds;
    - Metadata of that broker until the killed node is no longer listed (fenced).
    Then the node is restarted; time until every node lists it again."""
    results = []
    for rnd in range(1, rounds + 1):
        old = c.controller()
        live = [b for b in c.nodes if b.node_id != old and b.running()]
        watcher = live[0]
        res = {"round": rnd, "killed": old, "via": watcher.node_id, "create_errors": 0}
        done = threading.Event()

        def elect():
            conn = KafkaConn(watcher.port, 2.0)
            try:
                while not done.is_set() and time.monotonic() - t0 < 60:
                    try:
                        cid = conn.controller()
                    except OSError:
                        cid = None
                    if cid is not None and cid != old:
                        res["elected_s"] = time.monotonic() - t0
                        res["new"] = cid
                        return
                    time.sleep(0.02)
            finally:
                conn.close()

        def create():
            # Short timeouts so a request stuck on the dead controller is retried soon; a retry that
            # finds the topic created by a timed-out attempt counts as success then.
            name = f"bench-failover-{run_id}-{rnd}"
            while not done.is_set() and time.monotonic() - t0 < 60:
                adm = admin(watcher.bootstrap)  # new client: no cached controller
                err = create_topics(adm, [name], 1, 1.0, request_timeout=1.5)
                if err is None:
                    res["created_s"] = time.monotonic() - t0
                    return
                res["create_errors"] += 1
                res["last_error"] = err
                time.sleep(0.02)

        def create_raw():
            # The same, but sent to the live broker itself (it must forward to the controller).
            name = f"bench-failover-raw-{run_id}-{rnd}"
            conn = KafkaConn(watcher.port, 3.0)
            try:
                while not done.is_set() and time.monotonic() - t0 < 60:
                    try:
                        err, msg = conn.create_topic(name, 1, 1000)
                    except OSError as e:
                        err, msg = -1, repr(e)
                    if err in (0, 36):
                        res["raw_created_s"] = time.monotonic() - t0
                        return
                    res["raw_errors"] = res.get("raw_errors", 0) + 1
                    res["raw_last_error"] = f"error {err}: {msg}"
                    if err == 41:  # NOT_CONTROLLER: this broker does not forward; retrying is pointless
                        return
                    time.sleep(0.02)
            finally:
                conn.close()

        def fenced():
            conn = KafkaConn(watcher.port, 5.0)
            try:
                while not done.is_set() and time.monotonic() - t0 < 60:
                    try:
                        brokers, _, _ = conn.metadata([])
                    except OSError:
                        time.sleep(0.05)
                        continue
                    if old not in brokers:
                        res["fenced_s"] = time.monotonic() - t0
                        return
                    time.sleep(0.02)
            finally:
                conn.close()

        threads = [threading.Thread(target=f, daemon=True) for f in (elect, create, create_raw, fenced)]
        t0 = time.monotonic()
        c.node(old).kill9()
        for th in threads:
            th.start()
        for th in threads:
            th.join(70)
        done.set()
        log(f"failover round {rnd}: killed {old}, {res}")
        t1 = time.monotonic()
        c.node(old).spawn()
        c.node(old).wait_port(60)
        c.wait_listed(old, 60)
        res["rejoined_s"] = time.monotonic() - t1
        # Every node listed again and quiet for a moment before the next round.
        time.sleep(1.0)
        results.append(res)
    return results


def bench_propagation(c: Cluster, count: int, run_id: str) -> dict:
    creator = c.node(1)
    watchers = [b for b in c.nodes if b.node_id != creator.node_id]
    adm = admin(creator.bootstrap)
    adm.list_topics(timeout=10)
    delays = {b.node_id: {"ack": [], "send": []} for b in watchers}
    create_ms = []
    conns = {b.node_id: KafkaConn(b.port) for b in watchers}
    for k in range(count):
        topic = f"bench-prop-{run_id}-{k:02d}"
        seen: dict[int, float] = {}
        ready = threading.Barrier(len(watchers) + 1)

        def poll(b: Node):
            conn = conns[b.node_id]
            ready.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    _, _, topics = conn.metadata([topic])
                except OSError:
                    time.sleep(0.01)
                    continue
                err, parts = topics.get(topic, (-1, {}))
                if err == 0 and parts and min(parts.values()) >= 0:
                    seen[b.node_id] = time.monotonic()
                    return
                time.sleep(0.002)

        threads = [threading.Thread(target=poll, args=(b,), daemon=True) for b in watchers]
        for th in threads:
            th.start()
        ready.wait()
        t_send = time.monotonic()
        err = create_topics(adm, [topic], 1, 30.0)
        t_ack = time.monotonic()
        if err is not None:
            raise RuntimeError(f"CreateTopics {topic} failed: {err}")
        create_ms.append((t_ack - t_send) * 1000)
        for th in threads:
            th.join(65)
        for b in watchers:
            if b.node_id not in seen:
                raise RuntimeError(f"{topic} never appeared on node {b.node_id}")
            delays[b.node_id]["ack"].append((seen[b.node_id] - t_ack) * 1000)
            delays[b.node_id]["send"].append((seen[b.node_id] - t_send) * 1000)
    for conn in conns.values():
        conn.close()
    log(f"propagation: {delays}")
    return {"delays": delays, "create_ms": create_ms, "count": count}


def bench_partitions(c: Cluster, topics: int, partitions: int, batch: int, run_id: str) -> dict:
    names = [f"bench-parts-{run_id}-{i:04d}" for i in range(topics)]
    adm = admin(c.node(1).bootstrap)
    adm.list_topics(timeout=10)
    total = topics * partitions
    batch_s = []
    t0 = time.monotonic()
    for i in range(0, topics, batch):
        tb = time.monotonic()
        err = create_topics(adm, names[i:i + batch], partitions, 300.0)
        if err is not None:
            raise RuntimeError(f"CreateTopics of {names[i]}..: {err}")
        batch_s.append(time.monotonic() - tb)
        log(f"  created {min(i + batch, topics) * partitions}/{total} partitions after {time.monotonic() - t0:.1f}s")
    created_s = time.monotonic() - t0
    wanted = set(names)
    visible: dict[int, float] = {}
    leaders_per_node: dict[int, int] = {}

    def poll(b: Node):
        conn = KafkaConn(b.port, 60.0)
        try:
            while time.monotonic() - t0 < 900:
                try:
                    _, _, md = conn.metadata(None)
                except OSError:
                    time.sleep(0.2)
                    continue
                led = 0
                counts: dict[int, int] = {}
                for name in wanted:
                    err, parts = md.get(name, (-1, {}))
                    if err == 0:
                        for leader in parts.values():
                            if leader >= 0:
                                led += 1
                                counts[leader] = counts.get(leader, 0) + 1
                if led == total:
                    visible[b.node_id] = time.monotonic() - t0
                    if b.node_id == 1:
                        leaders_per_node.update(counts)
                    return
                time.sleep(0.05)
        finally:
            conn.close()

    threads = [threading.Thread(target=poll, args=(b,), daemon=True) for b in c.nodes]
    for th in threads:
        th.start()
    for th in threads:
        th.join(960)
    missing = [b.node_id for b in c.nodes if b.node_id not in visible]
    if missing:
        raise RuntimeError(f"nodes {missing} never showed all {total} partitions with leaders")
    res = {"topics": topics, "partitions": partitions, "batch": batch, "total": total, "created_s": created_s,
           "batch_s": batch_s, "visible": visible, "leaders_per_node": leaders_per_node}
    log(f"partitions: {res}")
    return res


# --- report ---------------------------------------------------------------------------------------

def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> str:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_gib = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    u = platform.uname()
    return f"{os.cpu_count()} cores ({model}), {mem_gib}, {u.system} {u.release}"


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def fmt_s(v) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def report(args, c: Cluster, failover, propagation, parts, load_before: str, invocation: str) -> str:
    out = []
    commit = sh(["git", "rev-parse", "--short", "HEAD"]) or "none"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0 if commit != "none" else False
    warn = 0
    for f in sorted((Path(args.work_dir) / "logs").glob("*.log")):
        warn += len(re.findall(r" (WARN|ERROR) ", f.read_text(errors="replace")))
    what = []
    if failover:
        what.append("controller failover")
    if parts:
        what.append(f"creating {parts['total']:,} partitions")
    if propagation:
        what.append("metadata propagation")
    out.append(f"### {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} 3-node cluster: {', '.join(what)}")
    out.append("")
    out.append(f"- commit: `{commit}`{' (with uncommitted changes)' if dirty else ''}")
    out.append(f"- machine: {machine()}; the three nodes and the clients on this one machine")
    out.append(f"- binary: `{strata_bin()}`; 3 nodes, each broker + controller voter (combined mode), "
               f"broker session timeout {SESSION_TIMEOUT_MS} ms, heartbeat interval {HEARTBEAT_INTERVAL_MS} ms, "
               f"replication factor 1")
    out.append(f"- load average (1/5/15 min) before: {load_before}, after: {loadavg()}")
    out.append(f"- node log lines at WARN/ERROR: {warn}")
    out.append("")
    if failover:
        out.append("Controller failover (kill -9 of the active controller; clocks start at the kill. "
                   "DescribeCluster: raw requests to one live broker every 20 ms. CreateTopics: a new "
                   "confluent-kafka AdminClient per attempt, bootstrapped on that broker, retried from the kill "
                   "on (librdkafka sends it to the controller named in that broker's Metadata). Fenced: that "
                   "broker's Metadata stops listing the killed node):")
        out.append("")
        out.append("| round | killed -> new controller | DescribeCluster names the new controller "
                   "| first CreateTopics OK (confluent-kafka) | failed attempts before | first CreateTopics OK "
                   "(raw, to the live broker) | killed node fenced | restart -> listed by all |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in failover:
            out.append(f"| {r['round']} | {r['killed']} -> {r.get('new', '?')} (asked node {r['via']}) | "
                       f"{fmt_s(r.get('elected_s'))} | {fmt_s(r.get('created_s'))} | {r['create_errors']} | "
                       f"{fmt_s(r.get('raw_created_s'))} | {fmt_s(r.get('fenced_s'))} | "
                       f"{fmt_s(r.get('rejoined_s'))} |")

        def med(key):
            vals = [r[key] for r in failover if r.get(key) is not None]
            return statistics.median(vals) if vals else None
        out.append(f"| **median** | | **{fmt_s(med('elected_s'))}** | **{fmt_s(med('created_s'))}** | | "
                   f"**{fmt_s(med('raw_created_s'))}** | {fmt_s(med('fenced_s'))} | {fmt_s(med('rejoined_s'))} |")
        for key, label in (("last_error", "confluent-kafka"), ("raw_last_error", "raw")):
            errs = [r[key] for r in failover if r.get(key)]
            if errs:
                out.append("")
                out.append(f"Last failed CreateTopics ({label}) during failover: `{errs[-1][:300]}`")
        out.append("")
    if propagation:
        out.append(f"Metadata propagation ({propagation['count']} topics of 1 partition created one at a time "
                   f"through node 1; nodes 2 and 3 polled with Metadata(topic) every ~2 ms on kept-open "
                   f"connections until the topic has a leader; negative = seen before the CreateTopics response "
                   f"arrived):")
        out.append("")
        out.append("| node | p50 after CreateTopics response | max | p50 after request sent | max |")
        out.append("|---|---:|---:|---:|---:|")
        for node_id, d in sorted(propagation["delays"].items()):
            out.append(f"| {node_id} | {pct(d['ack'], 0.5):.1f} ms | {max(d['ack']):.1f} ms | "
                       f"{pct(d['send'], 0.5):.1f} ms | {max(d['send']):.1f} ms |")
        allack = [v for d in propagation["delays"].values() for v in d["ack"]]
        out.append(f"| **2 and 3** | **{pct(allack, 0.5):.1f} ms** | **{max(allack):.1f} ms** | | |")
        cm = propagation["create_ms"]
        out.append("")
        out.append(f"CreateTopics (1 partition) through node 1: p50 {pct(cm, 0.5):.1f} ms, max {max(cm):.1f} ms.")
        out.append("")
    if parts:
        bs = parts["batch_s"]
        out.append(f"{parts['total']:,} partitions ({parts['topics']} topics x {parts['partitions']} partitions, "
                   f"CreateTopics with {parts['batch']} topics per request, one request at a time, through node 1):")
        out.append("")
        out.append("| figure | value |")
        out.append("|---|---|")
        out.append(f"| every CreateTopics returned | **{parts['created_s']:.2f} s** "
                   f"({parts['total'] / parts['created_s']:,.0f} partitions/s) |")
        out.append(f"| CreateTopics request ({parts['batch'] * parts['partitions']} partitions) p50 / max | "
                   f"{pct(bs, 0.5):.2f} s / {max(bs):.2f} s |")
        for node_id, t in sorted(parts["visible"].items()):
            out.append(f"| node {node_id}'s Metadata shows all {parts['total']:,} partitions with a leader | {t:.2f} s |")
        out.append(f"| all nodes | **{max(parts['visible'].values()):.2f} s** |")
        lp = parts["leaders_per_node"]
        out.append(f"| leaders per node | {', '.join(f'{k}: {v:,}' for k, v in sorted(lp.items()))} |")
        out.append("")
    out.append("Commands:")
    out.append("")
    out.append("```sh")
    out.append(invocation)
    for b in c.nodes:
        out.append(shlex.join(b.command()))
    out.append("```")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------

def run(args) -> int:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        log("confluent-kafka is missing: run with ~/.cache/strata/venv/bin/python (bash infra/test-deps.sh)")
        return 1
    binary = strata_bin()
    if not binary.exists():
        log(f"{binary} is missing: cargo build --release -p strata-broker (or set STRATA_BIN)")
        return 1
    sections = set(args.only.split(",")) if args.only else {"failover", "propagation", "partitions"}
    unknown = sections - {"failover", "propagation", "partitions"}
    if unknown:
        log(f"unknown sections {sorted(unknown)}")
        return 2
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    invocation = args.invocation or shlex.join(["python3", "benchmarks/cluster_bench.py", *sys.argv[1:]])
    run_id = str(int(time.time()))
    load_before = loadavg()
    c = Cluster(work)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        log("+ " + "\n+ ".join(shlex.join(b.command()) for b in c.nodes))
        t = time.monotonic()
        c.start_all()
        log(f"cluster up in {time.monotonic() - t:.2f}s, controller {c.controller()}")
        failover = bench_failover(c, args.rounds, run_id) if "failover" in sections else None
        propagation = bench_propagation(c, args.propagation_topics, run_id) if "propagation" in sections else None
        parts = (bench_partitions(c, args.topics, args.partitions, args.batch, run_id)
                 if "partitions" in sections else None)
        text = report(args, c, failover, propagation, parts, load_before, invocation)
    finally:
        c.stop_all()
    print(text, flush=True)
    (work / "report.md").write_text(text + "\n")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start a 3-node cluster, measure, print the markdown report")
    r.add_argument("--work-dir", required=True, help="node data directories and logs go here")
    r.add_argument("--rounds", type=int, default=3, help="controller failover rounds (default 3)")
    r.add_argument("--topics", type=int, default=100, help="topics for the partitions section (default 100)")
    r.add_argument("--partitions", type=int, default=100, help="partitions per topic there (default 100)")
    r.add_argument("--batch", type=int, default=10, help="topics per CreateTopics request (default 10)")
    r.add_argument("--propagation-topics", type=int, default=20, help="topics for propagation (default 20)")
    r.add_argument("--only", default="", help="comma-separated subset of failover,propagation,partitions")
    r.add_argument("--invocation", default="", help="the command line to print in the report")
    sub.add_parser("free-port", help="print a free TCP port on 127.0.0.1")
    args = ap.parse_args(argv[1:])
    if args.cmd == "free-port":
        print(free_ports(1)[0])
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
