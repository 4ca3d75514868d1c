#!/usr/bin/env bash
# Benchmark: non-streaming generateContent on the emulator vs. a bare uvicorn endpoint (the ceiling of the stack).
# A third target, the same fixed answer through Starlette (bench/starlette_app.py), shows the framework's own cost.
#
#   bench/run.sh                       # DURATION=10s per run, concurrency 1 8 32
#   DURATION=30s CONCURRENCY="8" bench/run.sh
#
# Environment (all optional):
#   DURATION=10s      wrk duration of each measured run
#   WARMUP=3s         wrk warm-up of each target before measuring (at concurrency 8; not reported)
#   CONCURRENCY="1 8 32"
#   THREADS=1         most wrk threads (-t is min(THREADS, c)); wrk gets one core, so one thread by default
#   SERVER_CPU=0      core the servers are pinned to (taskset), one at a time under load
#   WRK_CPU=1         core wrk is pinned to; PIN=0 turns pinning off
#   POLLUX_PORT=18080 BARE_PORT=18081 STARLETTE_PORT=18083
#   PYTHON=<repo>/.venv/bin/python
#
# For every concurrency it measures the bare endpoint, then Starlette, then Pollux, with identical wrk options and
# pinning, and prints a Markdown table; raw wrk output, server logs and the table are kept in
# bench/results/<timestamp>/ (git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONCURRENCY=${CONCURRENCY:-"1 8 32"}
THREADS=${THREADS:-1}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
PIN=${PIN:-1}
POLLUX_PORT=${POLLUX_PORT:-18080}
BARE_PORT=${BARE_PORT:-18081}
STARLETTE_PORT=${STARLETTE_PORT:-18083}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
MODEL_PATH=/v1beta/models/gemini-2.5-flash:generateContent
REQUEST='{"contents":[{"parts":[{"text":"Explain how AI works in a few words"}]}]}'

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (apt-get install -y wrk)" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

if [[ $PIN == 1 ]]; then
  server_pin=(taskset -c "$SERVER_CPU")
  wrk_pin=(taskset -c "$WRK_CPU")
  pinning="servers on CPU $SERVER_CPU, wrk on CPU $WRK_CPU (taskset)"
else
  server_pin=()
  wrk_pin=()
  pinning="none"
fi

OUT=$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
DATA_DIR=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_http NAME PID URL [curl args...]: until URL answers (any HTTP status), or fail if the process died.
wait_http() {
  local name=$1 pid=$2 url=$3
  shift 3
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before answering; its log:" >&2
      cat "$OUT/$name.log" >&2
      exit 1
    fi
    if curl -s -o /dev/null "$@" "$url"; then
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not answer $url in 30 s" >&2
  exit 1
}

cd "$ROOT"
"${server_pin[@]}" "$PYTHON" -m pollux.cli serve --port "$POLLUX_PORT" --data-dir "$DATA_DIR" \
  >"$OUT/pollux.log" 2>&1 &
pids+=($!)
pollux_pid=$!
"${server_pin[@]}" "$PYTHON" "$ROOT/bench/bare_app.py" --port "$BARE_PORT" >"$OUT/bare.log" 2>&1 &
pids+=($!)
bare_pid=$!
"${server_pin[@]}" "$PYTHON" "$ROOT/bench/starlette_app.py" --port "$STARLETTE_PORT" >"$OUT/starlette.log" 2>&1 &
pids+=($!)
starlette_pid=$!

wait_http pollux "$pollux_pid" "http://127.0.0.1:$POLLUX_PORT/healthz"
wait_http bare "$bare_pid" "http://127.0.0.1:$BARE_PORT/"
wait_http starlette "$starlette_pid" "http://127.0.0.1:$STARLETTE_PORT/"
GEMINI_API_KEY=$(sed -n 's/.*export GEMINI_API_KEY=//p' "$OUT/pollux.log" | head -1)
if [[ -z $GEMINI_API_KEY ]]; then
  echo "no 'export GEMINI_API_KEY=' line in pollux's output:" >&2
  cat "$OUT/pollux.log" >&2
  exit 1
fi
export GEMINI_API_KEY

declare -A URL=(
  [bare]="http://127.0.0.1:$BARE_PORT$MODEL_PATH"
  [starlette]="http://127.0.0.1:$STARLETTE_PORT$MODEL_PATH"
  [pollux]="http://127.0.0.1:$POLLUX_PORT$MODEL_PATH"
)

# One request each: all must answer 200; keep the bodies to compare their sizes.
for target in bare starlette pollux; do
  status=$(curl -s -o "$OUT/$target.response.json" -w '%{http_code}' -X POST \
    -H "x-goog-api-key: $GEMINI_API_KEY" -H 'Content-Type: application/json' -d "$REQUEST" "${URL[$target]}")
  if [[ $status != 200 ]]; then
    echo "$target answered HTTP $status to the benchmark request:" >&2
    cat "$OUT/$target.response.json" >&2
    exit 1
  fi
done

declare -A PID=([bare]=$bare_pid [starlette]=$starlette_pid [pollux]=$pollux_pid)

