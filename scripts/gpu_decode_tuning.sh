#!/usr/bin/env bash
# Decode tuning on one GPU, in one lease: the decode-attention kernel sweep and sampler timing, a
# profile of the decode at batch 96 x 1024 new tokens before (OLD: a checkout of the previous
# code) and after, and the decode benchmark at 96 x 1024 and 96 x 3584 with the best kernel
# configuration of the sweep (first run for issue 19, as scripts/gpu_issue19.sh). Run from the
# new checkout's root:
#   OLD=/path/to/old/checkout bash scripts/gpu_decode_tuning.sh OUT_DIR
set -uo pipefail
OUT=${1:?out dir}
OLD=${OLD:-}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,memory.used --format=csv
date -u
echo "== sweep"
python3 scripts/gpu_decode_sweep.py --out "$OUT/sweep.json" ${OLD:+--old "$OLD/openrs_jax/model/decode_attention.py"} \
  --write-best /tmp/best 2>&1 | grep -v -i warn
ls /tmp/best_*.json && cat /tmp/best_*.json
B2048=/tmp/best_96x2048.json; B768=/tmp/best_96x768.json
[ -f $B768 ] || B768=$B2048
if [ -n "$OLD" ]; then
  echo "== profile before ($OLD)"
  (cd "$OLD" && PYTHONPATH=. python3 scripts/profile_gpu.py decode --batch 96 --new 1024 --out /tmp/prof_old --top 30 2>&1 | grep -v -i warn)
  cp /tmp/prof_old/summary.json "$OUT/prof_old.json"
fi
echo "== profile after"
XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*segment.*" \
  python3 scripts/profile_gpu.py decode --batch 96 --new 1024 --out /tmp/prof_new --top 30 \
  ${B768:+--decode-kernel $B768} 2>&1 | grep -v -i warn
cp /tmp/prof_new/summary.json "$OUT/prof_new.json"
(cd /tmp/dump && tar czf "$OUT/hlo_segment.tgz" $(ls | grep after_optimizations.txt | head -4)) || true
echo "== bench after"
python3 -m openrs_jax.bench.decode --only jax --batches 96 --new 1024 --decode-kernel $B768 --out "$OUT/bench_1024.json" 2>&1 | grep -v -i warn
python3 -m openrs_jax.bench.decode --only jax --batches 96 --new 3584 --decode-kernel $B2048 --out "$OUT/bench_3584.json" 2>&1 | grep -v -i warn
date -u
