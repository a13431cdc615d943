#!/usr/bin/env bash
# Tiered storage benchmark: offload cost (PUTs per GB) and read-back speed from the object store.
#
#   benchmarks/tiered.sh [--quick] [--size-bytes N] [--no-build] [--keep]
#
# 1. starts s3s-fs (an S3 server on local disk) on a free port with a temporary root and bucket, and
#    a release `strata` broker that offloads to it (segment.bytes 64 MiB, local.retention.bytes
#    64 MiB, remote task every 200 ms, 128 MiB upload parts), metrics on a free port;
# 2. produces SIZE (default 2 GiB, --quick 512 MiB) of 1 KiB records, acks=all, to a new 1-partition
#    topic, then waits until no sealed segment awaits upload and the partition's local files are
#    small (local retention applied);
# 3. reads PUT requests/bytes, segments uploaded and the summed upload time from /metrics;
# 4. cold read: restarts the broker with a new, empty cache directory (same data dir and bucket)
#    and consumes the whole topic from offset 0 once (MB/s, GETs, CPU of broker, S3 server, client);
# 5. warm read: consumes it again without a restart (the memory cache holds the whole topic);
# 6. prints a markdown table and the commands. Every process it started is stopped on exit.
#
# Environment:
#   STRATA_TIERED_SEGMENT_BYTES        segment.bytes (default 67108864)
#   STRATA_TIERED_LOCAL_RETENTION      local.retention.bytes (default = segment bytes)
#   STRATA_TIERED_CACHE_MEMORY_BYTES   --remote-cache-memory-bytes (default 3 GiB)
#   STRATA_TIERED_CACHE_DISK_BYTES     --remote-cache-disk-bytes (default 4 GiB)
#   STRATA_TIERED_CHUNK_BYTES          --remote-cache-chunk-bytes (default: the broker's, 4 MiB)
#   STRATA_TIERED_PART_BYTES           --remote-upload-part-bytes (default 128 MiB)
#   STRATA_TIERED_FETCH_BYTES          consumer max.partition.fetch.bytes (default 16 MiB)
#   STRATA_TIERED_S3_ENDPOINT, STRATA_TIERED_S3_BUCKET
#       use an S3 server that is already running (MinIO, AWS, ...) instead of starting s3s-fs;
#       credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, region from
#       STRATA_TIERED_S3_REGION (default us-east-1). The bucket must exist; objects go under a new
#       prefix per run and are not deleted.
#   STRATA_TIERED_STORE=file   offload to the local filesystem store instead (measures the broker's
#       remote read path without an S3 server in the way)
#   S3S_FS        path of the s3s-fs binary (default ~/.cache/strata/s3s-fs-0.14.1/bin/s3s-fs)
#   PYTHON        python3 for the helper (default python3)
#   CARGO_TARGET_DIR  where the release binaries are (default <repo>/target)
#   TMPDIR        where the data directory, bucket and caches go
set -euo pipefail

usage() {
    sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

INVOCATION="benchmarks/tiered.sh $*"
QUICK=0
BUILD=1
KEEP=0
SIZE=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --size-bytes) SIZE="${2:?--size-bytes needs a number}"; shift ;;
        -h|--help) usage ;;
        *) echo "unknown argument $1" >&2; usage ;;
    esac
    shift
done
if [[ -z "$SIZE" ]]; then
    if [[ $QUICK -eq 1 ]]; then SIZE=$((512 << 20)); else SIZE=$((2 << 30)); fi
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET/release/strata-bench"
BROKER_BIN="$TARGET/release/strata"
HELPER="$ROOT/benchmarks/tiered_bench.py"
PY="${PYTHON:-python3}"
S3S_FS="${S3S_FS:-$HOME/.cache/strata/s3s-fs-0.14.1/bin/s3s-fs}"

RECORD_SIZE=1024
RECORDS=$((SIZE / RECORD_SIZE))
SEG="${STRATA_TIERED_SEGMENT_BYTES:-67108864}"
LOCAL_RET="${STRATA_TIERED_LOCAL_RETENTION:-$SEG}"
CACHE_MEM="${STRATA_TIERED_CACHE_MEMORY_BYTES:-$((3 << 30))}"
CACHE_DISK="${STRATA_TIERED_CACHE_DISK_BYTES:-$((4 << 30))}"
FETCH_BYTES="${STRATA_TIERED_FETCH_BYTES:-16777216}"
CMD_TIMEOUT="${STRATA_BENCH_TIMEOUT_SECS:-900}"

