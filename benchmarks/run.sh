#!/usr/bin/env bash
# Runs the standard benchmark matrix and appends a markdown report to RESULTS_FILE.
#
#   benchmarks/run.sh [--quick] [--no-build] [--bootstrap HOST:PORT [--broker-pid PID]] RESULTS_FILE
#
# Without --bootstrap it builds the release binaries, starts a fresh local Strata broker on free
# loopback ports with a temporary data directory, and stops it (and deletes the data) at the end.
# With --bootstrap it runs the same matrix against a broker that is already running (Strata or a
# peer such as Apache Kafka or Redpanda); --broker-pid adds CPU and memory figures when that broker
# runs on this machine.
#
# Matrix: record sizes 1 KiB and 100 B; acks=all and acks=1; 1 and 8 partitions; each produce run is
# followed by a consume of what it wrote; then an e2e latency run per record size at half the peak
# acks=all produce rate; and the loopback TCP ceiling for each record size (best of 3). Every command that ran
# is listed in the report. --quick sends a third of the records and runs e2e for 10 s.
#
# Environment: STRATA_BENCH_TIMEOUT_SECS (per command, default 600), STRATA_BENCH_E2E_SECS,
# TMPDIR (where the broker's data directory goes).
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

INVOCATION="benchmarks/run.sh $*"
QUICK=0
BUILD=1
BOOTSTRAP=""
EXTERNAL_PID=""
RESULTS_FILE=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --bootstrap) BOOTSTRAP="${2:?--bootstrap needs HOST:PORT}"; shift ;;
        --broker-pid) EXTERNAL_PID="${2:?--broker-pid needs a pid}"; shift ;;
        -h|--help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) [[ -z "$RESULTS_FILE" ]] || usage; RESULTS_FILE="$1" ;;
    esac
    shift
