#!/usr/bin/env bash
# Benchmark of the transformers engine (issue 3): Pollux vs `transformers serve` on the ~27M-parameter random Llama of
# tests/tiny_models.py, 16 concurrent streaming requests x 64 tokens vs the same 16 one after another, TTFT, and the
# cost of constrained decoding. All options go to bench/hf_bench.py (see its --help), e.g.
#
#   bench/hf_run.sh                                   # the table of BENCHMARKS.md (about 5.5 minutes)
#   bench/hf_run.sh --peer none --pollux-variant '' --pollux-variant 'batch_wait_ms = 100'
#
# `transformers serve` needs transformers[serving] (fastapi, openai, rich, accelerate); they are installed into the
# venv with pip if missing, without changing any package already there. Raw results: bench/results/hf-<timestamp>/.
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
