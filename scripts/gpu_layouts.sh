#!/usr/bin/env bash
# Device layouts: the openrs3 recipe at the 1.5B shape on 1, 2 and 4 GPUs of
# one host as one data-parallel mesh, and the paper's split (3 GPUs train, 1 generates).
# Per-device micro-batch 6 in every layout (72 completions per step), as the paper's 3 GPUs
# x 6 per device. Each run writes OUT/<name>.metrics.jsonl and OUT/<name>.log.
#
#   bash scripts/gpu_layouts.sh OUT PHASE [STEPS]
#     PHASE small: 1 GPU (device 0) and 2 GPUs (devices 1,2), run side by side
#     PHASE four:  4 GPUs as one mesh, then the split layout 3 + 1
set -uo pipefail
OUT=${1:?out dir}; PHASE=${2:?phase}; STEPS=${3:-3}
S=scripts/gpu_openrs3_steps.sh
case "$PHASE" in
  small)
    # Make the shared random checkpoint first so the two runs do not race for it.
    bash $S "$OUT" 0 || exit 1
    CUDA_VISIBLE_DEVICES=0 NAME=gpu1 bash $S "$OUT" "$STEPS" &
    CUDA_VISIBLE_DEVICES=1,2 NAME=gpu2 bash $S "$OUT" "$STEPS" \
      --set optim.micro_batch_size=12 --set optim.gradient_accumulation_steps=6 &
    wait ;;
  four)
    NAME=gpu4 bash $S "$OUT" "$STEPS" \
      --set optim.micro_batch_size=24 --set optim.gradient_accumulation_steps=3
    NAME=split3p1 bash $S "$OUT" "$STEPS" --set mesh.rollout_devices=1 \
      --set optim.micro_batch_size=18 --set optim.gradient_accumulation_steps=4 ;;
  *) echo "unknown phase $PHASE"; exit 2 ;;
esac
