#!/usr/bin/env python3
"""Replication benchmark (run by benchmarks/replication.sh): three release `strata broker` processes on this
machine (the cluster of cluster_bench.py), and/or a 3-node Apache Kafka cluster (KRaft, combined mode, the
cluster of apache_kafka.py), measured from the outside with the same clients, one system after the other.

  replication_bench.py run --work-dir DIR [--system strata|kafka|both] [--partitions 3000]
                           [--only failover,throughput,idle] [--records 200000] [--kafka-version 4.4.0]
                           [--idle-steps 1000,3000,10000] [--invocation "..."]

  (run it through benchmarks/replication.sh, which builds the release binaries first)

Sections:
  failover    PARTITIONS partitions with replication factor 3 (topics of 100 partitions). Idle CPU (% of a
              core) and RSS of every broker over 15 s once all are led with three replicas in sync. Then
              kill -9 of the broker leading the most partitions (about a third): time until a survivor's
              Metadata shows every partition led by a live broker, and until one acks=all produce to every
              partition (sent right after the kill by a producer connected before it) succeeded. Then the
              broker is restarted: time until every partition has its three replicas in sync again.
  throughput  acks=all, 1 KiB records, one topic of 6 partitions with replication factor 1 and one with 3,
              alternating (RF1, RF3, RF1, RF3): strata-bench's saturating producer (records/s, MB/s, send-
              to-ack p50/p99 under saturation).
  idle        (not in the default --only) how idle cost grows with the number of replicas: RF3 partitions
              are added to one cluster up to each of IDLE_STEPS in turn (default 1,000, 3,000 and 10,000
              partitions, i.e. replicas per broker), and at each step, once all are led with three replicas
              in sync, every broker's CPU (% of a core) and RSS over 30 s without client traffic.

--system kafka (or both, the default) runs the same sections against Apache Kafka: its broker classpath is
assembled once with Maven into ~/.cache/strata/kafka-<version> (apache_kafka.ensure_kafka), its nodes run
with Kafka's defaults (no fsync per write, broker session timeout 9 s) where Strata's run with an fsync
before every acks=all answer and a 3 s session timeout; the report says so next to the figures.

Markdown for benchmarks/RESULTS.md goes to stdout, progress to stderr. Environment: STRATA_BIN (the broker),
STRATA_BENCH (target/release/strata-bench), KAFKA_VERSION, KAFKA_HEAP_OPTS (see apache_kafka.py).
"""

from __future__ import annotations

import argparse
import resource
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import apache_kafka as ak  # noqa: E402
import cluster_bench as cb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("strata", "kafka")


def log(msg: str) -> None:
    cb.log(msg)


def bench_bin() -> Path:
    env = os.environ.get("STRATA_BENCH")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return target / "release" / "strata-bench"


def state(bootstrap: str, topics: list[str]) -> dict | None:
    """(topic, partition) -> (leader, replicas, isr) from a fresh admin client, None if unreachable."""
    from confluent_kafka import KafkaException
    adm = cb.admin(bootstrap)
    try:
        md = adm.list_topics(timeout=10)
    except KafkaException:
        return None
    out = {}
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None:
            return None
        for p, pm in tm.partitions.items():
            out[(t, p)] = (pm.leader, list(pm.replicas), sorted(pm.isrs))
    return out


def wait_for(cond, what: str, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s: {what}")


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, RSS bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def idle_cost(c, seconds: float = 15.0) -> dict[int, tuple[float, int]]:
    """node -> (CPU % of one core, RSS bytes) over `seconds` of no client traffic."""
    before = {b.node_id: proc_usage(b.proc.pid) for b in c.live()}
    time.sleep(seconds)
    out = {}
    for b in c.live():
        cpu, rss = proc_usage(b.proc.pid)
        out[b.node_id] = (100.0 * (cpu - before[b.node_id][0]) / seconds, rss)
    return out


def create_rf3(c, names: list[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    # One CreateTopics names 500 partitions; on a loaded machine its answer takes longer than the
    # admin client's usual 10 s socket timeout.
    adm = AdminClient({"bootstrap.servers": c.node(1).bootstrap, "socket.timeout.ms": 180000})
    for i in range(0, len(names), 5):
        futs = adm.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=3)
                                  for n in names[i:i + 5]], operation_timeout=120, request_timeout=150)
        for f in futs.values():
            f.result(timeout=180)


