#!/usr/bin/env bash
# Profile `pollux serve` under the benchmark's load: wrk at concurrency C against generateContent while py-spy samples
# the server; writes collapsed stacks (and a speedscope file) to bench/results/profile-<timestamp>/ and prints the top
# functions by self and inclusive time (bench/profile_summary.py).
#
#   bench/profile.sh                # C=8, 20 s of samples
#   C=32 SECONDS_=30 bench/profile.sh
#
# py-spy comes from PyPI (pip install py-spy) into the venv if it is missing. Pinning as in bench/run.sh: the server
# on SERVER_CPU, wrk and py-spy on WRK_CPU.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
C=${C:-8}
SECS=${SECONDS_:-20}
RATE=${RATE:-200}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
PORT=${POLLUX_PORT:-18082}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
PYSPY=$(dirname "$PYTHON")/py-spy
URL=http://127.0.0.1:$PORT/v1beta/models/gemini-2.5-flash:generateContent

command -v wrk >/dev/null 2>&1 || apt-get install -y wrk >/dev/null 2>&1 \
  || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
[[ -x $PYSPY ]] || "$PYTHON" -m pip install -q py-spy

OUT=$ROOT/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
DATA_DIR=$(mktemp -d)
server_pid=
wrk_pid=
cleanup() {
  [[ -n $wrk_pid ]] && kill "$wrk_pid" 2>/dev/null || true
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT

cd "$ROOT"
taskset -c "$SERVER_CPU" "$PYTHON" -m pollux.cli serve --port "$PORT" --data-dir "$DATA_DIR" >"$OUT/pollux.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$OUT/pollux.log" >&2; exit 1; }
  sleep 0.1
done
GEMINI_API_KEY=$(sed -n 's/.*export GEMINI_API_KEY=//p' "$OUT/pollux.log" | head -1)
export GEMINI_API_KEY

taskset -c "$WRK_CPU" wrk -t1 -c "$C" -d 3s -s bench/generate.lua "$URL" >/dev/null   # warm-up
taskset -c "$WRK_CPU" wrk -t1 -c "$C" -d "$((SECS + 4))s" --latency -s bench/generate.lua "$URL" >"$OUT/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 1
taskset -c "$WRK_CPU" "$PYSPY" record -p "$server_pid" -d "$SECS" -r "$RATE" --format raw -o "$OUT/pollux-c$C.txt" \
  >/dev/null 2>&1
wait "$wrk_pid" || true
wrk_pid=
grep '^WRK_RESULT' "$OUT/wrk.txt" >&2 || true
"$PYTHON" "$ROOT/bench/profile_summary.py" "$OUT/pollux-c$C.txt" 40 | tee "$OUT/summary.txt"
echo "profile: $OUT" >&2
