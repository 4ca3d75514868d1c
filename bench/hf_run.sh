#!/usr/bin/env bash
# Benchmark of the transformers engine (issue 3): Pollux vs `transformers serve` (plain and --continuous-batching) on
# the ~27M-parameter random Llama of tests/tiny_models.py, streaming, greedy, 64 tokens per request. Phases (--phases,
# a comma list, default all): concurrent (16 requests at once), sequential (the same 16 one after another), poisson
# (32 requests at Poisson arrivals: exponential gaps with mean 120 ms from a seeded random.Random, the same schedule
# for every target; --poisson-requests, --poisson-gap-ms, --poisson-seed; TTFT p50/p90/max and tokens/s), and
# constrained (Pollux only: the JSON-schema twin of each of the others, for the cost of constrained decoding, in the
# shared batch for poisson; --no-constrained drops it). Pollux's engine_options are source, threads and max_batch_size
# (--max-batch-size, default --requests) only, plus what a --pollux-variant adds. All options go to bench/hf_bench.py
# (see its --help), e.g.
#
#   bench/hf_run.sh                                   # all phases, all targets
#   bench/hf_run.sh --phases poisson,concurrent --peer cb
#   bench/hf_run.sh --peer none --pollux-variant '' --pollux-variant 'max_batch_tokens = 2048'
#
# `transformers serve` needs transformers[serving] (fastapi, openai, rich, accelerate); they are installed into the
# venv with pip if missing, without changing any package already there. Raw results: bench/results/hf-<timestamp>/
# (or --out DIR): table.md and raw.json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

if ! "$PYTHON" -c 'from transformers.utils.import_utils import is_serve_available as a; raise SystemExit(not a())'; then
  echo "installing transformers[serving] extras for the peer (fastapi openai rich accelerate)" >&2
  constraints=$(mktemp)
  "$PYTHON" -m pip freeze | grep -E '^[A-Za-z0-9_.-]+==' | sed 's/+cpu//' >"$constraints"
  "$PYTHON" -m pip install -q -c "$constraints" fastapi openai rich accelerate
  rm -f "$constraints"
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed for pinning" >&2; exit 1; }

cd "$ROOT"
exec "$PYTHON" "$ROOT/bench/hf_bench.py" "$@"
