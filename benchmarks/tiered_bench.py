#!/usr/bin/env python3
"""Helpers for benchmarks/tiered.sh (standard library only).

  tiered_bench.py free-port
  tiered_bench.py snapshot METRICS_URL OUT.json        Prometheus text -> {"name{labels}": value}
  tiered_bench.py cpu PID                               utime+stime of a process, in seconds
  tiered_bench.py wait-offload METRICS_URL TOPIC PARTITION_DIR MAX_LOCAL_BYTES TIMEOUT_SECS
  tiered_bench.py report STATE_DIR                      markdown table from the files tiered.sh wrote

Figures: MB = 10^6 bytes, GB = 10^9 bytes.
"""

import json
import os
import socket
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            pass
    return out


def metric(m, name, **labels):
    """Sum of every series of `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for key, v in m.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if labels:
            lab = {}
            for part in rest.rstrip("}").split(","):
                if "=" in part:
                    k, _, val = part.partition("=")
                    lab[k.strip()] = val.strip().strip('"')
            if any(lab.get(k) != str(v2) for k, v2 in labels.items()):
                continue
        total += v
        found = True
    return total if found else None


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def wait_offload(url, topic, part_dir, max_local, timeout):
    """Waits until no sealed segment is waiting for upload and the partition's local files are at
    most max_local bytes (on-disk blocks). Prints progress every 5 s."""
    deadline = time.time() + timeout
    started = time.time()
    last_print = 0.0
    while True:
        m = scrape(url)
        lag_seg = metric(m, "strata_remote_upload_lag_segments", topic=topic, partition=0)
        lag_bytes = metric(m, "strata_remote_upload_lag_bytes", topic=topic, partition=0)
        local = dir_bytes(part_dir)
        if lag_seg == 0 and local <= max_local:
            print(f"offloaded after {time.time() - started:.1f}s: lag segments 0, lag bytes "
                  f"{lag_bytes:.0f} (active segment), local {local} bytes", file=sys.stderr)
            return 0
        if time.time() - last_print >= 5:
            last_print = time.time()
            print(f"  waiting: lag segments {lag_seg}, lag bytes {lag_bytes}, local {local} bytes",
                  file=sys.stderr)
        if time.time() > deadline:
            print(f"timed out: lag segments {lag_seg}, local {local} bytes", file=sys.stderr)
            return 1
        time.sleep(0.5)


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def result_line(path):
    """The RESULT {json} line of a strata-bench run's output."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("RESULT "):
                    return json.loads(line[len("RESULT "):])
    except FileNotFoundError:
        pass
    return None


def delta(after, before, name):
    a = metric(after, name)
    b = metric(before, name) or 0.0
    return None if a is None else a - b


def fmt(v, spec=",.0f"):
    return "n/a" if v is None else format(v, spec)


