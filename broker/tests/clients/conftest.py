"""Shared fixtures for the real-client suite: a `Broker` that runs the `strata` binary on free ports.

Every test gets its own broker process, data directory and ports, so tests never share state. The broker's
stderr goes to a file; when a test fails, the tail of every broker it started is attached to the report.

`cluster_factory` runs several `strata broker` processes as one cluster (combined broker + controller
voter per node, an embedded metadata quorum); see `Cluster`.

Environment:
  STRATA_BIN         path of the broker binary (default: $CARGO_TARGET_DIR or <repo>/target, then
                     debug/strata)
  STRATA_TEST_SEED   seed for randomized tests (default: random; printed in the header and on failure)
  STRATA_LONG_TESTS  1 to scale up fault-injection runs
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target") / "debug" / "strata"
LONG_TESTS = os.environ.get("STRATA_LONG_TESTS", "") not in ("", "0", "false")

_SEED = int(os.environ.get("STRATA_TEST_SEED") or random.SystemRandom().randrange(1, 2**31))

STRATA_STOP_TIMEOUT_S = 30.0
STRATA_START_TIMEOUT_S = 30.0


def strata_bin() -> Path:
    """Path of the broker binary under test."""
    return Path(os.environ.get("STRATA_BIN", str(DEFAULT_BIN))).resolve()


def _port_pool() -> range:
    """Ports the tests hand out: below the kernel's ephemeral range (net.ipv4.ip_local_port_range), so an
    outgoing connection cannot take a port between the moment a test picks it and the moment a broker
    binds it (the ephemeral range is where bind(port 0) and connect() both draw from; a three-broker
    cluster opens dozens of connections while its later nodes are still starting)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - 10000 >= 2000:
        return range(10000, low)
    return range(high + 1, 65536)


_HANDED_OUT: set[int] = set()
_PORT_RNG = random.Random(os.getpid() ^ int(time.time() * 1000))


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports on 127.0.0.1 that nothing listens on right now, outside the ephemeral range,
    never handed out before in this process (so a port in TIME_WAIT from an earlier test is not reused)."""
    pool = _port_pool()
    ports: list[int] = []
    for _ in range(50 * n + 100):
        if len(ports) == n:
            break
        port = _PORT_RNG.choice(pool)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        ports.append(port)
    if len(ports) < n:
        raise RuntimeError(f"found only {len(ports)} of {n} free ports in {pool}")
    return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (see `free_ports`)."""
    return free_ports(1)[0]