# CPU time (clock ticks) of a process, and busy ticks of the servers' core (or of all cores without pinning).
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
core_busy() {
  local cpu=cpu
  [[ $PIN == 1 ]] && cpu=cpu$SERVER_CPU
  awk -v c="$cpu" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# run_wrk TARGET C DURATION LABEL: one wrk run; its output goes to $OUT/LABEL.txt, and to stdout its WRK_RESULT line
# plus server_cpu_us (the server's CPU time per request) and other_busy_pct (share of the servers' core busy with
# anything but the server during the run: interference from other processes on a shared machine).
run_wrk() {
  local target=$1 c=$2 duration=$3 label=$4
  local t=$((THREADS < c ? THREADS : c))
  local hz p0 b0 s0 p1 b1 s1 line
  hz=$(getconf CLK_TCK)
  p0=$(proc_ticks "${PID[$target]}"); b0=$(core_busy); s0=$(date +%s.%N)
  "${wrk_pin[@]}" wrk -t "$t" -c "$c" -d "$duration" --latency -s "$ROOT/bench/generate.lua" "${URL[$target]}" \
    >"$OUT/$label.txt" 2>&1
  p1=$(proc_ticks "${PID[$target]}"); b1=$(core_busy); s1=$(date +%s.%N)
  line=$(grep '^WRK_RESULT ' "$OUT/$label.txt" | tail -1)
  awk -v l="$line" -v p="$((p1 - p0))" -v b="$((b1 - b0))" -v hz="$hz" -v el="$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" \
      -v pin="$PIN" 'BEGIN {
    match(l, /requests=[0-9]+/); n = substr(l, RSTART + 9, RLENGTH - 9)
    other = pin == 1 ? sprintf("%.0f%%", (b > p ? 100 * (b - p) / hz / el : 0)) : "n/a"
    printf "%s server_cpu_us=%.0f other_busy_pct=%s\n", l, (n > 0 ? 1e6 * p / hz / n : 0), other }'
}

field() { # field LINE NAME
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), -t min($THREADS, c), -c c, -d $DURATION, warm-up $WARMUP at c=8"
  echo "pinning: $pinning"
  echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    echo "code: commit $(git -C "$ROOT" rev-parse --short HEAD), $(git -C "$ROOT" status --porcelain -- pollux | wc -l) uncommitted change(s) under pollux/"
  fi
  echo "response sizes: pollux $(wc -c <"$OUT/pollux.response.json") B, bare and starlette $(wc -c <"$OUT/bare.response.json") B"
} | tee "$OUT/meta.txt" >&2

echo "warming up ($WARMUP each)" >&2
run_wrk bare 8 "$WARMUP" warmup-bare >/dev/null
run_wrk starlette 8 "$WARMUP" warmup-starlette >/dev/null
run_wrk pollux 8 "$WARMUP" warmup-pollux >/dev/null

table="| target | concurrency | req/s | p50 ms | p99 ms | throughput vs bare | added p50 ms | server CPU µs/req | other load on server core | errors |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
verdict=""
# row LABEL C RESULT BARE_RESULT: one table row; the comparison columns are against the bare endpoint's run.
row() {
  local label=$1 c=$2 r=$3 b=$4 versus="| | |"
  if [[ $r != "$b" ]]; then
    versus=$(awk -v p="$(field "$r" rps)" -v b="$(field "$b" rps)" -v pp="$(field "$r" p50_ms)" \
      -v bp="$(field "$b" p50_ms)" 'BEGIN { printf "| %.0f %% | %+.2f |", 100 * p / b, pp - bp }')
  fi
  printf '| %s | %s | %.0f | %.2f | %.2f %s %s | %s | %s |' "$label" "$c" "$(field "$r" rps)" "$(field "$r" p50_ms)" \
    "$(field "$r" p99_ms)" "$versus" "$(field "$r" server_cpu_us)" "$(field "$r" other_busy_pct)" \
    "$(($(field "$r" errors) + $(field "$r" non2xx)))"
}

for c in $CONCURRENCY; do
  echo "c=$c: bare" >&2
  b=$(run_wrk bare "$c" "$DURATION" "bare-c$c")
  echo "c=$c: starlette" >&2
  st=$(run_wrk starlette "$c" "$DURATION" "starlette-c$c")
  echo "c=$c: pollux" >&2
  p=$(run_wrk pollux "$c" "$DURATION" "pollux-c$c")
  table+=$'\n'"$(row "bare uvicorn" "$c" "$b" "$b")"
  table+=$'\n'"$(row "starlette, fixed body" "$c" "$st" "$b")"
  table+=$'\n'"$(row pollux "$c" "$p" "$b")"
  if [[ $c == 8 ]]; then
    verdict=$(awk -v pr="$(field "$p" rps)" -v br="$(field "$b" rps)" -v pp="$(field "$p" p50_ms)" \
      -v bp="$(field "$b" p50_ms)" 'BEGIN {
      r = pr / br; a = pp - bp
      printf "goal at c=8: throughput %.0f %% of bare (goal >= 50 %%): %s; added p50 %.2f ms (goal <= 2 ms): %s",
        100 * r, (r >= 0.5 ? "MET" : "NOT MET"), a, (a <= 2 ? "MET" : "NOT MET") }')
  fi
done

{
  echo
  echo "$table"
  [[ -n $verdict ]] && echo && echo "$verdict"
} | tee "$OUT/table.md"
echo "raw results: $OUT" >&2
