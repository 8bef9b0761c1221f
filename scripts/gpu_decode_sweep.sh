#!/usr/bin/env bash
# Issue 4: where the decode loop loses time at small batch. Sweeps JaxEngine `unroll` (decode
# steps per while-loop iteration) at batch 96 and 18 (a 4-GPU mesh's rows per GPU), and one
# run with XLA's command buffers extended to while loops. Writes OUT/*.json.
#   bash scripts/gpu_decode_sweep.sh OUT
set -uo pipefail
OUT=${1:?out dir}
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -m openrs_jax.bench.decode --only jax --batches 18,96 --new 1024 --unroll 1,8 --out "$OUT/decode_unroll.json" 2>&1 | grep -v -i warn | tail -8
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL" \
  python3 -m openrs_jax.bench.decode --only jax --batches 18 --new 1024 --unroll 1 --out "$OUT/decode_cmdbuf.json" 2>&1 | grep -v -i warn | tail -4
