"""kafkajs against `strata`: the node script produces and checks offsets; librdkafka reads the records back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from strata_helpers import consume

HERE = Path(__file__).resolve().parent
DEFAULT_NODE_PATH = Path.home() / ".cache" / "strata" / "node" / "node_modules"


def _node_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in env.get("NODE_PATH", "").split(os.pathsep) if p]
    if str(DEFAULT_NODE_PATH) not in paths:
        paths.append(str(DEFAULT_NODE_PATH))
    env["NODE_PATH"] = os.pathsep.join(paths)
    return env


def _kafkajs_available() -> bool:
    if shutil.which("node") is None:
        return False
    r = subprocess.run(["node", "-e", "require('kafkajs')"], env=_node_env(), capture_output=True)
    return r.returncode == 0


pytestmark = pytest.mark.skipif(not _kafkajs_available(), reason="node or kafkajs missing (infra/test-deps.sh)")


def test_kafkajs_roundtrip(broker, topic_name):
    r = subprocess.run(["node", str(HERE / "kafkajs_roundtrip.js"), broker.bootstrap, topic_name],
                       env=_node_env(), capture_output=True, timeout=120)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"kafkajs script exited {r.returncode}:\nstdout:\n{out}\nstderr:\n{err}"
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"no RESULT line in kafkajs output:\n{out}"
    result = json.loads(lines[0][len("RESULT "):])
    records = result["records"]
    assert len(records) == 120

    for p in (0, 1):
        sent = [rec for rec in records if rec["partition"] == p]
        got = consume(broker.bootstrap, topic_name, [p])
        assert [m.offset() for m in got] == [rec["offset"] for rec in sent]
        for m, rec in zip(got, sent):
            assert m.key() == rec["key"].encode()
            assert m.value() == rec["value"].encode()
            assert m.timestamp() == (1, rec["timestamp"])
            assert m.headers() == [(k, v.encode()) for k, v in rec["headers"]]


def test_kafkajs_group_consumer(broker_factory, topic_name):
    broker = broker_factory("--group-initial-rebalance-delay-ms", "0")
    r = subprocess.run(["node", str(HERE / "kafkajs_group.js"), broker.bootstrap, topic_name, "g-kafkajs"],
                       env=_node_env(), capture_output=True, timeout=120)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"kafkajs script exited {r.returncode}:\nstdout:\n{out}\nstderr:\n{err}"
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"no RESULT line in kafkajs output:\n{out}"
    result = json.loads(lines[0][len("RESULT "):])
    assert sorted(result["got"]) == sorted(f"v{i}" for i in range(20))
    parts = {p["partition"]: int(p["offset"]) for p in result["offsets"][0]["partitions"]}
    assert parts == {0: 10, 1: 10}
    assert "g-kafkajs" in result["groups"]
