#!/usr/bin/env bash
# A new user's first command, as CI runs it: a clean virtualenv (nothing but pip: no torch, no
# test extras), the project installed as a wheel (`pip install .`, not editable), the CPU
# quickstart trained for a few steps from a directory outside the checkout, and its run
# directory checked (metrics.jsonl up to the last step, config.yaml, a checkpoint).
#
#   scripts/fresh_install_check.sh [STEPS]      # default 20; keeps nothing
set -euo pipefail

STEPS="${1:-20}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/venv"
PY="$VENV/bin/python"

start=$SECONDS
"$BASE_PYTHON" -m venv "$VENV"
# pip warns once per package about configured extra indexes that lack it: drop that noise.
# From a copy of the project's files (tracked and untracked-but-not-ignored, as a fresh clone
# would hold them): setuptools builds in the source tree (build/, *.egg-info), and .ci/run runs
# this beside the checkout's own `pip install -e .`.
SRC="$WORK/src"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$SRC" -xf -
else
  (cd "$ROOT" && tar --exclude='./.venv*' --exclude=./build --exclude='./*.egg-info' -cf - .) | tar -C "$SRC" -xf -
fi
# --no-compile: the venv is thrown away after one short run; byte-compiling all of JAX, Flax and
# transformers up front would cost more than the modules the quickstart imports.
"$PY" -m pip install --quiet --no-compile "$SRC" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "fresh_install_check: pip install . in a clean venv: $(( SECONDS - start )) s"

# The main job must not lean on what only the tests install.
"$PY" - <<'PYEOF'
import importlib.util, sys
leaked = [m for m in ("torch", "pytest") if importlib.util.find_spec(m) is not None]
sys.exit(f"fresh_install_check: the clean venv has {leaked}: the check would not be clean" if leaked else 0)
PYEOF

cd "$WORK"  # outside the checkout: recipes must come from the installed package
start=$SECONDS
"$VENV/bin/openrs-train" --config quickstart --set "optim.max_steps=$STEPS" --set log.logging_steps=10 \
    --set "checkpoint.save_steps=$STEPS" --output-dir "$WORK/run"
echo "fresh_install_check: quickstart, $STEPS steps: $(( SECONDS - start )) s"

"$PY" - "$WORK/run" "$STEPS" <<'PYEOF'
import json, math, pathlib, sys
run, steps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
assert rows and rows[-1]["step"] == steps, f"metrics.jsonl ends at {rows[-1]['step'] if rows else None}, not {steps}"
assert all(math.isfinite(r["reward"]) and math.isfinite(r["kl"]) for r in rows), rows
assert (run / "config.yaml").is_file() and any((run / "checkpoints").iterdir()), sorted(run.iterdir())
# clu's parameter overview works without TensorFlow (README, "Dependencies").
from flax import nnx
from openrs_jax.model import Qwen2, tiny
from openrs_jax.model.summary import parameter_overview
table = parameter_overview(Qwen2(tiny(), rngs=nnx.Rngs(0)))
assert "tensorflow" not in sys.modules and table.splitlines()[-1].startswith(f"Total: {tiny().num_params():,}")
print(f"fresh_install_check: ok ({len(rows)} metric rows, last step {rows[-1]['step']}, reward {rows[-1]['reward']:.3f})")
PYEOF
