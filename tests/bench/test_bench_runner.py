"""bench.runner: a worker's JSON record comes back; a failure, an out-of-memory or a hang comes
back as an error record, never as an exception; the result file does not outlive the run."""

import json
import os
import sys

from openrs_jax.bench import runner

# The worker gets `--_result PATH` appended: with `python -c`, sys.argv is ["-c", "--_result", PATH].
WRITE = "import json, os, sys; json.dump({'path': sys.argv[2], 'mem': os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION')}, open(sys.argv[2], 'w'))"


def test_record_comes_back_and_its_file_is_removed(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    rec = runner.run_json([sys.executable, "-c", WRITE], timeout_s=60)
    assert rec["mem"] is None
    assert not os.path.exists(rec["path"])
    rec = runner.run_json([sys.executable, "-c", WRITE], timeout_s=60, env=runner.FULL_GPU_ENV)
    assert rec["mem"] == "0.95"


def test_the_callers_environment_wins(monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    rec = runner.run_json([sys.executable, "-c", WRITE], timeout_s=60, env=runner.FULL_GPU_ENV)
    assert rec["mem"] == "0.5"


def test_failures_are_records():
    oom = runner.run_json([sys.executable, "-c", "import sys; sys.exit('XlaRuntimeError: RESOURCE_EXHAUSTED: 3 GiB')"],
                          timeout_s=60)
    assert oom["error"] == "OOM" and "RESOURCE_EXHAUSTED" in oom["detail"]
    err = runner.run_json([sys.executable, "-c", "raise ValueError('bad remat')"], timeout_s=60)
    assert err["error"] == "error" and "bad remat" in err["detail"]
    hang = runner.run_json([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert hang["error"] == "timeout" and "over 1 s" in hang["detail"]


def test_a_worker_that_writes_nothing_is_an_error_not_a_crash():
    rec = runner.run_json([sys.executable, "-c", "pass"], timeout_s=60)
    assert rec["error"] == "error" and "no JSON record" in rec["detail"]
    json.dumps(rec)  # a row of the results file like any other