def all_in_sync(c, topics: list[str], live: set[int], via: int):
    s = state(c.node(via).bootstrap, topics)
    if not s:
        return None
    ok = all(leader in live and set(isr) == live and len(r) == 3 for leader, r, isr in s.values())
    return s if ok else None


def bench_failover(c, partitions: int) -> dict:
    from confluent_kafka import Producer
    per_topic = 100
    topics = [f"rf3-failover-{i}" for i in range(max(1, partitions // per_topic))]
    t0 = time.monotonic()
    create_rf3(c, topics, per_topic)
    s = wait_for(lambda: all_in_sync(c, topics, {1, 2, 3}, 1), "all partitions in sync", 600, 1.0)
    created_s = time.monotonic() - t0
    log(f"{len(s)} RF3 partitions created and in sync after {created_s:.1f}s")
    idle = idle_cost(c)
    led = {i: sum(1 for leader, _, _ in s.values() if leader == i) for i in (1, 2, 3)}
    victim = max(led, key=led.get)
    others = {1, 2, 3} - {victim}
    via = min(others)
    p = Producer({"bootstrap.servers": ",".join(c.node(i).bootstrap for i in (1, 2, 3)), "acks": "all",
                  "linger.ms": 5, "message.timeout.ms": 120000, "retry.backoff.ms": 50,
                  "topic.metadata.refresh.interval.ms": 1000, "enable.idempotence": True})
    for (t, part) in s:  # connect to every leader before the kill
        p.produce(t, value=b"warm", partition=part)
    p.flush(60)
    try:  # whether the victim is also the active controller matters to how soon its leaderships move
        controller = c.controller(10.0)
    except RuntimeError:
        controller = None
    done: dict[tuple[str, int], float] = {}
    errors = []

    def cb_(err, msg):
        if err is None:
            done[(msg.topic(), msg.partition())] = time.monotonic()
        else:
            errors.append(str(err))
    c.node(victim).kill9()
    k = time.monotonic()
    for (t, part) in s:
        p.produce(t, value=b"after-kill", partition=part, on_delivery=cb_)
    leaders_s = None
    next_progress = k + 5.0
    while time.monotonic() - k < 120:
        p.poll(0.05)
        if time.monotonic() >= next_progress:
            log(f"  {time.monotonic() - k:.0f}s after the kill: {len(done)}/{len(s)} produced, {len(errors)} errors")
            next_progress += 5.0
        if leaders_s is None:
            st = state(c.node(via).bootstrap, topics)
            if st and all(leader in others for leader, _, _ in st.values()):
                leaders_s = time.monotonic() - k
        if leaders_s is not None and len(done) + len(errors) >= len(s):
            break
    p.flush(60)
    produce_s = max(done.values()) - k if len(done) == len(s) else None
    log(f"kill -9 of {victim} (leading {led[victim]}; active controller {controller}): leaders after {leaders_s}, "
        f"produce to all after {produce_s}")
    for moved, label in ((True, "led by the killed broker"), (False, "led by a survivor")):
        after = sorted(t - k for tp, t in done.items() if (s[tp][0] == victim) == moved)
        if after:
            log(f"  acks=all produce after the kill to the {len(after)} partitions {label}: " +
                ", ".join(f"p{q} {after[min(len(after) - 1, int(q / 100 * len(after)))]:.2f}s"
                          for q in (10, 50, 90, 100)))
    if errors:
        from collections import Counter
        log(f"produce errors: {Counter(errors).most_common(5)}")
    c.node(victim).spawn()
    r0 = time.monotonic()
    c.node(victim).wait_port(120)
    wait_for(lambda: all_in_sync(c, topics, {1, 2, 3}, via), "rejoined the ISR everywhere", 600, 0.5)
    rejoin_s = time.monotonic() - r0
    log(f"node {victim} back in every ISR after {rejoin_s:.1f}s")
    return {"partitions": len(s), "created_s": created_s, "idle": idle, "victim": victim, "led": led[victim],
            "controller": controller,
            "leaders_s": leaders_s, "produce_s": produce_s, "produce_errors": len(errors), "rejoin_s": rejoin_s}


def bench_idle(c, steps: list[int]) -> list[dict]:
    """Idle CPU and RSS per broker at each number of RF3 partitions in `steps` (added to one cluster)."""
    per_topic = 100
    out = []
    topics: list[str] = []
    for target in steps:
        new = [f"rf3-idle-{i}" for i in range(len(topics), max(1, target // per_topic))]
        t0 = time.monotonic()
        create_rf3(c, new, per_topic)
        topics += new
        wait_for(lambda: all_in_sync(c, topics, {1, 2, 3}, 1), f"{target} partitions in sync", 1800, 2.0)
        took = time.monotonic() - t0
        time.sleep(10)  # let creation's aftermath (elections, ISR reports, leader rebalancing) settle
        idle = idle_cost(c, 30.0)
        log(f"{len(topics) * per_topic} partitions (+{len(new) * per_topic} in {took:.1f}s): " +
            ", ".join(f"node {n} {cpu:.1f} % {rss / 2**20:.0f} MiB" for n, (cpu, rss) in sorted(idle.items())))
        out.append({"partitions": len(topics) * per_topic, "added_s": took, "idle": idle})
    return out


S3S_FS = Path(os.environ.get("STRATA_S3S_FS") or
              Path.home() / ".cache" / "strata" / "s3s-fs-0.14.1" / "bin" / "s3s-fs")
S3_KEY, S3_SECRET, S3_BUCKET = "strata-bench-access", "strata-bench-secret-key-0123456789", "strata"


class S3sFs:
    """An s3s-fs server (objects on local disk, SigV4 checked) for the tiered reassignment run."""

    def __init__(self, work: Path):
        self.root = work / "s3"
        self.port = cb.free_ports(1)[0]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if not S3S_FS.exists():
            raise RuntimeError(f"{S3S_FS} missing: bash infra/test-deps.sh installs it")
        (self.root / S3_BUCKET).mkdir(parents=True, exist_ok=True)
        log_path = self.root.parent / "s3s-fs.log"
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen([str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.port),
                                          "--access-key", S3_KEY, "--secret-key", S3_SECRET, str(self.root)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: cb.port_open(self.port), "s3s-fs listening", 30, 0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def broker_flags(self) -> list[str]:
        return ["--object-store", f"s3://{S3_BUCKET}/bench", "--object-store-endpoint",
                f"http://127.0.0.1:{self.port}", "--object-store-region", "us-east-1",
                "--object-store-path-style", "true", "--object-store-allow-http", "true"]

    @staticmethod
    def broker_env() -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1"}


# Strata's tiered setting for the reassignment run: 16 MiB segments, each offloaded as it seals and its
# local copy dropped (local.retention.bytes=1), so the local log is the open segment.
REASSIGN_SEGMENT = 16 * 2**20
STRATA_TIERED_FLAGS = ["--broker-config", f"segment.bytes={REASSIGN_SEGMENT}", "--broker-config",
                       "local.retention.bytes=1", "--remote-task-interval-ms", "200",
                       "--log-retention-check-interval-ms", "500"]


def raw_request(port: int, request, timeout: float = 30.0):
    """One kafka-python protocol request on a fresh connection; the decoded response."""
    import socket

    from kafka.protocol.parser import KafkaProtocol
    proto = KafkaProtocol(client_id="strata-replication-bench")
    proto.send_request(request)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(proto.send_bytes())
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection instead of answering")
            responses = proto.receive_bytes(chunk)
            if responses:
                return responses[0][1]


def reassignments_in_progress(port: int) -> int:
    from kafka.protocol.admin import ListPartitionReassignmentsRequest_v0
    resp = raw_request(port, ListPartitionReassignmentsRequest_v0(timeout_ms=10000, topics=None, tags={}), 15)
    if resp.error_code != 0:
        raise RuntimeError(f"ListPartitionReassignments: error {resp.error_code}")
    return sum(len(parts) for _, parts, _ in resp.topics)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def strata_metric(node, name: str) -> float:
    """The value of one exported sample (`name` with its labels), 0 if absent."""
    with cb.urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name:
            total += float(value)
    return total


def bench_reassign(c, sizes_mb: list[int]) -> list[dict]:
    """One partition of `size` MiB on replicas [1, 2, 3] moves to [1, 2, 4]: seconds from the
    AlterPartitionReassignments call until the reassignment is complete and node 4 is in the ISR, and the
    bytes node 4 wrote to its disk. On Strata the history is in the object store first (only the leader's open
    segment is local); Kafka copies the whole log."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka.protocol.admin import AlterPartitionReassignmentsRequest_v0
    out = []
    bootstrap = ",".join(c.node(i).bootstrap for i in (1, 2, 3))
    adm = AdminClient({"bootstrap.servers": c.node(1).bootstrap, "socket.timeout.ms": 60000})
    for mb in sizes_mb:
        topic = f"reassign-{mb}mb"
        for f in adm.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[1, 2, 3]],
                                             config={"segment.bytes": str(REASSIGN_SEGMENT)})],
                                   operation_timeout=60, request_timeout=90).values():
            f.result(timeout=120)
        wait_for(lambda: (s := state(c.node(1).bootstrap, [topic])) and set(s[(topic, 0)][2]) == {1, 2, 3},
                 f"{topic} in sync on 1, 2, 3", 60, 0.5)
        t_fill = time.monotonic()
        r = run_bench(["produce", "--bootstrap", bootstrap, "--topic", topic, "--count", str(mb * 1024),
                       "--record-size", "1024", "--acks", "all"])
        log(f"{topic}: filled {mb} MiB in {time.monotonic() - t_fill:.1f}s ({r.get('mb_per_sec', 0):.0f} MB/s)")
        leader = state(c.node(1).bootstrap, [topic])[(topic, 0)][0]
        if c.system == "strata":
            lag = f'strata_remote_upload_lag_segments{{topic="{topic}",partition="0"}}'
            wait_for(lambda: strata_metric(c.node(leader), lag) == 0
                     and dir_bytes(c.node(leader).data_dir / f"{topic}-0") < 3 * REASSIGN_SEGMENT,
                     f"{topic}: every sealed segment offloaded and dropped locally", 600, 1.0)
        local = dir_bytes(c.node(leader).data_dir / f"{topic}-0")
        t0 = time.monotonic()
        resp = raw_request(c.node(1).port, AlterPartitionReassignmentsRequest_v0(
            timeout_ms=30000, topics=[(topic, [(0, [1, 2, 4], {})], {})], tags={}))
        codes = [p[1] for _, parts, _ in resp.responses for p in parts]
        if resp.error_code != 0 or codes != [0]:
            raise RuntimeError(f"AlterPartitionReassignments {topic}: {resp}")

        def done():
            s = state(c.node(1).bootstrap, [topic])
            if not s:
                return False
            _, replicas, isr = s[(topic, 0)]
            return sorted(replicas) == [1, 2, 4] and set(isr) == {1, 2, 4} and \
                reassignments_in_progress(c.node(1).port) == 0
        wait_for(done, f"{topic} reassigned to 1, 2, 4", 1800, 0.1)
        took = time.monotonic() - t0
        copied = dir_bytes(c.node(4).data_dir / f"{topic}-0")
        log(f"{topic}: reassigned in {took:.2f}s; leader's local log {local / 2**20:.1f} MiB, "
            f"node 4 holds {copied / 2**20:.1f} MiB")
        out.append({"mb": mb, "reassign_s": took, "leader_local": local, "copied": copied,
                    "fill_mb_s": r.get("mb_per_sec", 0)})
    return out


def run_bench(args: list[str]) -> dict:
    """strata-bench with --json-like RESULT lines; returns the parsed figures of its last RESULT line."""
    out = subprocess.run([str(bench_bin()), *args], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"strata-bench {' '.join(args)} failed: {out.stderr[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"strata-bench printed no RESULT line: {out.stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def bench_throughput(c, records: int) -> dict:
    from confluent_kafka.admin import NewTopic
    adm = cb.admin(c.node(1).bootstrap)
    for name, rf in (("rf1-throughput", 1), ("rf3-throughput", 3)):
        for f in adm.create_topics([NewTopic(name, num_partitions=6, replication_factor=rf)],
                                   operation_timeout=60, request_timeout=90).values():
            f.result(timeout=120)
    wait_for(lambda: all_in_sync(c, ["rf3-throughput"], {1, 2, 3}, 1), "rf3 topic in sync", 60, 0.5)
    bootstrap = ",".join(c.node(i).bootstrap for i in (1, 2, 3))
    runs: dict[str, list[dict]] = {"rf1": [], "rf3": []}
    for _ in range(2):
        for rf in ("rf1", "rf3"):
            r = run_bench(["produce", "--bootstrap", bootstrap, "--topic", f"{rf}-throughput", "--count",
                           str(records), "--record-size", "1024", "--acks", "all"])
            log(f"{rf}: {r}")
            runs[rf].append(r)
    return runs


def strata_setup() -> str:
    return (f"`{cb.strata_bin()}`, 3 nodes, each broker + controller voter (combined mode), broker session timeout "
            f"{cb.SESSION_TIMEOUT_MS} ms, heartbeat interval {cb.HEARTBEAT_INTERVAL_MS} ms; Strata fsyncs the log "
            "before it answers a produce (its default)")


def kafka_setup(c: ak.KafkaCluster) -> str:
    return (f"{c.describe()}. Kafka does not fsync per write by default (log.flush.interval.messages and "
            "log.flush.interval.ms unset: the page cache and replication carry durability), so its acks=all "
            "figures are without the fsync Strata does; broker session timeout 9 s and heartbeat 2 s (Kafka's "
            "defaults), which bound how soon the controller fences a killed broker and moves its leaderships")


def report(args, failover: dict, throughput: dict, setups: dict[str, str], load: dict[str, str],
           invocation: str, idle: dict[str, list[dict]] | None = None,
           reassign: dict[str, list[dict]] | None = None) -> str:
    lines = [f"\n## {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} replication benchmark",
             "", f"Command: `{invocation}`", f"Commit: `{cb.sh(['git', 'rev-parse', '--short', 'HEAD']).strip()}`",
             f"Machine: {cb.machine()}; open file limit per process {resource.getrlimit(resource.RLIMIT_NOFILE)[0]:,}",
             "", "Systems (one after the other on this machine, clients on it too; "
             "load average 1/5/15 min before and after each system's runs in brackets):", ""]
    for system in SYSTEMS:
        if system in setups:
            lines.append(f"- {system}: {setups[system]} [{load.get(system, 'n/a')}]")
    lines.append("")
    if failover:
        lines += ["### Failover of a broker leading a third of the partitions (RF 3, 3 brokers)", "",
                  "| system | partitions | created and in sync | leaders of the killed broker | every partition led | "
                  "acks=all produce to every partition | killed broker back in every ISR |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for system in SYSTEMS:
            f = failover.get(system)
            if f:
                ctl = f.get("controller")
                who = (f"node {f['victim']}, the active controller" if ctl == f["victim"] else
                       f"node {f['victim']}; active controller: {'node ' + str(ctl) if ctl is not None else '?'}")
                lines.append(f"| {system} | {f['partitions']} | {f['created_s']:.1f} s | {f['led']} ({who}) | "
                             f"{cb.fmt_s(f['leaders_s'])} | {cb.fmt_s(f['produce_s'])} ({f['produce_errors']} errors) | "
                             f"{f['rejoin_s']:.1f} s |")
        f = next(iter(failover.values()))
        lines += ["", f"Idle cost at {f['partitions']} partitions x 3 replicas ({f['partitions']} replicas per broker), "
                  "15 s without client traffic:", "", "| system | broker | CPU (% of a core) | RSS |",
                  "| --- | --- | --- | --- |"]
        for system in SYSTEMS:
            f = failover.get(system)
            if f:
                for node, (cpu, rss) in sorted(f["idle"].items()):
                    lines.append(f"| {system} | {node} | {cpu:.1f} % | {rss / 2**20:.0f} MiB |")
        lines.append("")
    if throughput:
        lines += ["### acks=all, 1 KiB records, replication factor 1 against 3 (6 partitions, strata-bench produce)",
                  "", "| system | run | RF | records/s | MB/s | send-to-ack p50 | p99 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        ratios = []
        for system in SYSTEMS:
            runs = throughput.get(system)
            if not runs:
                continue
            for rf in ("rf1", "rf3"):
                for i, r in enumerate(runs[rf]):
                    lat = r.get("latency_ms") or {}
                    lines.append(f"| {system} | {i + 1} | {rf[2]} | {r.get('msgs_per_sec', 0):,.0f} | "
                                 f"{r.get('mb_per_sec', 0):.1f} | {lat.get('p50', 0):.2f} ms | {lat.get('p99', 0):.2f} ms |")
            rf1 = statistics.median(r.get("msgs_per_sec", 0) for r in runs["rf1"])
            rf3 = statistics.median(r.get("msgs_per_sec", 0) for r in runs["rf3"])
            if rf1:
                ratios.append(f"{system} {rf3 / rf1 * 100:.0f} % (RF1 {rf1:,.0f}, RF3 {rf3:,.0f} records/s)")
        lines += ["", f"RF3 / RF1 (medians): {'; '.join(ratios)}." if ratios else "", ""]
    if reassign:
        lines += ["### Reassignment of one partition to a new broker (replicas 1, 2, 3 -> 1, 2, 4; 1 KiB records)", "",
                  "Strata: tiered on s3s-fs (16 MiB segments offloaded as they seal, local.retention.bytes=1), the new "
                  "replica installs a snapshot naming the offloaded history and copies only the local tail. Kafka: no "
                  "tiered storage plugin here, the new replica copies the whole log (no replication throttle).", "",
                  "| system | partition size | leader's local log | reassignment complete, node 4 in ISR | "
                  "written to node 4's disk |", "| --- | --- | --- | --- | --- |"]
        for system in SYSTEMS:
            for step in reassign.get(system) or []:
                lines.append(f"| {system} | {step['mb']:,} MiB | {step['leader_local'] / 2**20:.1f} MiB | "
                             f"{step['reassign_s']:.2f} s | {step['copied'] / 2**20:.1f} MiB |")
        lines.append("")
    if idle:
        lines += ["### Idle cost from 1k to 10k partition replicas per broker (RF 3, 3 brokers, 30 s without clients)",
                  "", "| system | partitions (= replicas per broker) | time to add and sync | CPU per broker (% of a core) | "
                  "RSS per broker |", "| --- | --- | --- | --- | --- |"]
        for system in SYSTEMS:
            for step in idle.get(system) or []:
                cpus = " / ".join(f"{cpu:.1f} %" for _, (cpu, _) in sorted(step["idle"].items()))
                rsss = " / ".join(f"{rss / 2**20:.0f} MiB" for _, (_, rss) in sorted(step["idle"].items()))
                lines.append(f"| {system} | {step['partitions']:,} | {step['added_s']:.1f} s | {cpus} | {rsss} |")
        lines.append("")
    return "\n".join(lines)


def make_cluster(system: str, work: Path, args, n: int = 3):
    if system == "strata":
        return cb.Cluster(work, n)
    return ak.KafkaCluster(work, n, version=args.kafka_version)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work-dir", required=True)
    r.add_argument("--system", choices=("strata", "kafka", "both"), default="both",
                   help="Strata's cluster, Apache Kafka's, or both one after the other (default)")
    r.add_argument("--partitions", type=int, default=3000)
    r.add_argument("--records", type=int, default=200_000)
    r.add_argument("--only", default="failover,throughput")
    r.add_argument("--kafka-version", default=ak.DEFAULT_VERSION)
    r.add_argument("--idle-steps", default="1000,3000,10000")
    r.add_argument("--reassign-sizes-mb", default="100,1024")
    r.add_argument("--invocation", default="benchmarks/replication.sh")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    systems = SYSTEMS if args.system == "both" else (args.system,)
    if "kafka" in systems:
        ak.ensure_kafka(args.kafka_version)  # before any run: a Maven failure shows at once
    failover: dict[str, dict] = {}
    throughput: dict[str, dict] = {}
    idle: dict[str, list[dict]] = {}
    reassign: dict[str, list[dict]] = {}
    setups: dict[str, str] = {}
    load: dict[str, list[str]] = {s: [] for s in systems}
    failed: list[str] = []
    for section in ("failover", "throughput", "idle", "reassign"):
        if section not in only:
            continue
        for system in systems:
            # Strata's work dirs keep their names (failover, throughput); Kafka's are prefixed.
            work = Path(args.work_dir) / (section if system == "strata" else f"{system}-{section}")
            c = make_cluster(system, work, args, 4 if section == "reassign" else 3)
            s3 = None
            if section == "reassign" and system == "strata":
                s3 = S3sFs(work)
                s3.start()
                for b in c.nodes:
                    b.extra_flags = [*s3.broker_flags(), *STRATA_TIERED_FLAGS]
                    b.extra_env = s3.broker_env()
            if system not in setups:
                setups[system] = strata_setup() if system == "strata" else kafka_setup(c)
            if section == "reassign":
                setups[system] += "; the reassignment run has a 4th node of the same kind"
            log(f"--- {section}: {system}")
            load[system].append(cb.loadavg())
            try:
                c.start_all()
                if section == "failover":
                    failover[system] = bench_failover(c, args.partitions)
                elif section == "idle":
                    idle[system] = bench_idle(c, [int(x) for x in args.idle_steps.split(",")])
                elif section == "reassign":
                    reassign[system] = bench_reassign(c, [int(x) for x in args.reassign_sizes_mb.split(",")])
                else:
                    throughput[system] = bench_throughput(c, args.records)
            except Exception as e:  # noqa: BLE001 - one system's failure must not lose the other's figures
                if len(systems) == 1:
                    raise
                log(traceback.format_exc())
                failed.append(f"{section} on {system}: {type(e).__name__}: {str(e)[:500]}")
            finally:
                c.stop_all()
                if s3 is not None:
                    s3.stop()
                load[system].append(cb.loadavg())
    load_text = {s: f"{v[0]} -> {v[-1]}" if v else "n/a" for s, v in load.items()}
    text = report(args, failover, throughput, setups, load_text, args.invocation, idle, reassign)
    if failed:
        text += "\nFailed (no figures above for these):\n\n" + "\n".join(f"- {f}" for f in failed) + "\n"
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
