"""The training CLI end to end on CPU: the quickstart learns, a killed run resumes exactly,
export round-trips, and bad input fails clearly."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TIME_KEYS = ("time/", "tokens_per_s", "rollout/", "compile/")  # machine-dependent


def run_cli(*args, cwd=None, timeout=600, env=None):
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("XLA_FLAGS", None)  # the CLI runs on the real (single) CPU device
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    proc = run_cli("openrs_jax.train", "--config", "configs/quickstart.yaml", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_quickstart_reward_rises(quickstart_run):
    out, proc = quickstart_run
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(10, 301, 10))
    first = np.mean([r["reward"] for r in rows[:3]])  # steps 10-30
    last = np.mean([r["reward"] for r in rows[-3:]])  # steps 280-300
    assert first <= 0.2, first
    assert last >= 0.8, last
    for key in ("reward_std", "rewards/exact_match/mean", "kl", "completions/mean_length",
                "completions/clipped_ratio", "learning_rate", "grad_norm", "time/rollout", "time/update"):
        assert key in rows[-1], key
    assert "step 300/300" in proc.stdout
    assert (out / "config.yaml").is_file() and (out / "plots" / "overview.png").is_file()
    assert (out / "completions.jsonl").is_file()
    assert not (out / "tensorboard").exists()  # the quickstart reports to stdout and jsonl only
    # The plot CLI redraws from metrics.jsonl.
    proc = run_cli("openrs_jax.plot", str(out), "--out", str(out / "replot"))
    assert proc.returncode == 0, proc.stderr
    assert (out / "replot" / "reward.png").is_file()


def test_export_loads_in_transformers_and_matches_engine(quickstart_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from openrs_jax.checkpoint import load_model_from_run
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.jax_engine import JaxEngine

    out, _ = quickstart_run
    hf_dir = tmp_path / "hf"
    proc = run_cli("openrs_jax.export", "--checkpoint", str(out), "--out", str(hf_dir))
    assert proc.returncode == 0, proc.stderr
    assert "exported step 300" in proc.stdout
    hf, info = AutoModelForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    model, tokenizer, step = load_model_from_run(out)
    assert step == 300
    from openrs_jax.data import PromptFormatter

    fmt = PromptFormatter(tokenizer, system_prompt=None, add_think_prefill=False, max_prompt_length=16)
    prompts = [fmt.encode(f"max {a} {b}")[0] for a, b in [(3, 7), (9, 2), (5, 5), (0, 8)]]
    engine = JaxEngine(model, eos_token_ids=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
                       kv_bucket=16, prompt_bucket=8)
    ours = engine.generate(prompts, 1, SamplingParams(max_new_tokens=4, temperature=0.0))
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([p]), max_new_tokens=4, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        ref_new = ref[0, len(p):].tolist()
        n = int(ours.lengths[i])
        assert ref_new[:n] == ours.completion_ids[i, :n].tolist()


def _strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIME_KEYS)} for r in rows]


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    common = ["--config", "configs/quickstart.yaml", "--set", "optim.max_steps=20", "--set", "checkpoint.save_steps=10",
              "--set", "log.logging_steps=1"]
    straight = tmp_path / "straight"
    proc = run_cli("openrs_jax.train", *common, "--output-dir", str(straight))
    assert proc.returncode == 0, proc.stderr[-3000:]

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)
    p = subprocess.Popen([sys.executable, "-m", "openrs_jax.train", *common, "--output-dir", str(killed)],
                         cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt10 = killed / "checkpoints" / "10"
    deadline = time.time() + 300
    while not ckpt10.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ckpt10.exists(), "the run never reached its step-10 checkpoint"
    assert not (killed / "checkpoints" / "20").exists(), "the run finished before it could be killed"
    proc = run_cli("openrs_jax.train", *common, "--output-dir", str(killed), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout

    assert _strip_times(read_jsonl(killed / "metrics.jsonl")) == _strip_times(read_jsonl(straight / "metrics.jsonl"))
    from openrs_jax.checkpoint import load_model_from_run
    from openrs_jax.weights import to_hf_state_dict

    a, _, sa = load_model_from_run(straight)
    b, _, sb = load_model_from_run(killed)
    assert sa == sb == 20
    ta, tb = to_hf_state_dict(a), to_hf_state_dict(b)
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], atol=1e-6, rtol=0)


def test_existing_run_needs_resume(quickstart_run):
    out, _ = quickstart_run
    proc = run_cli("openrs_jax.train", "--config", "configs/quickstart.yaml", "--output-dir", str(out))
    assert proc.returncode == 2  # refused input (openrs_jax.cli)
    assert "already holds checkpoints" in proc.stderr and "--resume" in proc.stderr
    # A finished run resumed does nothing and says so.
    proc = run_cli("openrs_jax.train", "--config", "configs/quickstart.yaml", "--output-dir", str(out), "--resume")
    assert proc.returncode == 0 and "already finished at step 300" in proc.stdout


@pytest.mark.parametrize(
    "override,expected",
    [
        ("grpo.vllm_enforce_eager=true", "vllm_enforce_eager"),
        ("optim.learnig_rate=1e-3", "learning_rate"),
        ("optim.max_steps=many", "optim.max_steps"),
    ],
)
def test_bad_config_is_a_clear_error(override, expected, tmp_path):
    proc = run_cli("openrs_jax.train", "--set", override, "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_missing_dataset_column(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"max {i} 3", "answer": "3"}) for i in range(8)))
    proc = run_cli("openrs_jax.train", "--set", f"data.dataset_name={data}", "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stderr
    assert "problem" in proc.stderr and "data.jsonl" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_vllm_server(tmp_path):
    proc = run_cli("openrs_jax.train", "--set", "rollout.engine=vllm", "--set", "rollout.vllm_server_url=http://127.0.0.1:9",
                   "--set", "rollout.vllm_timeout_s=3", "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stderr
    assert "http://127.0.0.1:9" in proc.stderr and "openrs_jax.serve" in proc.stderr
