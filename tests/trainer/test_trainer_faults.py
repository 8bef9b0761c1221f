"""In-process trainer faults: a failing checkpoint write, non-finite steps."""

import errno

import pytest

from openrs_jax.checkpoint import CheckpointError, RunCheckpointer
from openrs_jax.config import load_config
from openrs_jax.trainer.trainer import NonFiniteError, Trainer


def _cfg(tmp_path, *extra):
    return load_config("quickstart", [f"checkpoint.output_dir={tmp_path / 'run'}", "log.report_to=[jsonl]",
                                      "checkpoint.save_steps=1", *extra])


def test_full_disk_on_save_is_clear_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "optim.max_steps=3")
    real_save = RunCheckpointer.save
    calls = {"n": 0}

    def save(self, step, *a, **k):
        calls["n"] += 1
        if step == 2:
            self.wait()
            raise CheckpointError(
                f"saving checkpoint step {step} in {self.directory} failed: OSError: "
                f"{OSError(errno.ENOSPC, 'No space left on device')}. Last complete checkpoint: {self.latest_step()}"
            )
        return real_save(self, step, *a, **k)

    monkeypatch.setattr(RunCheckpointer, "save", save)
    with pytest.raises(CheckpointError, match=r"step 2 .*No space left.*Last complete checkpoint: 1"):
        Trainer(cfg).run()
    ck = RunCheckpointer(tmp_path / "run", async_save=False)
    assert ck.all_steps() == [1]
    ck.close()
    from openrs_jax.checkpoint import load_model_from_run

    _, _, step = load_model_from_run(tmp_path / "run")
    assert step == 1


def test_orbax_write_failure_surfaces_as_checkpoint_error(tmp_path, monkeypatch):
    """A real failure inside Orbax (its save raising OSError) becomes a CheckpointError that
    names the step and the last complete checkpoint."""
    import orbax.checkpoint as ocp

    cfg = _cfg(tmp_path, "optim.max_steps=3")
    real = ocp.CheckpointManager.save

    def failing(self, step, *a, **k):
        if step == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, step, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing)
    with pytest.raises(CheckpointError, match=r"step 2 .*No space left on device.*Last complete checkpoint: 1"):
        Trainer(cfg).run()


def test_nonfinite_steps_are_skipped_then_stop(tmp_path):
    # A learning rate of 1e30 blows the weights up after the first update; every later loss is NaN.
    cfg = _cfg(tmp_path, "optim.max_steps=10", "optim.learning_rate=1e30", "optim.warmup_ratio=0",
               "optim.max_nonfinite_steps=2", "optim.max_grad_norm=null")
    with pytest.raises(NonFiniteError, match=r"2 consecutive non-finite steps.*Last good checkpoint: step \d"):
        Trainer(cfg).run()
    from openrs_jax.metrics import read_metrics

    rows = read_metrics(tmp_path / "run")
    assert rows[-1]["update_applied"] == 0.0
    assert rows[-1]["loss"] is None  # NaN is written as null
    assert [r["step"] for r in rows if r["update_applied"] == 0.0] == [2, 3]
