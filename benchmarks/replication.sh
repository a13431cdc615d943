#!/usr/bin/env bash
# Replication benchmark: failover of a broker leading a third of 3,000 RF3 partitions, idle cost of those
# replicas, and acks=all throughput with replication factor 1 against 3.
#
#   benchmarks/replication.sh [--quick] [--no-build] [--only failover,throughput,idle] [--partitions N]
#                             [--system strata|kafka|both] [--idle-steps 1000,3000,10000]
#                             [--reassign-sizes-mb 100,1024]
#
# Starts three release `strata broker` processes on loopback (benchmarks/cluster_bench.py's cluster) and/or
# a 3-node Apache Kafka KRaft cluster (benchmarks/apache_kafka.py; its jars are fetched once with Maven into
# ~/.cache/strata/kafka-<version>), one after the other, and measures each with
# benchmarks/replication_bench.py; prints a markdown section for benchmarks/RESULTS.md.
# --system: default both. --quick: 600 partitions and 50,000 records. `--only idle` (not in the default
# sections) adds RF3 partitions up to each of --idle-steps and measures idle CPU and RSS at each.
# `--only reassign` (not in the default sections either) starts 4 nodes (Strata tiered on an s3s-fs it starts,
# installed by infra/test-deps.sh) and moves one partition of each of --reassign-sizes-mb to the 4th node.
# Environment: STRATA_BIN, STRATA_BENCH, PYTHON, TMPDIR, KAFKA_VERSION, KAFKA_HEAP_OPTS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
INVOCATION="benchmarks/replication.sh $*"
BUILD=1
ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) ARGS+=(--partitions 600 --records 50000) ;;
        --no-build) BUILD=0 ;;
        --only) ARGS+=(--only "${2:?}"); shift ;;
        --partitions) ARGS+=(--partitions "${2:?}"); shift ;;
        --system) ARGS+=(--system "${2:?}"); shift ;;
        --idle-steps) ARGS+=(--idle-steps "${2:?}"); shift ;;
        --reassign-sizes-mb) ARGS+=(--reassign-sizes-mb "${2:?}"); shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export STRATA_BIN="${STRATA_BIN:-$TARGET/release/strata}"
export STRATA_BENCH="${STRATA_BENCH:-$TARGET/release/strata-bench}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$HOME/.cache/strata/venv/bin/python" ]]; then PYTHON="$HOME/.cache/strata/venv/bin/python"; else PYTHON=python3; fi
fi
if [[ $BUILD -eq 1 ]]; then
    cargo build --release -p strata-broker -p strata-benchmarks
fi
# A broker keeps about 3 files open per partition replica: the idle run's 10,000 replicas need more than
# the usual limits (Kafka's documentation asks for 100,000 as well). Raising the hard limit needs
# CAP_SYS_RESOURCE; without it (20,000 in our sandbox) a broker holds at most about 6,500 replicas.
if [[ "$(ulimit -Hn)" != unlimited && "$(ulimit -Hn)" -lt 200000 ]]; then ulimit -Hn 200000 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-replication.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" benchmarks/replication_bench.py run --work-dir "$WORK" --invocation "$INVOCATION" "${ARGS[@]}"