if [[ $BUILD -eq 1 ]]; then
    cargo build --release --bin strata --bin strata-bench
fi
for b in "$BENCH" "$BROKER_BIN"; do
    [[ -x "$b" ]] || { echo "$b is missing; build it or drop --no-build" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-tiered.XXXXXX")"
STATE="$WORK/state"
mkdir -p "$STATE" "$WORK/data"
BROKER_PID=""
S3_PID=""

stop_pid() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    stop_pid "$BROKER_PID"
    stop_pid "$S3_PID"
    if [[ $status -ne 0 || $KEEP -eq 1 ]]; then
        if [[ $status -ne 0 ]]; then
            for log in "$WORK"/broker-*.log; do
                [[ -f "$log" ]] || continue
                echo "--- last lines of $log ---" >&2
                tail -n 30 "$log" >&2 || true
            done
        fi
        echo "(kept $WORK)" >&2
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- object store -------------------------------------------------------------------------------
RUN_ID="$(date +%s)"
if [[ "${STRATA_TIERED_STORE:-s3}" == "file" ]]; then
    # The broker's own read path without an S3 server: the embedded local-filesystem store.
    S3_ENDPOINT=""
    OBJECT_STORE="file://$WORK/objects"
    S3_DESC="local filesystem store (file://), no S3 server"
    S3_CMD="(none)"
elif [[ -n "${STRATA_TIERED_S3_ENDPOINT:-}" ]]; then
    S3_ENDPOINT="$STRATA_TIERED_S3_ENDPOINT"
    BUCKET="${STRATA_TIERED_S3_BUCKET:?STRATA_TIERED_S3_BUCKET is needed with STRATA_TIERED_S3_ENDPOINT}"
    : "${AWS_ACCESS_KEY_ID:?AWS_ACCESS_KEY_ID is needed}" "${AWS_SECRET_ACCESS_KEY:?AWS_SECRET_ACCESS_KEY is needed}"
    S3_DESC="external S3 endpoint $S3_ENDPOINT"
    S3_CMD="(external)"
    OBJECT_STORE="s3://$BUCKET/strata-tiered-$RUN_ID"
else
    [[ -x "$S3S_FS" ]] || { echo "s3s-fs not found at $S3S_FS (set S3S_FS)" >&2; exit 1; }
    S3_PORT="$("$PY" "$HELPER" free-port)"
    # s3s-fs keeps a multipart upload's metadata in ONE file whose name holds base64(bucket) and
    # base64(key) plus the upload id; with Strata's object keys that passes the 255-byte file name
    # limit (500 "File name too long" on CreateMultipartUpload) unless bucket and prefix are short.
    BUCKET="b$RUN_ID"
    OBJECT_STORE="s3://$BUCKET/t"
    mkdir -p "$WORK/s3/$BUCKET"
    export AWS_ACCESS_KEY_ID="strata-bench-ak" AWS_SECRET_ACCESS_KEY="strata-bench-sk"
    S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
    S3_CMD="$S3S_FS --host 127.0.0.1 --port $S3_PORT --access-key $AWS_ACCESS_KEY_ID --secret-key $AWS_SECRET_ACCESS_KEY $WORK/s3"
    echo "+ $S3_CMD" >&2
    "$S3S_FS" --host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID" \
        --secret-key "$AWS_SECRET_ACCESS_KEY" "$WORK/s3" > "$WORK/s3s-fs.log" 2>&1 &
    S3_PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null && break
        kill -0 "$S3_PID" 2>/dev/null || { cat "$WORK/s3s-fs.log" >&2; echo "s3s-fs exited" >&2; exit 1; }
        sleep 0.1
    done
    S3_DESC="$("$S3S_FS" --version 2>/dev/null | head -1 || echo s3s-fs) on local disk, same machine"
fi
REGION="${STRATA_TIERED_S3_REGION:-us-east-1}"

# --- broker -------------------------------------------------------------------------------------
PORT="$("$PY" "$HELPER" free-port)"
MPORT="$("$PY" "$HELPER" free-port)"
while [[ "$MPORT" == "$PORT" ]]; do MPORT="$("$PY" "$HELPER" free-port)"; done
BOOTSTRAP="127.0.0.1:$PORT"
METRICS="http://127.0.0.1:$MPORT/metrics"

broker_args() {  # $1 = cache directory
    echo broker --listen "127.0.0.1:$PORT" --advertised-listener "127.0.0.1:$PORT" \
        --data-dir "$WORK/data" --metrics-listen "127.0.0.1:$MPORT" \
        --object-store "$OBJECT_STORE" \
        ${S3_ENDPOINT:+--object-store-endpoint "$S3_ENDPOINT" --object-store-path-style true} \
        ${S3_ENDPOINT:+--object-store-allow-http true --object-store-region "$REGION"} \
        --broker-config "segment.bytes=$SEG" --broker-config "local.retention.bytes=$LOCAL_RET" \
        --log-retention-check-interval-ms 1000 \
        --remote-task-interval-ms 200 --remote-upload-part-bytes "${STRATA_TIERED_PART_BYTES:-$((128 << 20))}" \
        --remote-cache-memory-bytes "$CACHE_MEM" --remote-cache-disk-bytes "$CACHE_DISK" \
        --remote-cache-dir "$1" ${STRATA_TIERED_CHUNK_BYTES:+--remote-cache-chunk-bytes "$STRATA_TIERED_CHUNK_BYTES"}
}

BROKER_CMDS=()
start_broker() {  # $1 = name of this start (log file and cache directory)
    local cache="$WORK/cache-$1"
    rm -rf "$cache"
    mkdir -p "$cache"
    # shellcheck disable=SC2207
    local args=($(broker_args "$cache"))
    BROKER_CMDS+=("$BROKER_BIN ${args[*]}")
    echo "+ $BROKER_BIN ${args[*]}" >&2
    "$BROKER_BIN" "${args[@]}" > "$WORK/broker-$1.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 300); do
        kill -0 "$BROKER_PID" 2>/dev/null || { echo "the broker exited during start-up" >&2; exit 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && curl -sf "$METRICS" > /dev/null && return 0
        sleep 0.1
    done
    echo "the broker did not listen on $PORT in 30 s" >&2
    exit 1
}

BENCH_CMDS=()
bench() {  # $1 = output file; rest = strata-bench arguments
    local out="$1"; shift
    BENCH_CMDS+=("$(basename "$BENCH") $*")
    echo "+ strata-bench $*" >&2
    timeout "$CMD_TIMEOUT" "$BENCH" "$@" > "$out" 2> "$out.err" || {
        local s=$?; cat "$out" "$out.err" >&2; echo "!! strata-bench failed ($s)" >&2; return $s; }
    grep -v '^RESULT ' "$out" >&2 || true
}

cpu() { [[ -n "$1" ]] && "$PY" "$HELPER" cpu "$1" 2>/dev/null || echo ""; }

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
TOPIC="tiered-$RUN_ID"
start_broker produce

# Readiness: a produce that is acknowledged (separate topic, 100 records, never rolled).
bench "$STATE/ready.out" produce --bootstrap "$BOOTSTRAP" --topic "tiered-ready-$RUN_ID" --partitions 1 \
    --create-topic --record-size 100 --count 100

# --- 2. produce, wait for offload ---------------------------------------------------------------
"$PY" "$HELPER" snapshot "$METRICS" "$STATE/m_before_produce.json"
bench "$STATE/produce.out" produce --bootstrap "$BOOTSTRAP" --topic "$TOPIC" --partitions 1 --create-topic \
    --record-size "$RECORD_SIZE" --count "$RECORDS" --acks all --compression none --linger-ms 5 \
    --batch-size 1000000 --broker-pid "$BROKER_PID"
T0=$(date +%s.%N)
MAX_LOCAL=$((LOCAL_RET + SEG + (32 << 20)))
"$PY" "$HELPER" wait-offload "$METRICS" "$TOPIC" "$WORK/data/$TOPIC-0" "$MAX_LOCAL" 600
T1=$(date +%s.%N)
"$PY" "$HELPER" snapshot "$METRICS" "$STATE/m_after_offload.json"
LOCAL_AFTER="$("$PY" "$HELPER" dir-bytes "$WORK/data/$TOPIC-0")"
echo "local files of $TOPIC-0 after offload:" >&2
ls -la "$WORK/data/$TOPIC-0" >&2

# --- 4. cold read -------------------------------------------------------------------------------
stop_pid "$BROKER_PID"
BROKER_PID=""
start_broker cold
# The first consumer with a group.id makes the broker create __consumer_offsets (50 partitions,
# an fsync each): do that now, on the small local topic, so the cold read does not pay for it.
bench "$STATE/warmup.out" consume --bootstrap "$BOOTSTRAP" --topic "tiered-ready-$RUN_ID" --partitions 1 --count 100
"$PY" "$HELPER" snapshot "$METRICS" "$STATE/m_before_cold.json"
CONSUME_ARGS=(consume --bootstrap "$BOOTSTRAP" --topic "$TOPIC" --partitions 1 --count "$RECORDS"
    -X "max.partition.fetch.bytes=$FETCH_BYTES" -X "fetch.max.bytes=$((4 * FETCH_BYTES))"
    -X "queued.max.messages.kbytes=1048576")

# CPU seconds of broker and S3 server over one read (from /proc before and after; the client's
# own figure comes from its RESULT line).
timed_read() {  # $1 = name (cold|warm)
    local b0 s0 b1 s1
    b0="$(cpu "$BROKER_PID")"; s0="$(cpu "${S3_PID:-}")"
    bench "$STATE/$1.out" "${CONSUME_ARGS[@]}"
    b1="$(cpu "$BROKER_PID")"; s1="$(cpu "${S3_PID:-}")"
    "$PY" - "$STATE" "$1" "$b0" "$b1" "${s0:-}" "${s1:-}" <<'EOF'
import json, os, sys
state, name, b0, b1, s0, s1 = sys.argv[1:7]
path = os.path.join(state, "state.json")
st = json.load(open(path)) if os.path.exists(path) else {}
res = {}
for line in open(os.path.join(state, name + ".out")):
    if line.startswith("RESULT "):
        res = json.loads(line[7:])
cpu = {"strata": float(b1) - float(b0)}
if s0 and s1:
    cpu["s3s-fs"] = float(s1) - float(s0)
if res.get("client_cpu_secs") is not None:
    cpu["client"] = res["client_cpu_secs"]
st["cpu_" + name] = cpu
json.dump(st, open(path, "w"))
EOF
}

timed_read cold
"$PY" "$HELPER" snapshot "$METRICS" "$STATE/m_after_cold.json"

# --- 5. warm read -------------------------------------------------------------------------------
timed_read warm
"$PY" "$HELPER" snapshot "$METRICS" "$STATE/m_after_warm.json"

# --- 6. report ----------------------------------------------------------------------------------
"$PY" - "$STATE" "$TOPIC" "$RECORDS" "$RECORD_SIZE" "$T0" "$T1" "$LOCAL_AFTER" <<'EOF'
import json, os, sys
state, topic, records, size, t0, t1, local = sys.argv[1:8]
path = os.path.join(state, "state.json")
st = json.load(open(path)) if os.path.exists(path) else {}
st.update(topic=topic, records=int(records), record_size=int(size),
          payload_bytes=int(records) * int(size), offload_wait_secs=float(t1) - float(t0),
          local_bytes_after_offload=int(local))
json.dump(st, open(path, "w"))
EOF

WARN_COUNT="$(cat "$WORK"/broker-*.log | grep -ciE ' (warn|error) ' || true)"
{
    echo "### $(date -u +%Y-%m-%dT%H:%M:%SZ) tiered storage$([[ $QUICK -eq 1 ]] && echo ' (--quick)')"
    echo
    echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo none)\`$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr); client, broker and S3 server on this one machine"
    echo "- object store: $S3_DESC"
    echo "- load average (1/5/15 min) before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- broker log lines at WARN/ERROR: $WARN_COUNT"
    echo
    "$PY" "$HELPER" report "$STATE"
    echo
    echo "Commands:"
    echo
    echo '```sh'
    echo "$INVOCATION"
    echo "$S3_CMD"
    echo "${BROKER_CMDS[0]}   # produce"
    echo "${BROKER_CMDS[1]}   # restart, empty cache dir: cold + warm read"
    for c in "${BENCH_CMDS[@]}"; do echo "$c"; done
    echo '```'
} | tee "$WORK/report.md"
if [[ -n "${STRATA_TIERED_REPORT:-}" ]]; then cp "$WORK/report.md" "$STRATA_TIERED_REPORT"; fi
grep -hiE ' (warn|error) ' "$WORK"/broker-*.log | head -n 20 >&2 || true