def report(state):
    st = load(os.path.join(state, "state.json"), {})
    m0 = load(os.path.join(state, "m_before_produce.json"), {})
    m1 = load(os.path.join(state, "m_after_offload.json"), {})
    c0 = load(os.path.join(state, "m_before_cold.json"), {})
    c1 = load(os.path.join(state, "m_after_cold.json"), {})
    w1 = load(os.path.join(state, "m_after_warm.json"), {})
    prod = result_line(os.path.join(state, "produce.out")) or {}
    cold = result_line(os.path.join(state, "cold.out")) or {}
    warm = result_line(os.path.join(state, "warm.out")) or {}

    ingested = prod.get("bytes") or st.get("payload_bytes", 0)
    gb_in = ingested / 1e9
    puts = delta(m1, m0, "strata_remote_put_requests")
    put_bytes = delta(m1, m0, "strata_remote_put_bytes")
    segs = delta(m1, m0, "strata_remote_segments_uploaded")
    up_ms = delta(m1, m0, "strata_remote_upload_duration_ms")
    remote_size = metric(m1, "strata_remote_log_size_bytes", topic=st.get("topic", ""), partition=0)

    rows = []
    rows.append(("ingested (record payload)", f"{ingested / 1e6:,.1f} MB ({prod.get('consumed') or prod.get('count') or st.get('records')} x {st.get('record_size')} B)"))
    rows.append(("produce rate, acks=all, while offloading", f"{fmt(prod.get('mb_per_sec'), ',.1f')} MB/s"))
    rows.append(("segments uploaded", fmt(segs)))
    rows.append(("PUT requests / PUT bytes", f"{fmt(puts)} / {fmt(put_bytes / 1e6 if put_bytes is not None else None, ',.1f')} MB"))
    rows.append(("**PUTs per GB ingested** (goal <= 16)", f"**{fmt(puts / gb_in if puts is not None and gb_in else None, ',.1f')}**"))
    up_bytes = delta(m1, m0, "strata_remote_bytes_uploaded")
    rows.append(("PUTs per GB offloaded (sealed segments + indexes; the active segment stays local)",
                 f"{fmt(puts / (up_bytes / 1e9) if puts is not None and up_bytes else None, ',.1f')} ({fmt(up_bytes / 1e6 if up_bytes else None, ',.1f')} MB offloaded)"))
    rows.append(("PUT bytes per ingested byte", fmt(put_bytes / ingested if put_bytes and ingested else None, ".3f")))
    rows.append(("remote log size of the partition", f"{fmt(remote_size / 1e6 if remote_size else None, ',.1f')} MB"))
    rows.append(("avg upload start -> manifest recorded", f"{fmt(up_ms / segs if up_ms is not None and segs else None, ',.0f')} ms per segment"))
    rows.append(("produce end -> all sealed segments offloaded", f"{fmt(st.get('offload_wait_secs'), '.1f')} s"))
    rows.append(("local partition bytes after offload", f"{fmt(st.get('local_bytes_after_offload') / 1e6 if st.get('local_bytes_after_offload') is not None else None, ',.1f')} MB"))

    def read_rows(label, res, before, after, cpu_key):
        b = res.get("bytes")
        gb = (b or 0) / 1e9
        gets = delta(after, before, "strata_remote_get_requests")
        get_bytes = delta(after, before, "strata_remote_get_bytes")
        hits = delta(after, before, "strata_remote_cache_hits")
        misses = delta(after, before, "strata_remote_cache_misses")
        cache_gets = delta(after, before, "strata_remote_cache_get_requests")
        lat = delta(after, before, "strata_remote_cache_get_latency_micros")
        out = []
        goal = " (goal >= 300)" if label == "cold" else ""
        out.append((f"**{label} read MB/s**{goal}", f"**{fmt(res.get('mb_per_sec'), ',.1f')}** ({fmt(b / 1e6 if b else None, ',.1f')} MB in {fmt(res.get('elapsed_secs'), '.2f')} s, first record {fmt(res.get('first_record_ms'), '.0f')} ms, ok={res.get('ok')})"))
        out.append((f"{label}: GET requests / GET bytes", f"{fmt(gets)} / {fmt(get_bytes / 1e6 if get_bytes is not None else None, ',.1f')} MB"))
        out.append((f"{label}: GETs per GB read", fmt(gets / gb if gets is not None and gb else None, ',.1f')))
        if hits is not None and misses is not None and hits + misses > 0:
            out.append((f"{label}: cache hits / misses (hit ratio)", f"{hits:,.0f} / {misses:,.0f} ({hits / (hits + misses):.1%})"))
        if cache_gets and lat is not None:
            out.append((f"{label}: mean cache GET latency", f"{lat / cache_gets / 1000:,.1f} ms over {cache_gets:,.0f} GETs"))
        cpu = st.get(cpu_key)
        if cpu:
            wall = res.get("elapsed_secs") or cpu.get("wall") or 0
            parts = []
            for who in ("strata", "s3s-fs", "client"):
                v = cpu.get(who)
                if v is not None:
                    share = f" = {v / wall:.2f} cores" if wall else ""
                    parts.append(f"{who} {v:.1f} s{share}")
            out.append((f"{label}: CPU during the read", ", ".join(parts)))
        return out

    rows += read_rows("cold", cold, c0, c1, "cpu_cold")
    rows += read_rows("warm", warm, c1, w1, "cpu_warm")

    print("| figure | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "free-port":
        print(free_port())
    elif cmd == "snapshot":
        with open(argv[3], "w") as f:
            json.dump(scrape(argv[2]), f)
    elif cmd == "cpu":
        print(f"{cpu_secs(int(argv[2])):.2f}")
    elif cmd == "wait-offload":
        return wait_offload(argv[2], argv[3], argv[4], int(argv[5]), float(argv[6]))
    elif cmd == "dir-bytes":
        print(dir_bytes(argv[2]))
    elif cmd == "report":
        report(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
