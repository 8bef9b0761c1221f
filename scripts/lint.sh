#!/usr/bin/env bash
# Lint and type check, as CI runs them: `ruff check .` (rules in pyproject's [tool.ruff]), then
# `pyright` (the package, [tool.pyright]; ~90 s on 2 cores). Installs the pinned `lint` extra
# first (idempotent) with $PYTHON, default python3.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
start=$SECONDS
# LINT_INSTALL=0: the `lint` extra is installed already (.ci/run installs it, then runs this
# beside the tests).
if [[ "${LINT_INSTALL:-1}" != 0 ]]; then
  $PY -m pip install -q -e ".[lint]"
fi
$PY -m ruff check .
# pyright resolves imports in $PY's environment (not whichever python is first on PATH).
$PY -m pyright --pythonpath "$($PY -c 'import sys; print(sys.executable)')"
echo "lint.sh: ruff + pyright: $(( SECONDS - start )) s"
