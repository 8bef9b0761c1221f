"""Metric sinks: TRL's tag layout in TensorBoard and W&B, the W&B completions table, the ETA on
the stdout line (openrs_jax.metrics)."""

import io
import math
import sys
import types

import pytest

from openrs_jax.metrics import MetricsLogger, WandbWriter, format_progress, trl_tags
from openrs_jax.progress import Progress


def test_trl_tags_follow_the_hf_trainer():
    assert trl_tags({"reward": 1.0, "rewards/format_reward/mean": 0.5, "val/aime24/pass@1": 0.3}) == {
        "train/reward": 1.0, "train/rewards/format_reward/mean": 0.5, "eval/aime24/pass@1": 0.3}


def test_tensorboard_gets_train_tags(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader as EventFileLoader

    logger = MetricsLogger(tmp_path, ["tensorboard"], 10)
    logger.log(3, {"reward": 0.5, "kl": 0.01})
    logger.close()
    events = [e for p in (tmp_path / "tensorboard").glob("events.*") for e in EventFileLoader(str(p)).Load()]
    scalars = {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value}
    assert scalars == {(3, "train/reward"): 0.5, (3, "train/kl"): pytest.approx(0.01)}


class FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.defined, self.logged, self.finished = [], [], False

    def define_metric(self, *args, **kwargs):
        self.defined.append((args, kwargs))

    def log(self, data):
        self.logged.append(data)

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    module.init, module.Table = init, Table
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_layout_table_and_resume(tmp_path, monkeypatch):
    wandb = fake_wandb(monkeypatch)
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    logger = MetricsLogger(tmp_path, ["wandb"], 10, wandb={"name": "exp3", "config": {"seed": 42}})
    logger.log(1, {"reward": 0.25, "kl": math.nan, "val/score": 0.5})
    logger.log_table(1, [{"step": 1, "prompt": "p", "completion": "a", "format_reward": 1.0, "advantage": 0.5},
                         {"step": 1, "prompt": "p", "completion": "b", "format_reward": 0.0, "advantage": -0.5}],
                     unique_prompts=True)
    logger.close()
    run = wandb.runs[0]
    assert run.init["project"] == "my-project" and run.init["name"] == "exp3" and run.init["resume"] == "allow"
    assert run.init["config"] == {"seed": 42} and run.init["dir"] == str(tmp_path)
    assert run.defined == [(("train/global_step",), {}), (("*",), {"step_metric": "train/global_step",
                                                                     "step_sync": True})]
    # NaN is left out (W&B would plot a gap anyway; JSON sinks hold null).
    assert run.logged[0] == {"train/reward": 0.25, "eval/score": 0.5, "train/global_step": 1}
    table = run.logged[1]["completions"]
    assert table.columns == ["step", "prompt", "completion", "format_reward", "advantage"]
    assert table.data == [[1, "p", "a", 1.0, 0.5]]  # one row per prompt (log_unique_prompts)
    assert run.finished
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert run.init["id"] == run_id
    WandbWriter(tmp_path, name="exp3").close()  # a resumed run continues the same W&B run
    assert wandb.runs[1].init["id"] == run_id


def test_wandb_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install 'openrs-jax\[wandb\]'"):
        MetricsLogger(tmp_path, ["wandb"], 10)


def test_stdout_line_carries_the_eta():
    out = io.StringIO()
    bar = Progress(10, "train", unit="step", stream=out, mode="lines", interval_s=3600.0)
    logger = MetricsLogger("/nonexistent", ["stdout"], 10, stream=out, progress=bar)
    bar.update(5)
    logger.log(5, {"reward": 0.5})
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("step 5/10 | reward 0.5 | eta ")
    assert format_progress(5, 10, {"reward": 0.5}) == "step 5/10 | reward 0.5"
