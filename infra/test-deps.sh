#!/usr/bin/env bash
# Installs everything the integration tests need, idempotently, cached under ~/.cache/strata:
#   - kcat (Debian package) when the command is missing,
#   - a Python venv with pinned client libraries and pytest,
#   - kafkajs in a node_modules folder,
#   - the S3-compatible servers of the tiered-storage tests: moto's server (in the venv) and s3s-fs
#     (built once with cargo install, ~8 minutes, then cached).
# Each step writes a stamp with its pinned versions and is skipped when the stamp matches, so a second
# run takes well under a second. Prints what it did.
set -euo pipefail

CACHE="${STRATA_CACHE:-$HOME/.cache/strata}"
VENV="$CACHE/venv"
NODE_DIR="$CACHE/node"
PYTHON="${PYTHON:-python3}"

# Pinned versions. Change a pin here and the next run reinstalls that step.
PY_PINS=(
  "confluent-kafka==2.12.2"
  "kafka-python==2.2.15"
  "lz4==4.4.5"
  "pytest==8.4.2"
  "pytest-timeout==2.4.0"
  "moto[server]==5.1.22"
  "boto3==1.40.61"
)
S3S_FS_VERSION="0.14.1"
KAFKAJS_PIN="2.2.4"

export DEBIAN_FRONTEND=noninteractive
mkdir -p "$CACHE"

say() { printf 'test-deps: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# --- kcat ---------------------------------------------------------------------------------------------
if command -v kcat >/dev/null 2>&1; then
  say "kcat present ($(command -v kcat)), skipped"
else
  say "installing kcat with apt-get"
  if ! as_root apt-get install -y -q kcat </dev/null; then
    say "apt-get install failed, running apt-get update first"
    as_root apt-get update -q </dev/null
    as_root apt-get install -y -q kcat </dev/null
  fi
  command -v kcat >/dev/null 2>&1 || { say "kcat still missing after apt-get install"; exit 1; }
fi

# --- Python venv --------------------------------------------------------------------------------------
py_version="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
py_stamp_want="python=$py_version ${PY_PINS[*]}"
py_stamp="$VENV/.strata-stamp"
if [ -x "$VENV/bin/python" ] && [ -f "$py_stamp" ] && [ "$(cat "$py_stamp")" = "$py_stamp_want" ]; then
  say "python venv $VENV up to date (${PY_PINS[*]}), skipped"
else
  say "creating python venv $VENV with $PYTHON $py_version: ${PY_PINS[*]}"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input "${PY_PINS[@]}" </dev/null
  printf '%s' "$py_stamp_want" >"$py_stamp"
fi

# --- kafkajs ------------------------------------------------------------------------------------------
node_stamp_want="kafkajs=$KAFKAJS_PIN"
node_stamp="$NODE_DIR/.strata-stamp"
if [ -d "$NODE_DIR/node_modules/kafkajs" ] && [ -f "$node_stamp" ] && [ "$(cat "$node_stamp")" = "$node_stamp_want" ]; then
  say "kafkajs $KAFKAJS_PIN in $NODE_DIR up to date, skipped"
else
  command -v npm >/dev/null 2>&1 || { say "npm missing: install nodejs and npm"; exit 1; }
  say "installing kafkajs $KAFKAJS_PIN into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cat >"$NODE_DIR/package.json" <<JSON
{
  "name": "strata-test-deps",
  "private": true,
  "description": "Node clients used by Strata's integration tests",
  "dependencies": { "kafkajs": "$KAFKAJS_PIN" }
}
JSON
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error </dev/null)
  printf '%s' "$node_stamp_want" >"$node_stamp"
fi

# --- s3s-fs (S3-compatible server on a local directory, with SigV4 checking) -----------------------------
S3S_ROOT="$CACHE/s3s-fs-$S3S_FS_VERSION"
if [ -x "$S3S_ROOT/bin/s3s-fs" ]; then
  say "s3s-fs $S3S_FS_VERSION present ($S3S_ROOT/bin/s3s-fs), skipped"
else
  say "building s3s-fs $S3S_FS_VERSION with cargo install (once; about 8 minutes on 2 cores)"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --root "$S3S_ROOT" -q </dev/null
fi

say "ready: kcat=$(command -v kcat) python=$VENV/bin/python NODE_PATH=$NODE_DIR/node_modules s3s-fs=$S3S_ROOT/bin/s3s-fs moto=$VENV/bin/moto_server"
