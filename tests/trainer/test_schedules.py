"""Rollout schedules: one-step-off equals a hand-sequenced reference of the same schedule, on a
sampler mesh of 4 fake devices and a trainer mesh of 4; it resumes exactly after kill -9 (the
batch in flight is in the checkpoint) and learns the quickstart task."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from openrs_jax.config import ConfigError, load_config
from openrs_jax.metrics import PhaseTimer, read_metrics, run_dependent
from openrs_jax.trainer import setup
from openrs_jax.trainer.grpo_step import collect, learn, sync_weights
from openrs_jax.trainer.trainer import Trainer

REPO = pathlib.Path(__file__).resolve().parents[2]
SPLIT = ["mesh.num_devices=8", "mesh.rollout_devices=4"]


def _cfg(run, *extra):
    return load_config("quickstart", [f"checkpoint.output_dir={run}", "log.report_to=[jsonl]", "log.logging_steps=1",
                                      "optim.max_steps=5", "checkpoint.save_steps=100", *extra])


def _strip(rows):
    return [run_dependent(r) for r in rows]


def test_one_step_off_equals_the_hand_sequenced_schedule(tmp_path):
    cfg = _cfg(tmp_path / "run", "rollout.mode=one_step_off", *SPLIT)
    trainer = Trainer(cfg)
    trainer.run()
    got = read_metrics(tmp_path / "run")
    assert [r["rollout/staleness"] for r in got] == [0, 1, 1, 1, 1]

    # The reference: the same parts, called in the schedule's order by hand, in one thread.
    # B1 and B2 with W0; then B(k+1) with W(k-1): sample the next batch *before* update k.
    ref_cfg = _cfg(tmp_path / "ref", "rollout.mode=one_step_off", *SPLIT)
    closers = []
    run, state = setup.build_run(ref_cfg, meshes=setup.build_meshes(ref_cfg), run_dir=tmp_path / "ref",
                                 resume=False, log=lambda m: None, closers=closers)
    try:
        timer = PhaseTimer()
        batches = [collect(run, 1, state.data, policy_step=0)]
        losses = []
        for k in range(1, 6):
            sync_weights(run, state, timer, own_copy=True)  # the engine takes W(k-1)
            exp = batches[-1]
            if k < 5:
                batches.append(collect(run, k + 1, exp.data, policy_step=state.step))  # B(k+1) with W(k-1)
                batches[-1].wait_scores()
            state, learned = learn(run, state, exp, timer)  # update k on B(k)
            losses.append({"loss": float(learned["update"]["loss"]), "grad_norm": float(learned["update"]["grad_norm"]),
                           "reward": float(np.mean(exp.wait_scores().total))})
    finally:
        for close in reversed(closers):
            close()
    for row, want in zip(got, losses):
        assert row["loss"] == want["loss"] and row["grad_norm"] == want["grad_norm"]
        assert row["reward"] == pytest.approx(want["reward"], abs=1e-7)
    # The sampler mesh got its own copy of the weights each step (never the trainer's buffers).
    q_train = trainer.state.params["layers"][0]["attn"]["q_proj"][...]
    q_sample = trainer.run_parts.engine._params["layers"][0]["attn"]["q_proj"][...]
    assert len(q_train.sharding.device_set & q_sample.sharding.device_set) == 0


def test_one_step_off_resumes_exactly_after_sigkill(tmp_path):
    common = ["--config", "quickstart", "--set", "optim.max_steps=12", "--set", "checkpoint.save_steps=6",
              "--set", "log.logging_steps=1", "--set", "log.report_to=[jsonl]", "--set", "rollout.mode=one_step_off"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "openrs_jax.train", *common, *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)

    proc = cli("--output-dir", str(tmp_path / "straight"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "openrs_jax.train", *common, "--output-dir", str(killed)], cwd=REPO,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "6"
    deadline = time.time() + 600
    while not (ckpt / "_CHECKPOINT_METADATA").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ckpt.exists() and not (killed / "checkpoints" / "12").exists()
    meta = json.loads((ckpt / "meta" / "metadata").read_text())
    assert meta["in_flight"]["step"] == 7  # the batch sampled ahead is part of the checkpoint
    proc = cli("--output-dir", str(killed), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _strip(read_metrics(killed)) == _strip(read_metrics(tmp_path / "straight"))


@pytest.mark.slow
def test_one_step_off_learns_the_quickstart(tmp_path):
    trainer = Trainer(load_config("quickstart", [f"checkpoint.output_dir={tmp_path / 'run'}", "log.report_to=[jsonl]",
                                                 "rollout.mode=one_step_off", *SPLIT]))
    trainer.run()
    rows = read_metrics(tmp_path / "run")
    assert np.mean([r["reward"] for r in rows[:3]]) <= 0.2
    assert np.mean([r["reward"] for r in rows[-3:]]) >= 0.8


@pytest.mark.slow
def test_async_learns_the_quickstart_within_its_staleness_bound(tmp_path):
    trainer = Trainer(load_config("quickstart", [f"checkpoint.output_dir={tmp_path / 'run'}", "log.report_to=[jsonl]",
                                                 "log.logging_steps=1", "rollout.mode=async", "rollout.max_staleness=2",
                                                 *SPLIT]))
    trainer.run()
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 300
    assert max(r["rollout/staleness"] for r in rows) <= 2
    assert all(np.isfinite(r["sampling/importance_sampling_ratio/mean"]) for r in rows)
    # Which weights each batch was sampled from depends on the threads' timing (staleness 1 or
    # 2), so the learning curve does too. Mean reward of the last 30 steps, measured in 7 runs
    # (idle and loaded 2-core machine, 2026-12-03): 0.79, 0.82, 0.89, 0.89, 0.90, 0.92, 0.93
    # (mean 0.88, sd 0.05; the 0.79 failed this test's first bound of 0.8 in a full run). 0.7
    # is 3.5 sd under the mean; a run that does not learn stays near the first steps' 0.03.
    assert np.mean([r["reward"] for r in rows[:30]]) <= 0.2
    assert np.mean([r["reward"] for r in rows[-30:]]) >= 0.7


def test_overlapped_jax_sampling_needs_devices_of_its_own():
    """Sampler and trainer threads sharing a multi-device mesh would interleave their collectives."""
    for mode in ("one_step_off", "async"):
        with pytest.raises(ConfigError, match=f"rollout.mode '{mode}'.*mesh.rollout_devices"):
            setup.build_meshes(load_config("quickstart", [f"rollout.mode={mode}", "mesh.num_devices=8"]))
        train, sample = setup.build_meshes(load_config("quickstart", [f"rollout.mode={mode}", *SPLIT]))
        assert train.size == 4 and sample.size == 4
        train, sample = setup.build_meshes(load_config("quickstart", [f"rollout.mode={mode}", "mesh.num_devices=1"]))
        assert train.size == 1 and sample is None
    setup.build_meshes(load_config("quickstart", ["mesh.num_devices=8"]))  # sync shares them


def test_overlapped_jax_sampling_turns_gpu_command_buffers_off():
    """A sampler thread beside the update breaks XLA:GPU's CUDA-graph capture (seen on an H200):
    the CLI turns command buffers off for exactly those runs, and a GPU run without it is refused."""
    from openrs_jax.trainer.schedule import NO_COMMAND_BUFFERS, check_thread_safe_backend, thread_safe_xla_flags
    from openrs_jax.trainer.setup import samples_in_a_thread

    sync = load_config("quickstart", [])
    off = load_config("quickstart", ["rollout.mode=one_step_off"])
    ahead = load_config("quickstart", ["rollout.mode=async"])
    served = load_config("quickstart", ["rollout.mode=one_step_off", "rollout.engine=vllm"])
    assert [samples_in_a_thread(c) for c in (sync, off, ahead, served)] == [False, True, True, False]

    assert thread_safe_xla_flags("") == NO_COMMAND_BUFFERS
    assert thread_safe_xla_flags("--xla_dump_to=/tmp/x") == f"--xla_dump_to=/tmp/x {NO_COMMAND_BUFFERS}"
    chosen = "--xla_gpu_enable_command_buffer=FUSION"  # the user's own choice is kept
    assert thread_safe_xla_flags(chosen) == chosen

    with pytest.raises(ValueError, match="XLA_FLAGS='--xla_gpu_enable_command_buffer='"):
        check_thread_safe_backend(off, "gpu", "")
    check_thread_safe_backend(off, "gpu", NO_COMMAND_BUFFERS)
    check_thread_safe_backend(off, "cpu", "")  # no command buffers on CPU
    check_thread_safe_backend(sync, "gpu", "")
    check_thread_safe_backend(served, "gpu", "")
