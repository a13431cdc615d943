"""Shared fixtures for the real-client suite: a `Broker` that runs the `strata` binary on free ports.

Every test gets its own broker process, data directory and ports, so tests never share state. The broker's
stderr goes to a file; when a test fails, the tail of every broker it started is attached to the report.

Environment:
  STRATA_BIN         path of the broker binary (default: $CARGO_TARGET_DIR or <repo>/target, then
                     debug/strata)
  STRATA_TEST_SEED   seed for randomized tests (default: random; printed in the header and on failure)
  STRATA_LONG_TESTS  1 to scale up fault-injection runs
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """One `strata broker` process with a fixed data directory and ports across restarts."""

    def __init__(self, data_dir: Path, log_dir: Path, flags: list[str] | None = None,
                 env: dict[str, str] | None = None, name: str = "broker"):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.flags = list(flags or [])
        self.extra_env = dict(env or {})
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        while self.metrics_port == self.port:
            self.metrics_port = free_port()
        self.node_id = 0
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stderr_path: Path | None = None
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
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        binary = strata_bin()
        if not binary.exists():
            raise BrokerError(f"broker binary {binary} missing: run cargo build -p strata-broker --bin strata")
        self.starts += 1
        self.stderr_path = self.log_dir / f"{self.name}-stderr-{self.starts}.log"
        self._stderr_file = open(self.stderr_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("NO_COLOR", "1")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.extra_env)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._stderr_file,
                                     stderr=subprocess.STDOUT, env=env)
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

    def stop(self, timeout: float = STRATA_STOP_TIMEOUT_S, check: bool = True) -> int:
        """SIGTERM, wait for exit; asserts a clean shutdown (exit 0) unless check=False."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
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
        """SIGKILL: the process gets no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
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
            report.sections.append((f"{broker.name} output (tail of {broker.stderr_path})", broker.stderr_tail()))
        seed = getattr(item, "_strata_seed", None)
        if seed is not None:
            report.sections.append(("seed", f"rerun with STRATA_TEST_SEED={_SEED} (this test's seed {seed})"))


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
    request.node._strata_brokers = brokers

    def make(*flags: str, env: dict[str, str] | None = None, start: bool = True) -> Broker:
        idx = len(brokers)
        b = Broker(tmp_path / f"data-{idx}", tmp_path / "logs", list(flags), env, name=f"broker{idx}")
        brokers.append(b)
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