def port_open(port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class BrokerError(AssertionError):
    """The broker process misbehaved (did not start, did not stop cleanly)."""


class Broker:
    """One `strata broker` process with a fixed data directory and ports across restarts.

    `node_id` (default 0, a single-node broker) and `flags` (extra command-line flags) are fixed at
    construction; `port`/`metrics_port` default to free ports. `start()` = `spawn()` + `wait_ready()`."""

    def __init__(self, data_dir: Path, log_dir: Path, flags: list[str] | None = None,
                 env: dict[str, str] | None = None, name: str = "broker", node_id: int = 0,
                 port: int | None = None, metrics_port: int | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.flags = list(flags or [])
        self.extra_env = dict(env or {})
        self.name = name
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.node_id = node_id
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.paused = False
        self.stderr_path: Path | None = None
        self.stderr_paths: list[Path] = []
        self._stderr_file = None

    @property
    def bootstrap(self) -> str:
        """bootstrap.servers value for clients."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line used to start the broker."""
        addr = f"127.0.0.1:{self.port}"
        return [
            str(strata_bin()), "broker",
            "--listen", addr,
            "--advertised-listener", addr,
            "--data-dir", str(self.data_dir),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--node-id", str(self.node_id),
            *self.flags,
        ]

    def start(self, timeout: float = STRATA_START_TIMEOUT_S) -> "Broker":
        """Starts the process and waits until its Kafka port accepts connections."""
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> "Broker":
        """Starts the process without waiting for anything (a cluster node binds its Kafka port only
        once it registered with the quorum, so every node must be spawned before any is ready)."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        binary = strata_bin()
        if not binary.exists():
            raise BrokerError(f"broker binary {binary} missing: run cargo build -p strata-broker --bin strata")
        self._close_log()
        self.starts += 1
        self.paused = False
        self.stderr_path = self.log_dir / f"{self.name}-stderr-{self.starts}.log"
        self.stderr_paths.append(self.stderr_path)
        self._stderr_file = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("NO_COLOR", "1")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._stderr_file,
                                     stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, timeout: float = STRATA_START_TIMEOUT_S) -> "Broker":
        """Waits until the spawned process accepts connections on its Kafka port; SIGKILLs it and raises
        if it exits first or the port stays closed for `timeout` seconds."""
        assert self.proc is not None, "broker never spawned"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"{self.name} exited with {self.proc.returncode} while starting:\n"
                                  f"{self.stderr_tail()}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        self.kill9()
        raise BrokerError(f"{self.name} did not accept connections on {self.port} within {timeout}s:\n"
                          f"{self.stderr_tail()}")

    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process stays alive (sockets open) but answers nothing, heartbeats included."""
        assert self.running(), f"{self.name} is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self) -> None:
        """Sends SIGTERM (after SIGCONT when paused) without waiting; see stop()."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STRATA_STOP_TIMEOUT_S, check: bool = True) -> int:
        """SIGTERM, wait for exit; asserts a clean shutdown (exit 0) unless check=False."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_log()
                raise BrokerError(f"{self.name} did not exit within {timeout}s of SIGTERM:\n{self.stderr_tail()}")
        rc = self.proc.returncode
        self._close_log()
        if check and rc != 0:
            raise BrokerError(f"{self.name} exited with {rc} after SIGTERM, expected 0:\n{self.stderr_tail()}")
        return rc

    def kill9(self) -> None:
        """SIGKILL (after SIGCONT when paused): the process gets no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.kill()
            self.proc.wait()
        self.paused = False
        self._close_log()

    def restart(self, kill: bool = False) -> "Broker":
        """Stops (SIGTERM, or SIGKILL when kill=True) and starts again on the same data dir and ports."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def metrics(self) -> str:
        """The Prometheus text exposition from the metrics listener."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stderr_tail(self, lines: int = 60) -> str:
        """The last lines the current (or last) process wrote."""
        if self.stderr_path is None or not self.stderr_path.exists():
            return "(no broker output)"
        text = self.stderr_path.read_bytes().decode(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _close_log(self) -> None:
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None


def pytest_report_header(config):
    return [f"strata: binary={strata_bin()} seed={_SEED} (STRATA_TEST_SEED) long={LONG_TESTS}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for broker in getattr(item, "_strata_brokers", []):
            # Earlier runs of a restarted broker too (a cluster test kills and restarts nodes).
            for path in broker.stderr_paths[:-1][-2:]:
                report.sections.append((f"{broker.name} earlier run (tail of {path})",
                                        _file_tail(path, 30)))
            report.sections.append((f"{broker.name} output (tail of {broker.stderr_path})", broker.stderr_tail()))
        seed = getattr(item, "_strata_seed", None)
        if seed is not None:
            report.sections.append(("seed", f"rerun with STRATA_TEST_SEED={_SEED} (this test's seed {seed})"))


def _file_tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_bytes().decode(errors="replace").splitlines()[-lines:])


def _reported_brokers(request) -> list:
    """The list whose brokers' output is attached to a failing test's report (shared by the fixtures)."""
    brokers = getattr(request.node, "_strata_brokers", None)
    if brokers is None:
        brokers = []
        request.node._strata_brokers = brokers
    return brokers


@pytest.fixture
def rng(request) -> random.Random:
    """A Random seeded from the session seed and the test's name; the seed is printed."""
    seed = (_SEED * 1_000_003 + sum(map(ord, request.node.nodeid))) % (2**31)
    request.node._strata_seed = seed
    print(f"strata test seed: {seed} (session STRATA_TEST_SEED={_SEED})")
    return random.Random(seed)


@pytest.fixture
def broker_factory(request, tmp_path):
    """Returns make(*flags, env=None, start=True) -> Broker; every broker is torn down after the test."""
    brokers: list[Broker] = []
    reported = _reported_brokers(request)

    def make(*flags: str, env: dict[str, str] | None = None, start: bool = True) -> Broker:
        idx = len(brokers)
        b = Broker(tmp_path / f"data-{idx}", tmp_path / "logs", list(flags), env, name=f"broker{idx}")
        brokers.append(b)
        reported.append(b)
        if start:
            b.start()
        return b

    yield make
    errors = []
    for b in brokers:
        if b.running():
            try:
                b.stop()
            except BrokerError as e:
                errors.append(str(e))
    if errors:
        pytest.fail("broker did not shut down cleanly:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A running broker with default flags."""
    return broker_factory()


@pytest.fixture
def topic_name(request, rng) -> str:
    """A topic name unique to this test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"t-{base}-{rng.randrange(16**6):06x}"


# --- A cluster of `strata broker` processes with an embedded metadata quorum ----------------------------

CLUSTER_SESSION_TIMEOUT_MS = 3000
CLUSTER_HEARTBEAT_INTERVAL_MS = 500


@dataclass
class MetadataView:
    """One node's own answer to a Metadata v4 request (sent on a socket to that node, so it is exactly
    that broker's view, never a client's cache or another broker's answer)."""
    node_id: int                                   # the node that answered
    brokers: dict[int, tuple[str, int]]            # unfenced brokers: id -> (host, port)
    controller_id: int
    cluster_id: str | None
    topic_errors: dict[str, int]                   # topic -> error code
    internal: set[str]                             # topics flagged is_internal
    leaders: dict[str, dict[int, int]]             # topic -> partition -> leader id (-1: none)

    def led_by(self, topic: str, node_id: int) -> set[int]:
        """Partitions of `topic` this view says `node_id` leads."""
        return {p for p, leader in self.leaders.get(topic, {}).items() if leader == node_id}


def _raw_request(port: int, request, timeout: float):
    """One kafka-python protocol request on a fresh connection to 127.0.0.1:port (socket timeout
    `timeout`); returns the decoded response."""
    from kafka.protocol.parser import KafkaProtocol

    proto = KafkaProtocol(client_id="strata-cluster-tests")
    proto.send_request(request)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(proto.send_bytes())
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection instead of answering")
            responses = proto.receive_bytes(chunk)
            if responses:
                return responses[0][1]


class Cluster:
    """`n` `strata broker` processes forming one cluster: node ids 1..n, each a broker and a voter of the
    metadata quorum (combined mode), on fixed Kafka, metrics and controller ports across restarts.

    Nodes are `Broker` objects (`.nodes`, or `.node(i)` by node id) with an extra `controller_port`.
    Every node gets `--controller-voters 1@127.0.0.1:C1,...`, its own `--controller-listen`,
    `--broker-session-timeout-ms 3000` and `--broker-heartbeat-interval-ms 500`, then `flags`.
    A node binds its Kafka port only after it registered with the quorum, so `start_all()` spawns every
    node before waiting for any.
    """

    def __init__(self, root: Path, log_dir: Path, n: int = 3, flags: list[str] | None = None,
                 env: dict[str, str] | None = None, name_prefix: str = "",
                 session_timeout_ms: int = CLUSTER_SESSION_TIMEOUT_MS,
                 heartbeat_interval_ms: int = CLUSTER_HEARTBEAT_INTERVAL_MS):
        assert n >= 1
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        ports = free_ports(3 * n)
        kafka_ports, metrics_ports, controller_ports = ports[:n], ports[n:2 * n], ports[2 * n:]
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{controller_ports[i]}" for i in range(n))
        self.nodes: list[Broker] = []
        for i in range(n):
            node_id = i + 1
            node_flags = [
                "--controller-voters", self.voters,
                "--controller-listen", f"127.0.0.1:{controller_ports[i]}",
                "--broker-session-timeout-ms", str(session_timeout_ms),
                "--broker-heartbeat-interval-ms", str(heartbeat_interval_ms),
                *(flags or []),
            ]
            b = Broker(Path(root) / f"node{node_id}", log_dir, node_flags, env, name=f"{name_prefix}node{node_id}",
                       node_id=node_id, port=kafka_ports[i], metrics_port=metrics_ports[i])
            b.controller_port = controller_ports[i]
            self.nodes.append(b)

    # --- addressing ---------------------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        return [b.node_id for b in self.nodes]

    def node(self, node_id: int) -> Broker:
        """The node with this id (1-based)."""
        b = self.nodes[node_id - 1]
        assert b.node_id == node_id
        return b

    @property
    def bootstraps(self) -> list[str]:
        """One bootstrap.servers value per node, in node-id order."""
        return [b.bootstrap for b in self.nodes]

    @property
    def bootstrap_all(self) -> str:
        """bootstrap.servers listing every node."""
        return ",".join(self.bootstraps)

    def live_ids(self) -> list[int]:
        """Nodes whose process runs and is not paused."""
        return [b.node_id for b in self.nodes if b.running() and not b.paused]

    def any_live(self, exclude=()) -> Broker:
        ids = [i for i in self.live_ids() if i not in exclude]
        assert ids, "no live node"
        return self.node(ids[0])

    # --- process control ----------------------------------------------------------------------------

    def start_all(self, timeout: float = STRATA_START_TIMEOUT_S) -> "Cluster":
        """Spawns every node that is not running, waits for every Kafka port, then until every node's
        Metadata lists all nodes (all registered and unfenced)."""
        spawned = [b for b in self.nodes if not b.running()]
        for b in spawned:
            b.spawn()
        deadline = time.monotonic() + timeout
        try:
            for b in spawned:
                b.wait_ready(max(1.0, deadline - time.monotonic()))
        except BrokerError:
            for b in spawned:
                b.kill9()
            raise
        self.wait_brokers(set(self.live_ids()), timeout=max(5.0, deadline - time.monotonic()))
        return self

    def stop_all(self, timeout: float = STRATA_STOP_TIMEOUT_S, check: bool = True) -> list[str]:
        """SIGTERM to every running node at once (SIGCONT first for paused ones), waits for all; nodes still
        alive after `timeout` are SIGKILLed. Raises BrokerError (check=True) or returns the problems: a
        node that did not exit in time or exited non-zero."""
        running = [b for b in self.nodes if b.running()]
        for b in running:
            b.terminate()
        deadline = time.monotonic() + timeout
        errors = []
        for b in running:
            try:
                b.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                b.kill9()
                errors.append(f"{b.name} did not exit within {timeout}s of SIGTERM:\n{b.stderr_tail()}")
                continue
            b._close_log()
            if b.proc.returncode != 0:
                errors.append(f"{b.name} exited with {b.proc.returncode} after SIGTERM, expected 0:\n"
                              f"{b.stderr_tail()}")
        if check and errors:
            raise BrokerError("\n".join(errors))
        return errors

    def kill9(self, node_id: int) -> None:
        """SIGKILL one node (SIGCONT first when paused)."""
        self.node(node_id).kill9()

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: alive, sockets open, silent (no heartbeats, no answers)."""
        self.node(node_id).pause()

    def resume(self, node_id: int) -> None:
        """SIGCONT one node."""
        self.node(node_id).resume()

    def restart(self, node_id: int, kill: bool = False, wait: bool = True,
                timeout: float = STRATA_START_TIMEOUT_S) -> Broker:
        """Starts the node again on the same data dir and ports (stopping it first if it runs: SIGTERM, or
        SIGKILL with kill=True). With wait=True, until its Kafka port is open and every live node lists it
        (registered and unfenced)."""
        b = self.node(node_id)
        if b.running():
            if kill:
                b.kill9()
            else:
                b.stop()
        b.spawn()
        if wait:
            b.wait_ready(timeout)
            self.wait_unfenced(node_id, timeout=timeout)
        return b

    def shutdown(self) -> list[str]:
        """Teardown: paused nodes get SIGCONT + SIGKILL, the others SIGTERM (SIGKILL after the stop
        timeout). Returns the unclean exits of the SIGTERMed ones."""
        for b in self.nodes:
            if b.paused:
                b.kill9()
        return self.stop_all(check=False)

    # --- what the cluster says ----------------------------------------------------------------------

    def metadata(self, via: int, topics: list[str] | None = None, timeout: float = 5.0) -> MetadataView | None:
        """Node `via`'s own Metadata v4 answer (all topics when `topics` is None; never auto-creates), or
        None when it cannot be reached or does not answer within `timeout`."""
        from kafka.protocol.metadata import MetadataRequest

        try:
            resp = _raw_request(self.node(via).port,
                                MetadataRequest[4](topics=topics, allow_auto_topic_creation=False), timeout)
        except (OSError, ConnectionError):
            return None
        view = MetadataView(node_id=via, brokers={b[0]: (b[1], b[2]) for b in resp.brokers},
                            controller_id=resp.controller_id, cluster_id=resp.cluster_id, topic_errors={},
                            internal=set(), leaders={})
        for error, name, is_internal, parts in resp.topics:
            view.topic_errors[name] = error
            if is_internal:
                view.internal.add(name)
            view.leaders[name] = {p[1]: p[2] for p in parts}
        return view

    def broker_ids(self, via: int) -> set[int] | None:
        """Broker ids (unfenced brokers) in node `via`'s Metadata, None when it does not answer."""
        view = self.metadata(via, topics=[])
        return None if view is None else set(view.brokers)

    def wait_brokers(self, expected: set[int], via: list[int] | None = None,
                     timeout: float = 30.0) -> None:
        """Until the Metadata of every node in `via` (default: live nodes) lists exactly `expected`, each at
        its own advertised address."""
        from strata_helpers import wait_until

        def ok():
            for i in via or self.live_ids():
                view = self.metadata(i, topics=[])
                if view is None or set(view.brokers) != set(expected):
                    return False
                for b in expected:
                    if view.brokers[b] != ("127.0.0.1", self.node(b).port):
                        return False
            return True
        wait_until(ok, f"Metadata of nodes {via or self.live_ids()} to list brokers {sorted(expected)}",
                   timeout=timeout, interval=0.1)

    def wait_unfenced(self, node_id: int, via: list[int] | None = None, timeout: float = 30.0) -> None:
        """Until node `node_id` is in the broker list of every node in `via` (default: live nodes)."""
        from strata_helpers import wait_until

        wait_until(lambda: all(node_id in (self.broker_ids(i) or ()) for i in via or self.live_ids()),
                   f"node {node_id} to be listed (unfenced) by nodes {via or self.live_ids()}",
                   timeout=timeout, interval=0.1)

    def wait_fenced(self, node_id: int, via: list[int] | None = None, timeout: float = 30.0) -> None:
        """Until node `node_id` is missing from the broker list of every node in `via` (default: live nodes
        other than it); a node that does not answer does not count as agreeing."""
        from strata_helpers import wait_until

        nodes = via or [i for i in self.live_ids() if i != node_id]

        def ok():
            for i in nodes:
                ids = self.broker_ids(i)
                if ids is None or node_id in ids:
                    return False
            return True
        wait_until(ok, f"node {node_id} to be fenced (not listed) by nodes {nodes}", timeout=timeout, interval=0.1)

    def leaders(self, topic: str, via: int) -> dict[int, int] | None:
        """partition -> leader of `topic` in node `via`'s Metadata (None: no answer or topic error)."""
        view = self.metadata(via, topics=[topic])
        if view is None or view.topic_errors.get(topic, -1) != 0:
            return None
        return view.leaders.get(topic)

    def wait_topic(self, topic: str, partitions: int, via: list[int] | None = None,
                   timeout: float = 30.0) -> dict[int, int]:
        """Until every node in `via` (default: live nodes) shows `topic` with `partitions` partitions, each
        with a leader; returns partition -> leader (they must agree)."""
        from strata_helpers import wait_until

        nodes = via or self.live_ids()

        def ok():
            seen = []
            for i in nodes:
                lead = self.leaders(topic, i)
                if lead is None or sorted(lead) != list(range(partitions)) or min(lead.values()) < 0:
                    return None
                seen.append(lead)
            return seen if all(s == seen[0] for s in seen) else None
        return wait_until(ok, f"{topic} with {partitions} led partitions on nodes {nodes}",
                          timeout=timeout, interval=0.1)[0]

    def describe_controller(self, via: int, timeout: float = 5.0) -> int | None:
        """The controller id in DescribeCluster from a new confluent-kafka client bootstrapped on node `via`,
        or None (no answer, error, or no controller). librdkafka sends DescribeCluster to the controller
        that `via`'s Metadata names, so None also means "`via` still names a dead controller"."""
        from confluent_kafka.admin import AdminClient

        adm = AdminClient({"bootstrap.servers": self.node(via).bootstrap, "socket.timeout.ms": int(timeout * 1000),
                           "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
        try:
            desc = adm.describe_cluster(request_timeout=timeout).result(timeout=timeout + 2)
        except Exception:  # noqa: BLE001 - no answer is "unknown"
            return None
        if desc.controller is None or desc.controller.id < 0:
            return None
        return desc.controller.id

    def metrics_controller(self) -> int | None:
        """The one live node whose `strata_controller_is_leader` gauge is 1, else None."""
        leaders = []
        for i in self.live_ids():
            try:
                text = self.node(i).metrics()
            except OSError:
                continue
            m = re.search(r"^strata_controller_is_leader(?:\{[^}]*\})?\s+(\S+)$", text, re.M)
            if m and float(m.group(1)) == 1.0:
                leaders.append(i)
        return leaders[0] if len(leaders) == 1 else None

    def controller_id(self, via: int | None = None, exclude=(), timeout: float = 30.0) -> int:
        """The active controller: DescribeCluster through `via` (default: each live node in turn), falling
        back to the `strata_controller_is_leader` gauge; waits until an answer names a node not in
        `exclude`."""
        from strata_helpers import wait_until

        def ask():
            for i in [via] if via is not None else self.live_ids():
                c = self.describe_controller(i)
                if c is not None and c not in exclude:
                    return c
            c = self.metrics_controller()
            return c if c is not None and c not in exclude else None
        return wait_until(ask, f"an active controller (not in {list(exclude)})", timeout=timeout, interval=0.1)


@pytest.fixture
def cluster_factory(request, tmp_path):
    """Returns make(n=3, *flags, env=None, start=True) -> Cluster (started unless start=False). At teardown
    every node is stopped: SIGTERM (a clean exit 0 is asserted), paused nodes SIGCONT + SIGKILL."""
    clusters: list[Cluster] = []
    reported = _reported_brokers(request)

    def make(n: int = 3, *flags: str, env: dict[str, str] | None = None, start: bool = True) -> Cluster:
        idx = len(clusters)
        c = Cluster(tmp_path / f"cluster-{idx}", tmp_path / "logs", n, list(flags), env,
                    name_prefix="" if idx == 0 else f"c{idx}-")
        clusters.append(c)
        reported.extend(c.nodes)
        if start:
            c.start_all()
        return c

    yield make
    errors = []
    for c in clusters:
        errors.extend(c.shutdown())
    if errors:
        pytest.fail("cluster node did not shut down cleanly:\n" + "\n".join(errors), pytrace=False)


# --- S3-compatible servers for the tiered-storage tests --------------------------------------------------

CACHE_DIR = Path(os.environ.get("STRATA_CACHE") or Path.home() / ".cache" / "strata")
S3S_FS_BIN = Path(os.environ.get("STRATA_S3S_FS") or CACHE_DIR / "s3s-fs-0.14.1" / "bin" / "s3s-fs")
MOTO_BIN = Path(os.environ.get("STRATA_MOTO_SERVER") or CACHE_DIR / "venv" / "bin" / "moto_server")
S3_ACCESS_KEY = "strata-test-access"
S3_SECRET_KEY = "strata-test-secret-key-0123456789"
S3_BUCKET = "strata"


class S3Server:
    """An S3-compatible server process on loopback: `s3s-fs` (objects on disk, SigV4 checked) or moto's
    server (in memory, conditional puts enforced). Keeps its port (and s3s-fs its directory) across
    stop/start, so a restart is an outage, not a new store."""

    def __init__(self, kind: str, root: Path, log_dir: Path):
        assert kind in ("s3s", "moto")
        self.kind = kind
        self.root = Path(root)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "s3s":
            return [str(S3S_FS_BIN), "--host", "127.0.0.1", "--port", str(self.port),
                    "--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY, str(self.root)]
        return [str(MOTO_BIN), "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self, timeout: float = 30.0) -> "S3Server":
        binary = Path(self.command()[0])
        if not binary.exists():
            raise AssertionError(f"{binary} missing: run bash infra/test-deps.sh")
        if self.kind == "s3s":
            (self.root / S3_BUCKET).mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.log_path = self.log_dir / f"{self.kind}-{self.starts}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.kind} exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if port_open(self.port):
                if self.kind == "moto" and self.starts == 1:
                    self.client().create_bucket(Bucket=S3_BUCKET)
                return self
            time.sleep(0.05)
        raise AssertionError(f"{self.kind} did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def broker_flags(self, prefix: str = "cluster") -> list[str]:
        """Flags pointing a broker at this server."""
        return ["--object-store", f"s3://{S3_BUCKET}/{prefix}", "--object-store-endpoint", self.endpoint,
                "--object-store-region", "us-east-1", "--object-store-path-style", "true",
                "--object-store-allow-http", "true"]

    @staticmethod
    def broker_env() -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "AWS_REGION": "us-east-1"}

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` (listing through the S3 API)."""
        out: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=S3_BUCKET, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out


@pytest.fixture
def s3_factory(tmp_path):
    """Returns make(kind) -> a started S3Server ("s3s" or "moto"); all are killed after the test."""
    servers: list[S3Server] = []

    def make(kind: str = "s3s") -> S3Server:
        s = S3Server(kind, tmp_path / f"s3-{len(servers)}", tmp_path / "logs")
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.stop()
