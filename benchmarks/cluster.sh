#!/usr/bin/env bash
# Cluster benchmark: controller failover, creating 10,000 partitions, metadata propagation.
#
#   benchmarks/cluster.sh [--quick] [--no-build] [--keep] [--rounds N] [--only SECTIONS]
#
# Starts three release `strata broker` processes on free loopback ports as one cluster (node ids 1-3,
# each a broker and a voter of the embedded metadata quorum; broker session timeout 3 s, heartbeat
# 500 ms; data and logs in a temporary directory) and measures, with benchmarks/cluster_bench.py:
#   failover     kill -9 of the active controller, 3 rounds (--rounds N): time until DescribeCluster
#                from a live broker names a new controller, until the first CreateTopics succeeds,
#                until the killed node is fenced; the node is restarted between rounds; medians;
#   propagation  20 topics created through node 1, Metadata polled on nodes 2 and 3: p50/max delay;
#   partitions   100 topics x 100 partitions (CreateTopics with 10 topics per request): time until
#                every request returned and until every node's Metadata shows all 10,000 with leaders.
# --quick: 1 failover round, 10 propagation topics, 20 x 100 partitions. --only: comma-separated
# subset of failover,propagation,partitions. Prints a markdown section for benchmarks/RESULTS.md
# (with the exact command, commit and machine). Every process it started is stopped on exit.
#
# Environment:
#   STRATA_BIN        the broker binary (default $CARGO_TARGET_DIR/release/strata; built with
#                     `cargo build --release -p strata-broker` unless --no-build)
#   CARGO_TARGET_DIR  where cargo puts the release build (default <repo>/target)
#   PYTHON            python with confluent-kafka (default ~/.cache/strata/venv/bin/python when it
#                     exists, else python3; bash infra/test-deps.sh creates that venv)
#   STRATA_CLUSTER_REPORT  also copy the markdown report to this file
#   TMPDIR            where the data directories go
set -euo pipefail

usage() {
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The exact command for the report, with the environment that changes what runs.
ENV_PREFIX=""
for v in CARGO_TARGET_DIR STRATA_BIN; do
    if [[ -n "${!v:-}" ]]; then ENV_PREFIX+="$v=${!v} "; fi
done
INVOCATION="${ENV_PREFIX}benchmarks/cluster.sh $*"
BUILD=1
KEEP=0
QUICK=0
ROUNDS=""
ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument $1" >&2; usage ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export STRATA_BIN="${STRATA_BIN:-$TARGET/release/strata}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$HOME/.cache/strata/venv/bin/python" ]]; then PYTHON="$HOME/.cache/strata/venv/bin/python"; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import confluent_kafka' 2>/dev/null || {
    echo "$PYTHON cannot import confluent_kafka: run bash infra/test-deps.sh or set PYTHON" >&2; exit 1; }

if [[ $BUILD -eq 1 ]]; then
    cargo build --release -p strata-broker
fi
[[ -x "$STRATA_BIN" ]] || { echo "$STRATA_BIN is missing; build it or drop --no-build" >&2; exit 1; }

ARGS=()
if [[ $QUICK -eq 1 ]]; then
    ARGS+=(--rounds 1 --propagation-topics 10 --topics 20 --partitions 100)
fi
if [[ -n "$ROUNDS" ]]; then ARGS+=(--rounds "$ROUNDS"); fi
if [[ -n "$ONLY" ]]; then ARGS+=(--only "$ONLY"); fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-cluster.XXXXXX")"
cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        for log in "$WORK"/logs/*.log; do
            [[ -f "$log" ]] || continue
            echo "--- last lines of $log ---" >&2
            tail -n 20 "$log" >&2 || true
        done
    fi
    if [[ $status -ne 0 || $KEEP -eq 1 ]]; then
        echo "(kept $WORK)" >&2
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The helper starts and stops the nodes itself (SIGTERM, SIGKILL after 30 s) even when it fails.
"$PYTHON" "$ROOT/benchmarks/cluster_bench.py" run --work-dir "$WORK" --invocation "$INVOCATION" ${ARGS[@]+"${ARGS[@]}"} \
    | tee "$WORK/report.stdout.md"
if [[ -n "${STRATA_CLUSTER_REPORT:-}" ]]; then cp "$WORK/report.stdout.md" "$STRATA_CLUSTER_REPORT"; fi
# The most frequent WARN/ERROR lines of the nodes (timestamps dropped, numbers as N).
echo "node WARN/ERROR lines, most frequent first:" >&2
grep -hE ' (WARN|ERROR) ' "$WORK"/logs/*.log | sed -E 's/^[^ ]+ +//; s/[0-9]+(\.[0-9]+)?/N/g' | cut -c1-160 \
    | sort | uniq -c | sort -rn | head -n 15 >&2 || true
