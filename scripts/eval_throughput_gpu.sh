#!/usr/bin/env bash
# Evaluation throughput of the 1.5B shape (random init, bf16, jax engine)
# for docs/BENCHMARKS.md. Prints the table and writes the JSON ($OUT).
# Extra arguments go to the benchmark, e.g. `--max-new-tokens 4096` or `--samples 4`.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-eval_throughput.json}
PYTHONPATH=. exec python -m openrs_jax.bench.eval_throughput \
  --tokenizer "$DATA/tokenizer-qwen2" --data-dir "$DATA" \
  --limit 64 --chunk-size 64 --samples 1 --max-new-tokens 2048 --out "$OUT" "$@"
