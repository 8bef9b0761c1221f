"""A TRL-style recipe (flat keys) trained end to end on CPU, as a TRL user would run it: the
resolved config printed and saved, TRL's metrics and tags in TensorBoard and W&B (offline) with
the completions table, progress lines with an ETA in a non-terminal log, and HF snapshots of
every saved step (checkpoint.save_hf) rotated with the Orbax checkpoints."""

import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCE_GENERATION = {"bos_token_id": 1, "eos_token_id": 0, "do_sample": True, "temperature": 0.6, "top_p": 0.95,
                     "max_new_tokens": 7}


def tiny_hf_model(directory: pathlib.Path) -> None:
    """The quickstart's tiny model and tokenizer as an HF directory, with a generation config of
    its own (which snapshots must copy)."""
    from flax import nnx

    from openrs_jax.config import load_config
    from openrs_jax.data import build_quickstart_tokenizer
    from openrs_jax.model import Qwen2
    from openrs_jax.weights import save_hf

    cfg = load_config("quickstart")
    save_hf(Qwen2(cfg.model.preset_config(), rngs=nnx.Rngs(0)), directory, tokenizer=build_quickstart_tokenizer(),
            generation_config=SOURCE_GENERATION)


def recipe(model_dir: pathlib.Path, out: pathlib.Path) -> dict:
    return {
        "model_name_or_path": str(model_dir), "torch_dtype": "float32", "bf16": False,
        "dataset_name": "builtin:quickstart", "dataset_prompt_column": "problem",
        "max_prompt_length": 16, "max_completion_length": 2, "num_generations": 8, "temperature": 1.0,
        "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1,
        "learning_rate": 2.0e-3, "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1}, "warmup_ratio": 0.1,
        "reward_funcs": ["exact_match"], "max_steps": 4, "logging_steps": 1, "log_completions": True,
        "save_strategy": "steps", "save_steps": 2, "save_total_limit": 1, "report_to": ["wandb", "tensorboard"],
        "output_dir": str(out), "seed": 42, "log_level": "info", "use_vllm": True,
    }


def tensorboard_tags(logdir: pathlib.Path) -> set[str]:
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader as EventFileLoader

    tags = set()
    for path in logdir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            tags |= {v.tag for v in event.summary.value}
    return tags


@pytest.mark.slow
def test_trl_recipe_trains_with_wandb_tensorboard_and_hf_snapshots(tmp_path):
    pytest.importorskip("wandb")
    model_dir, out = tmp_path / "source-model", tmp_path / "run"
    tiny_hf_model(model_dir)
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(recipe(model_dir, out)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "OPENRS_COMPILATION_CACHE": "off"}
    env.pop("XLA_FLAGS", None)
    env.pop("OPENRS_PROGRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.train", "--config", str(path), "--set", "data.solution_column=null",
         "--set", "checkpoint.save_hf=true", "--set", "rewards.num_workers=0"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stdout = proc.stdout

    # The recipe was read as TRL's, the notes and the resolved config printed, the config saved.
    assert "[openrs] TRL/open-r1 recipe; keys it leaves out take the defaults of knoveleng/open-rs" in stdout
    assert "[openrs] use_vllm: samples with the built-in JAX sampler" in stdout
    assert f"[openrs] resolved config (saved as {out}/config.yaml):\nmodel:" in stdout
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["rewards"]["reward_funcs"] == ["exact_match"] and saved["log"]["report_to"][-1] == "tensorboard"

    # Progress in a log (stdout is a pipe): the step lines carry an ETA, one closing counter line.
    assert "step 4/4 | reward" in stdout and "| eta 00:00" in stdout
    assert stdout.count("train: 4/4 [") == 1

    # TRL's metrics, with the current meanings and the added ones.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward_std", "reward_group_std", "num_tokens", "epoch", "completions/min_terminated_length",
                "completions/max_terminated_length", "clip_ratio/low_min", "clip_ratio/high_max",
                "rewards/exact_match/mean"):
        assert key in rows[-1], key
    # 16 completions of (prompt + completion) tokens a step; 2 prompts of 4,096 rows per step.
    tokens = [r["num_tokens"] for r in rows]
    assert all(b > a for a, b in zip(tokens, tokens[1:])) and tokens[0] >= 16 * 2
    assert rows[-1]["epoch"] == pytest.approx(4 * 2 / 4096)

    # TensorBoard: HF's layout, train/<metric>.
    tags = tensorboard_tags(out / "tensorboard")
    assert {"train/reward", "train/reward_std", "train/num_tokens", "train/rewards/exact_match/mean"} <= tags
    assert not any(tag == "reward" for tag in tags)

    # W&B (offline): the run under <run>/wandb, its id kept for a resume, the completions table
    # with TRL's columns.
    assert (out / "wandb_run_id").read_text().strip()
    tables = sorted((out / "wandb").glob("offline-run-*/files/media/table/completions_*.table.json"))
    assert len(tables) == 4, list((out / "wandb").rglob("*"))[:20]
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["step", "prompt", "completion", "exact_match", "advantage"]
    assert len(table["data"]) == 16

    # HF snapshots beside the Orbax steps, rotated with them (save_total_limit 1).
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]
    assert sorted(p.name for p in (out / "hf").iterdir()) == ["step-4"]
    snap = out / "hf" / "step-4"
    assert json.loads((snap / "generation_config.json").read_text()) == SOURCE_GENERATION
    card = (snap / "README.md").read_text()
    assert f"base_model: {model_dir}" in card and "step 4" in card and "```yaml" in card and "| reward |" in card
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(snap.stat().st_mode) == 0o777 & ~umask
    from transformers import AutoModelForCausalLM

    from openrs_jax.data import load_tokenizer

    hf, info = AutoModelForCausalLM.from_pretrained(snap, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert load_tokenizer(snap)("max 3 7")["input_ids"] == [15, 8, 12]
