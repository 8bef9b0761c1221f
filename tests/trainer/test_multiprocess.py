"""Training as 2 JAX processes × 4 CPU devices on 127.0.0.1 (gloo collectives), against 1 process
× 8 devices: the same rewards and completions, the same losses (see `close`), written by process
0 only; a process killed with SIGKILL stops the other within the heartbeat timeout, leaving the
last checkpoint intact, and `--resume` continues exactly; the shrunken openrs3 recipe resumes
from a 1-process checkpoint in 2 processes (another process count) with the same step as 1.

Why `close` and not `==` for the update's numbers: the gradient all-reduce across processes
(gloo) adds the devices' partial sums in another order than XLA's in-process all-reduce, so
float32 results differ in the last bits (1e-7 relative, measured). Everything decided on the
host from sampled tokens (rewards, advantages, lengths, completions) must match exactly.
"""

import json
import shutil
import signal
import time

import numpy as np
import pytest

from multiprocess_utils import launch, strip_times
from openrs_jax.checkpoint import verify_step
from openrs_jax.metrics import read_metrics

EXACT_PREFIXES = ("reward", "rewards/", "completions/", "frac_reward_zero_std", "num_completions_dropped",
                  "update_applied", "learning_rate", "step", "rollout/staleness")
HANG = 900  # seconds: a run still going after this is hung (a guard, not a speed check)


def assert_same_run(got: list[dict], want: list[dict]) -> None:
    got, want = strip_times(got), strip_times(want)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for key in w:
            if key.startswith(EXACT_PREFIXES):
                assert g[key] == w[key] or (np.isnan(g[key]) and np.isnan(w[key])), (w["step"], key, g[key], w[key])
            else:
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (w["step"], key, g[key], w[key])


def quickstart(out, *extra):
    return ["--config", "quickstart", "--output-dir", str(out), "--set", "optim.max_steps=6", "--set",
            "checkpoint.save_steps=3", "--set", "log.logging_steps=1", "--set", "log.report_to=[jsonl]",
            "--set", "rollout.max_completion_length=2", *extra]


@pytest.mark.slow  # 3 min on 2 CPU cores (4 when busy): 1 + 2 + 2 processes of the quickstart
def test_two_processes_match_one_then_survive_a_kill_and_resume_exactly(tmp_path):
    ref = launch(quickstart(tmp_path / "ref"), processes=1, devices=8, log_dir=tmp_path / "logs-ref")
    assert ref.wait(HANG) == [0], ref.output(0)[-3000:]
    want = read_metrics(tmp_path / "ref")

    run = tmp_path / "run"
    group = launch(quickstart(run), processes=2, devices=4, log_dir=tmp_path / "logs-run")
    ckpt = run / "checkpoints" / "3"
    deadline = time.monotonic() + HANG
    while not (ckpt / "_CHECKPOINT_METADATA").exists() and group.procs[1].poll() is None:
        assert time.monotonic() < deadline, "no checkpoint 3"
        time.sleep(0.05)
    group.procs[1].send_signal(signal.SIGKILL)
    codes = group.wait(HANG)
    out0 = group.output(0)
    assert codes[1] == -signal.SIGKILL and codes[0] not in (0, None), out0[-3000:]
    # XLA's coordination service reports the silent process, or gloo the socket to it closing
    # (reset or closed, depending on where process 0's read was when the peer's socket went).
    lost_peer = ("stopped sending heartbeats", "process 1", "Connection reset by peer", "Connection closed by peer")
    assert any(words in out0 for words in lost_peer), out0[-3000:]
    assert verify_step(ckpt) is None  # the last committed checkpoint is intact

    # Process 0 alone wrote the run's files; both wrote checkpoint shards.
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    resumed = launch(quickstart(run, "--resume"), processes=2, devices=4, log_dir=tmp_path / "logs-resume")
    assert resumed.wait(HANG) == [0, 0], resumed.output(0)[-3000:] + resumed.output(1)[-3000:]
    assert "resumed from" in resumed.output(0) and resumed.output(1).count("[openrs]") == 0
    assert_same_run(read_metrics(run), want)
    # The completions table (texts, rewards, advantages) of the resumed 2-process run is the 1-process one.
    assert (run / "completions.jsonl").read_text() == (tmp_path / "ref" / "completions.jsonl").read_text()


def openrs3(out, model_dir, shared_data, max_steps, *extra):
    sets = [
        f"model.name_or_path={model_dir}", f"model.tokenizer_name_or_path={shared_data / 'tokenizer-qwen2'}",
        "model.dtype=float32", "model.param_dtype=float32", "model.remat=full",
        f"data.dataset_name={shared_data / 'train_deepscaler_aime_math.jsonl'}", "data.solution_column=answer",
        "data.box_solution=true", "data.max_prompt_length=128", "mesh.num_devices=8", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2",
        "rollout.max_completion_length=24", "rewards.reward_kwargs={cosine: {max_len: 24}}", "rewards.num_workers=1",
        f"optim.max_steps={max_steps}", "optim.learning_rate=1e-3", "optim.warmup_ratio=0",
        "optim.num_prompts_per_step=2", "optim.micro_batch_size=6", "optim.gradient_accumulation_steps=2",
        "checkpoint.save_steps=1", "log.logging_steps=1", "log.report_to=[jsonl]",
    ]
    return ["--config", "openrs3", "--output-dir", str(out), *[a for s in sets for a in ("--set", s)], *extra]


@pytest.mark.slow  # 2.2 min on 2 CPU cores (6 when busy): 1 process for 2 steps, then 2 processes for 1
def test_openrs3_small_resumes_a_one_process_checkpoint_in_two_processes(tmp_path, shared_data, small_r1):
    ref = tmp_path / "ref"
    one = launch(openrs3(ref, small_r1, shared_data, 2), processes=1, devices=8, log_dir=tmp_path / "logs-ref")
    assert one.wait(HANG) == [0], one.output(0)[-3000:]
    want = read_metrics(ref)

    # The same run stopped after step 1 (its checkpoint and logs), continued by 2 processes.
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(run / "checkpoints" / "2")
    two = launch(openrs3(run, small_r1, shared_data, 2, "--resume"), processes=2, devices=4,
                 log_dir=tmp_path / "logs-run")
    assert two.wait(HANG) == [0, 0], two.output(0)[-3000:] + two.output(1)[-3000:]
    assert "resumed from" in two.output(0)
    assert_same_run(read_metrics(run), want)
    rows = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["step"] == 2] == [
        json.loads(line) for line in (ref / "completions.jsonl").read_text().splitlines()
        if json.loads(line)["step"] == 2]
    assert verify_step(run / "checkpoints" / "2") is None  # written by both processes, checked by process 0