done
[[ -n "$RESULTS_FILE" ]] || usage
[[ "$RESULTS_FILE" = /* ]] || RESULTS_FILE="$PWD/$RESULTS_FILE"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH="target/release/strata-bench"
BROKER_BIN="target/release/strata"

if [[ $QUICK -eq 1 ]]; then
    MATRIX_SIZES=("1024:300000" "100:1000000")
    E2E_SECS="${STRATA_BENCH_E2E_SECS:-10}"
else
    MATRIX_SIZES=("1024:1000000" "100:3000000")
    E2E_SECS="${STRATA_BENCH_E2E_SECS:-30}"
fi
ACKS_LIST=("all" "1")
PARTITIONS_LIST=(1 8)
BATCH_BYTES=1000000
CMD_TIMEOUT="${STRATA_BENCH_TIMEOUT_SECS:-600}"

if [[ $BUILD -eq 1 ]]; then
    if [[ -n "$BOOTSTRAP" ]]; then
        cargo build --release -p strata-benchmarks
    else
        cargo build --release -p strata-broker -p strata-benchmarks
    fi
fi
[[ -x "$BENCH" ]] || { echo "$BENCH is missing; build it or drop --no-build" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")"
RESULTS_JSONL="$WORK/results.jsonl"
: > "$RESULTS_JSONL"
BROKER_PID=""
BROKER_CMD=""
FAILURES=0

cleanup() {
    local status=$?
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$WORK/broker.log" ]]; then
        echo "--- last lines of the broker log ($WORK/broker.log) ---" >&2
        tail -n 40 "$WORK/broker.log" >&2 || true
        echo "(kept $WORK for inspection)" >&2
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "$BOOTSTRAP" ]]; then
    PORT="$("$BENCH" free-port)"
    MPORT="$("$BENCH" free-port)"
    while [[ "$MPORT" == "$PORT" ]]; do MPORT="$("$BENCH" free-port)"; done
    BOOTSTRAP="127.0.0.1:$PORT"
    mkdir -p "$WORK/data"
    BROKER_ARGS=(broker --listen "127.0.0.1:$PORT" --advertised-listener "127.0.0.1:$PORT"
        --data-dir "$WORK/data" --metrics-listen "127.0.0.1:$MPORT")
    BROKER_CMD="$BROKER_BIN ${BROKER_ARGS[*]}"
    echo "+ $BROKER_CMD" >&2
    "$BROKER_BIN" "${BROKER_ARGS[@]}" > "$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 300); do
        kill -0 "$BROKER_PID" 2>/dev/null || { echo "the broker exited during start-up" >&2; exit 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || { echo "the broker did not listen on $PORT in 30 s" >&2; exit 1; }
    # Ready means it takes a produce and serves it back, not just that the port is open.
    if ! timeout 120 "$BENCH" produce --bootstrap "$BOOTSTRAP" --topic bench-ready --partitions 1 \
            --create-topic --record-size 100 --count 100 > "$WORK/ready.log" 2>&1; then
        cat "$WORK/ready.log" >&2
        echo "the broker does not accept produce yet" >&2
        exit 1
    fi
else
    BROKER_PID=""
    BROKER_CMD="(external broker at $BOOTSTRAP)"
fi
SAMPLE_PID="${EXTERNAL_PID:-$BROKER_PID}"
PID_ARGS=()
[[ -n "$SAMPLE_PID" ]] && PID_ARGS=(--broker-pid "$SAMPLE_PID")
RUN_ID="$(date +%s)"

# Runs one strata-bench command, shows its output, and keeps its RESULT line. A failed run is
# reported (its RESULT line says ok=false) and the matrix goes on.
bench() {
    echo "+ $BENCH $*" >&2
    local out="$WORK/last.log" status=0
    timeout "$CMD_TIMEOUT" "$BENCH" "$@" > "$out" 2> "$WORK/last.err" || status=$?
    cat "$out"
    grep -v '^RESULT ' "$WORK/last.err" | tail -n 20 >&2 || true
    grep '^RESULT ' "$out" >> "$RESULTS_JSONL" || true
    if [[ $status -ne 0 ]]; then
        echo "!! exit status $status" >&2
        FAILURES=$((FAILURES + 1))
    fi
    return 0
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# Loopback throughput on a shared VM varies from run to run: three tries, the table uses the best.
for entry in "${MATRIX_SIZES[@]}"; do
    size="${entry%%:*}"; count="${entry##*:}"
    for _ in 1 2 3; do
        bench tcp-ceiling --record-size "$size" --count "$count" --batch-bytes "$BATCH_BYTES"
    done
done

for entry in "${MATRIX_SIZES[@]}"; do
    size="${entry%%:*}"; count="${entry##*:}"
    for acks in "${ACKS_LIST[@]}"; do
        for parts in "${PARTITIONS_LIST[@]}"; do
            topic="bench-$RUN_ID-s$size-a$acks-p$parts"
            bench produce --bootstrap "$BOOTSTRAP" --topic "$topic" --partitions "$parts" --create-topic \
                --record-size "$size" --count "$count" --acks "$acks" --compression none \
                --linger-ms 5 --batch-size "$BATCH_BYTES" "${PID_ARGS[@]}"
            bench consume --bootstrap "$BOOTSTRAP" --topic "$topic" --partitions "$parts" \
                --count "$count" "${PID_ARGS[@]}"
        done
    done
done

for entry in "${MATRIX_SIZES[@]}"; do
    size="${entry%%:*}"
    if peak="$("$BENCH" peak --input "$RESULTS_JSONL" --record-size "$size" --acks all)"; then
        read -r peak_rate peak_parts <<< "$peak"
        rate=$((peak_rate / 2))
        bench e2e --bootstrap "$BOOTSTRAP" --topic "bench-$RUN_ID-e2e-s$size" --partitions "$peak_parts" \
            --create-topic --record-size "$size" --rate "$rate" --duration-secs "$E2E_SECS" --acks all \
            --compression none "${PID_ARGS[@]}"
    else
        echo "!! no successful acks=all produce run for record size $size; skipping its e2e run" >&2
        FAILURES=$((FAILURES + 1))
    fi
done

mkdir -p "$(dirname "$RESULTS_FILE")"
{
    echo
    echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ) strata-bench matrix$([[ $QUICK -eq 1 ]] && echo ' (--quick)')"
    echo
    echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo none)\`$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr)"
    echo "- broker: \`$BROKER_CMD\`"
    echo "- harness: \`$INVOCATION\`; client, broker and TCP sink share the same cores"
    echo "- load average (1/5/15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the machine competes with the broker)"
    echo "- failed commands: $FAILURES"
    echo
    "$BENCH" table --input "$RESULTS_JSONL"
} >> "$RESULTS_FILE"
echo "appended the report to $RESULTS_FILE ($FAILURES failed commands)" >&2
[[ $FAILURES -eq 0 ]]
