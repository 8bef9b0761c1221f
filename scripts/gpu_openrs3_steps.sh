#!/usr/bin/env bash
# GPU run of the openrs3 recipe at the real 1.5B shape (random init, real tokenizer, real
# problems): a few full steps (72 completions up to 3584 tokens) with the step time split by
# phase. Needs the offline data copied into .gpu_data/ (tokenizer-qwen2/, the training jsonl)
# and, on the GPU image, the pure-Python wheels in .whl/ (datasets, math-verify, ...).
#
#   [NAME=openrs3] bash scripts/gpu_openrs3_steps.sh OUT_DIR [STEPS] [extra --set overrides...]
#
# Writes OUT_DIR/$NAME.metrics.jsonl and OUT_DIR/$NAME.log; the run directory is /tmp/$NAME.
# The random checkpoint (/tmp/r1_random) is made once per machine and reused. LOG_DROP is the
# pattern of log lines left out (default "warn"; with JAX_LOG_COMPILES=1 use e.g. "userwarning").
set -euo pipefail
OUT=${1:?out dir}; STEPS=${2:-3}; shift 2 || true
NAME=${NAME:-openrs3}
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site/datasets ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
if [ ! -f /tmp/r1_random/config.json ]; then
  python3 - <<'PY'
from openrs_jax.bench.common import random_hf_checkpoint
from openrs_jax.model import deepseek_r1_distill_qwen_1p5b
random_hf_checkpoint("/tmp/r1_random", deepseek_r1_distill_qwen_1p5b())
PY
fi
[ "$STEPS" = 0 ] && exit 0  # only the checkpoint
rm -rf "/tmp/$NAME"
set +e
python3 -m openrs_jax.train --config openrs3 \
  --set model.name_or_path=/tmp/r1_random \
  --set model.tokenizer_name_or_path=.gpu_data/tokenizer-qwen2 \
  --set data.dataset_name=.gpu_data/train_deepscaler_aime_math.jsonl \
  --set data.solution_column=answer --set data.box_solution=true \
  --set optim.max_steps="$STEPS" --set checkpoint.save_steps=1000 \
  --set checkpoint.output_dir="/tmp/$NAME" --set "log.report_to=[stdout, jsonl]" \
  --set rewards.num_workers=8 "$@" 2>&1 | grep --line-buffered -v -i "${LOG_DROP:-warn}" > "$OUT/$NAME.log"
rc=${PIPESTATUS[0]}
set -e
cp "/tmp/$NAME/metrics.jsonl" "$OUT/$NAME.metrics.jsonl" 2>/dev/null || true
tail -n 5 "$OUT/$NAME.log"
exit "$rc"
