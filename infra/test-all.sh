#!/usr/bin/env bash
# The project's one test command (documented in the README; CI runs it through .ci/run):
#   bash infra/test-all.sh [--long] [-- extra pytest args]
# Steps: install test dependencies, cargo fmt --check, clippy -D warnings, build every target, cargo test,
# then the real-client suite (pytest over broker/tests/clients) against target/debug/strata.
# `--long` (or STRATA_LONG_TESTS=1) scales up the fault-injection runs.
# Every step is timed. Lint and test steps all run even when an earlier one fails, so one run shows every
# problem; a failed build stops the run. Exits non-zero if any step failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTEST_EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long) export STRATA_LONG_TESTS=1 ;;
    --) shift; PYTEST_EXTRA+=("$@"); break ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) PYTEST_EXTRA+=("$1") ;;
  esac
  shift
done

if [ -d "$HOME/.cargo/bin" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
LOG_DIR="$ROOT/target/test-logs"
mkdir -p "$LOG_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

STEP_NAMES=()
STEP_TIMES=()
STEP_RESULTS=()
FAILED=0

# run_step NAME LOGFILE CMD...: runs CMD with its output shown and copied to LOGFILE, records the time.
run_step() {
  local name="$1" log="$2"
  shift 2
  printf '\n==> %s: %s\n' "$name" "$*"
  local start end rc
  start=$(date +%s.%N)
  set +e
  "$@" </dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  end=$(date +%s.%N)
  local secs
  secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
  STEP_NAMES+=("$name")
  STEP_TIMES+=("$secs")
  if [ "$rc" -eq 0 ]; then
    STEP_RESULTS+=("ok")
    printf '<== %s ok in %ss\n' "$name" "$secs"
  else
    STEP_RESULTS+=("FAILED (exit $rc)")
    FAILED=1
    printf '<== %s FAILED (exit %s) in %ss\n' "$name" "$rc" "$secs"
  fi
  return "$rc"
}

summary() {
  printf '\n==> step durations\n'
  local i
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-14s %8ss  %s\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}" "${STEP_RESULTS[$i]}"
  done
  # Sum cargo's "test result:" lines and pytest's junit report into one closing line.
  local cargo_passed=0 cargo_failed=0 py_passed=0 py_failed=0 py_skipped=0
  if [ -f "$LOG_DIR/cargo-test.log" ]; then
    read -r cargo_passed cargo_failed < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i }
      } END { printf "%d %d\n", p, f }' "$LOG_DIR/cargo-test.log")
  fi
  if [ -f "$LOG_DIR/pytest.xml" ] && [ -n "${PY:-}" ]; then
    read -r py_passed py_failed py_skipped < <("$PY" - "$LOG_DIR/pytest.xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
s = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - s, f, s)
PYEOF
    )
  fi
  printf '  cargo test: %s passed, %s failed; pytest: %s passed, %s failed, %s skipped\n' \
    "$cargo_passed" "$cargo_failed" "$py_passed" "$py_failed" "$py_skipped"
  if [ "$FAILED" -ne 0 ] && [ $((cargo_failed + py_failed)) -eq 0 ]; then
    # A non-test step failed (lint, build): count it so the closing line never reads as all green.
    cargo_failed=$((cargo_failed + 1))
  fi
  printf '%d passed, %d failed\n' $((cargo_passed + py_passed)) $((cargo_failed + py_failed))
}
trap summary EXIT

run_step test-deps "$LOG_DIR/test-deps.log" bash "$ROOT/infra/test-deps.sh" || exit 1
PY="$CACHE/venv/bin/python"
# The S3-compatible servers are installed by test-deps: tests that need them must not skip.
export STRATA_REQUIRE_S3=1
export NODE_PATH="$CACHE/node/node_modules${NODE_PATH:+:$NODE_PATH}"

run_step fmt "$LOG_DIR/fmt.log" cargo fmt --all -- --check || true
run_step clippy "$LOG_DIR/clippy.log" cargo clippy --workspace --all-targets -- -D warnings || true
if ! run_step build "$LOG_DIR/build.log" cargo build --workspace --all-targets; then
  exit 1
fi
run_step cargo-test "$LOG_DIR/cargo-test.log" cargo test --workspace --no-fail-fast || true

export STRATA_BIN="${STRATA_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/strata}"
rm -f "$LOG_DIR/pytest.xml"
run_step pytest "$LOG_DIR/pytest.log" "$PY" -m pytest "$ROOT/broker/tests/clients" \
  --junitxml="$LOG_DIR/pytest.xml" -ra "${PYTEST_EXTRA[@]}" || true

[ "$FAILED" -eq 0 ]
