#!/usr/bin/env bash
# GPU run of the openrs3 recipe at the real 1.5B shape (random init, real tokenizer, real
# problems): a few full steps (72 completions up to 3584 tokens) with the step time split by
# phase. Needs the offline data copied into .gpu_data/ (tokenizer-qwen2/, the training jsonl)
# and, on the GPU image, the pure-Python wheels in .whl/ (datasets, math-verify, ...).
#
#   bash scripts/gpu_openrs3_steps.sh OUT_DIR [STEPS] [extra --set overrides...]
set -euo pipefail
OUT=${1:?out dir}; STEPS=${2:-3}; shift 2 || true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 - <<'PY'
from openrs_jax.bench.common import random_hf_checkpoint
from openrs_jax.model import deepseek_r1_distill_qwen_1p5b
random_hf_checkpoint("/tmp/r1_random", deepseek_r1_distill_qwen_1p5b())
PY
python3 -m openrs_jax.train --config openrs3 \
  --set model.name_or_path=/tmp/r1_random \
  --set model.tokenizer_name_or_path=.gpu_data/tokenizer-qwen2 \
  --set data.dataset_name=.gpu_data/train_deepscaler_aime_math.jsonl \
  --set data.solution_column=answer --set data.box_solution=true \
  --set optim.max_steps="$STEPS" --set checkpoint.save_steps=1000 \
  --set checkpoint.output_dir=/tmp/openrs3_run --set "log.report_to=[stdout, jsonl]" \
  --set rewards.num_workers=8 "$@" 2>&1 | grep -v -i "warn"
cp /tmp/openrs3_run/metrics.jsonl "$OUT/openrs3_metrics.jsonl"
