"""kcat (Debian's build, librdkafka 2.0.2: an older client than confluent-kafka's) against `strata`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from strata_helpers import admin, create_topic

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (infra/test-deps.sh)")


def kcat(broker, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> str:
    """Runs kcat against the broker; fails with kcat's stderr when it exits non-zero."""
    cmd = ["kcat", "-b", broker.bootstrap, "-X", "socket.timeout.ms=10000", *args]
    r = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr.decode(errors='replace')}"
    return r.stdout.decode()


def consume_all(broker, topic: str) -> list[dict]:
    """Every record of every partition, via kcat -C -e -o beginning."""
    out = kcat(broker, "-C", "-t", topic, "-e", "-o", "beginning", "-q",
               "-f", "%p\\t%o\\t%T\\t%k\\t%s\\n")
    rows = []
    for line in out.splitlines():
        p, o, ts, k, v = line.split("\t")
        rows.append({"partition": int(p), "offset": int(o), "ts": int(ts), "key": k, "value": v})
    return rows


def test_metadata_json(broker, topic_name):
    create_topic(admin(broker.bootstrap), topic_name, partitions=3)
    md = json.loads(kcat(broker, "-L", "-J"))
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(0, broker.bootstrap)]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic_name in topics
    t = topics[topic_name]
    assert "error" not in t, t
    parts = sorted(t["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2]
    for p in parts:
        assert p["leader"] == 0
        assert [r["id"] for r in p["replicas"]] == [0]
        assert [r["id"] for r in p["isrs"]] == [0]


def test_keyed_produce_snappy_and_consume(broker, topic_name):
    create_topic(admin(broker.bootstrap), topic_name, partitions=3)
    lines = [f"key-{i % 25}:value-{i}-{'s' * (i % 40)}" for i in range(300)]
    kcat(broker, "-P", "-t", topic_name, "-K", ":", "-z", "snappy", stdin="\n".join(lines).encode() + b"\n")

    rows = consume_all(broker, topic_name)
    assert len(rows) == 300, f"consumed {len(rows)} of 300"
    sent = [tuple(line.split(":", 1)) for line in lines]
    assert sorted((r["key"], r["value"]) for r in rows) == sorted(sent)
    # One key, one partition; per partition, offsets are dense and follow the order of production.
    part_of_key = {}
    for r in rows:
        assert part_of_key.setdefault(r["key"], r["partition"]) == r["partition"], f"key {r['key']} split"
    for p in range(3):
        mine = [r for r in rows if r["partition"] == p]
        assert [r["offset"] for r in mine] == list(range(len(mine)))
        expected = [v for k, v in sent if part_of_key.get(k) == p]
        assert [r["value"] for r in mine] == expected
    assert len(set(part_of_key.values())) > 1, "every key on one partition"


def test_query_offsets_by_timestamp(broker, topic_name):
    create_topic(admin(broker.bootstrap), topic_name, partitions=1)
    for round_ in range(4):
        kcat(broker, "-P", "-t", topic_name, "-p", "0",
             stdin="\n".join(f"r{round_}-{i}" for i in range(5)).encode() + b"\n")
        time.sleep(0.05)
    rows = consume_all(broker, topic_name)
    assert [r["offset"] for r in rows] == list(range(20))
    for r in rows:
        expected = next(x["offset"] for x in rows if x["ts"] >= r["ts"])
        out = kcat(broker, "-Q", "-t", f"{topic_name}:0:{r['ts']}")
        m = re.search(r"\[0\]\s+offset\s+(-?\d+)", out)
        assert m, f"unexpected kcat -Q output: {out!r}"
        assert int(m.group(1)) == expected, f"-Q ts={r['ts']}: offset {m.group(1)}, expected {expected}"
    out = kcat(broker, "-Q", "-t", f"{topic_name}:0:{rows[-1]['ts'] + 60_000}")
    m = re.search(r"\[0\]\s+offset\s+(-?\d+)", out)
    assert m and int(m.group(1)) == -1, f"timestamp after every record: {out!r}"
