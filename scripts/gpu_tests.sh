#!/usr/bin/env bash
# The GPU tests (tests/gpu, marker `gpu`: cuDNN attention, the fused decode kernel alone and
# under a mesh) on this machine's GPUs. tests/conftest.py makes CPU JAX's default platform, so
# the GPU is named here. Extra arguments go to pytest, e.g. `-k decode` or `-x`.
#   bash scripts/gpu_tests.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} exec python3 -m pytest -m gpu -q -s tests/gpu "$@"
