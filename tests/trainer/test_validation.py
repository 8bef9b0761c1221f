"""Validation every N steps during training: val/* metrics, the best step recorded and
linked, and checkpoint rotation sparing it."""

import json
import os

from openrs_jax.checkpoint import RunCheckpointer
from openrs_jax.config import load_config
from openrs_jax.metrics import read_metrics
from openrs_jax.trainer.trainer import Trainer


def test_validation_and_best_checkpoint(tmp_path, shared_data):
    run = tmp_path / "run"
    cfg = load_config("quickstart", [
        f"checkpoint.output_dir={run}", "log.report_to=[jsonl]", "log.logging_steps=1",
        "optim.max_steps=5", "checkpoint.save_steps=1", "checkpoint.save_total_limit=1",
        "validation.benchmarks=[math500, amc23]", f"validation.data_dir={shared_data}",
        "validation.limit=2", "validation.max_new_tokens=2", "validation.eval_steps=2",
        "rewards.num_workers=1",
    ])
    Trainer(cfg).run()
    rows = {r["step"]: r for r in read_metrics(run)}
    assert [s for s, r in rows.items() if "val/score" in r] == [2, 4, 5]
    assert {"val/math500/avg@k", "val/amc23/pass@1", "time/validation"} <= set(rows[2])
    best = json.loads((run / "best_checkpoint.json").read_text())
    # A random tiny model scores 0 everywhere; ties keep the earliest step.
    assert best["best_step"] == 2 and best["metric"] == "score"
    assert os.path.realpath(run / "best") == str((run / "checkpoints" / "2").resolve())
    ck = RunCheckpointer(run, async_save=False)
    assert sorted(ck.all_steps()) == [2, 5]  # keep 1 (the newest) + the protected best
    ck.close()
