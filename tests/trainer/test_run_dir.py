"""The run directory's rules under faults: one writer, logs that end at the restored step,
nothing rewritten by a failed resume, a relative run directory found from anywhere, a full
disk while logging, a signal stop that exits non-zero (issue: faults and bad input lose nothing)."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from openrs_jax.checkpoint import RunCheckpointer
from openrs_jax.config import ConfigError, load_config
from openrs_jax.metrics import JsonlWriter, read_metrics
from openrs_jax.trainer.run_dir import RunDirBusyError, RunDirLock
from openrs_jax.trainer.trainer import RunWriteError, Trainer

REPO = pathlib.Path(__file__).resolve().parents[2]


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def _cfg(run, *extra):
    return load_config("quickstart", [f"checkpoint.output_dir={run}", "log.report_to=[jsonl]",
                                      "log.logging_steps=1", "optim.max_steps=3", "checkpoint.save_steps=100", *extra])


def _fake_rows(path, steps):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": s, "reward": -1.0}) + "\n" for s in steps))


@pytest.mark.slow  # 35-55 s on 2 cores: training CLI runs
def test_logs_of_a_run_killed_before_its_first_checkpoint_are_not_doubled(tmp_path):
    run = tmp_path / "run"
    # What a run killed at step 5, before any checkpoint, leaves behind.
    _fake_rows(run / "metrics.jsonl", range(1, 6))
    _fake_rows(run / "completions.jsonl", range(1, 6))
    Trainer(_cfg(run), resume=True).run()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    assert all(r["reward"] != -1.0 for r in read_metrics(run))
    assert {r["step"] for r in read_jsonl(run / "completions.jsonl")} == {1, 2, 3}
    # A fresh start (no --resume) in such a directory is treated the same way.
    run2 = tmp_path / "run2"
    _fake_rows(run2 / "metrics.jsonl", range(1, 9))
    Trainer(_cfg(run2)).run()
    assert [r["step"] for r in read_metrics(run2)] == [1, 2, 3]


@pytest.mark.slow  # 35-55 s on 2 cores: training CLI runs
def test_failed_resume_leaves_the_run_directory_as_it_was(tmp_path):
    run = tmp_path / "run"
    Trainer(_cfg(run)).run()
    before = {p: p.read_bytes() for p in (run / "config.yaml", run / "metrics.jsonl")}
    # Another model shape: the checkpoint cannot be restored into it.
    bad = _cfg(run, "model.overrides.hidden_size=48", "optim.max_steps=6")
    with pytest.raises(Exception, match="not compatible with the stored shape"):
        Trainer(bad, resume=True).run()
    assert {p: p.read_bytes() for p in before} == before
    # The documented recovery still works: the run's own config resumes it.
    cfg = load_config(run / "config.yaml", ["optim.max_steps=4"])
    Trainer(cfg, resume=True).run()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]


def test_two_trainers_on_one_directory(tmp_path):
    run = tmp_path / "run"
    lock = RunDirLock(run)
    lock.acquire()  # another live trainer
    try:
        with pytest.raises(RunDirBusyError, match=f"in use by pid {os.getpid()}"):
            Trainer(_cfg(run)).run()
        assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
    finally:
        lock.release()
    # A lock file left by a dead process (no flock held) does not block a restart.
    (run / ".lock").write_text("pid 999999 on elsewhere\n")
    Trainer(_cfg(run)).run()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


@pytest.mark.slow  # 35-55 s on 2 cores: training CLI runs
def test_relative_run_dir_resumes_from_another_working_directory(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    common = [sys.executable, "-m", "openrs_jax.train", "--set", "optim.max_steps=2", "--set", "checkpoint.save_steps=1",
              "--set", "log.report_to=[jsonl]", "--set", "log.logging_steps=1"]
    proc = subprocess.run([*common, "--config", "quickstart", "--output-dir", "runs/rel"], cwd=first, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg_file = first / "runs" / "rel" / "config.yaml"
    # From elsewhere, the run's own config points back at the run (an absolute directory).
    proc = subprocess.run([*common[:-6], "--set", "optim.max_steps=3", "--set", "optim.learning_rate=0.01",
                           "--config", str(cfg_file), "--resume"],
                          cwd=second, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stdout and not (second / "runs").exists()
    # A changed learning rate on resume is not silent.
    assert "optim.learning_rate 0.002 -> 0.01" in proc.stdout and "learning rate of step 3 moves" in proc.stdout
    assert [r["step"] for r in read_metrics(first / "runs" / "rel")] == [1, 2, 3]
    # --resume of a directory that does not exist is an error, not a silent fresh start.
    proc = subprocess.run([*common, "--config", "quickstart", "--output-dir", "runs/rel", "--resume"], cwd=second,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and str(second / "runs" / "rel") in proc.stderr


def test_full_disk_while_logging_saves_the_step(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = JsonlWriter.write

    def write(self, record):
        if record.get("step") == 2 and self.path.name == "metrics.jsonl":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, record)

    monkeypatch.setattr(JsonlWriter, "write", write)
    with pytest.raises(RunWriteError, match=r"step 2 .*No space left on device.*checkpoint of step 2 was saved"):
        Trainer(_cfg(run, "optim.max_steps=5")).run()
    ck = RunCheckpointer(run, async_save=False)
    assert ck.all_steps() == [2]
    ck.close()


def test_signal_stop_saves_and_exits_nonzero(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)
    p = subprocess.Popen([sys.executable, "-m", "openrs_jax.train", "--config", "quickstart", "--set",
                          "optim.max_steps=100000", "--set", "log.report_to=[jsonl]", "--set", "log.logging_steps=1", "--output-dir", str(run)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while len(read_metrics(run)) < 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "checkpoint saved" in out
    ck = RunCheckpointer(run, async_save=False)
    assert ck.all_steps() == [read_metrics(run)[-1]["step"]]
    ck.close()


def test_resume_of_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Trainer(_cfg(tmp_path / "nope"), resume=True).run()
