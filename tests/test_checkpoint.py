"""Checkpoint checksums: written with every step (async and sync saves), verified on restore;
a damaged step falls back to the newest intact one with a one-line message."""

import json
import pathlib

import numpy as np
import pytest
from run_utils import leaves, make_run_dir, step_params

from openrs_jax.checkpoint import MANIFEST, CheckpointError, RunCheckpointer, abstract_with_shardings, load_model_from_run


def zero_bytes_in_params(run_dir: pathlib.Path, step: int) -> pathlib.Path:
    """Zeroes 64 bytes in the middle of the step's largest parameter data file."""
    files = [p for p in (run_dir / "checkpoints" / str(step) / "params").rglob("*") if p.is_file()]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    target.write_bytes(bytes(data))
    return target


@pytest.fixture()
def run(tmp_path):
    run_dir = tmp_path / "run"
    return run_dir, make_run_dir(run_dir, steps=(1, 2, 3))


def restore_latest(run_dir, cfg, **kw):
    ckpt = RunCheckpointer(run_dir)
    try:
        return ckpt.restore_latest_intact(abstract_with_shardings(step_params(cfg, 0)), None, **kw)
    finally:
        ckpt.close()


def assert_params_of(restored_params, cfg, step):
    for got, want in zip(leaves(restored_params), leaves(step_params(cfg, step)), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("async_save", [True, False])
def test_every_step_gets_a_manifest_that_verifies(tmp_path, async_save):
    run_dir = tmp_path / "run"
    make_run_dir(run_dir, steps=(1, 2), async_save=async_save)
    for step in (1, 2):
        manifest = json.loads((run_dir / "checkpoints" / str(step) / MANIFEST).read_text())
        assert manifest["algorithm"] == "sha256"
        assert any(name.startswith("params/") for name in manifest["files"])
        assert any(name.startswith("opt_state/") for name in manifest["files"])
    ckpt = RunCheckpointer(run_dir)
    assert ckpt.verify(1) is None and ckpt.verify(2) is None
    ckpt.close()


def test_zeroed_param_bytes_are_detected_and_the_older_step_restored(run):
    run_dir, cfg = run
    damaged = zero_bytes_in_params(run_dir, 3)
    ckpt = RunCheckpointer(run_dir)
    problem = ckpt.verify(3)
    ckpt.close()
    assert problem == f"{damaged.relative_to(run_dir / 'checkpoints' / '3').as_posix()}: content differs from its checksum (sha256)"
    restored = restore_latest(run_dir, cfg)
    assert restored.step == 2
    assert_params_of(restored.params, cfg, 2)
    (note,) = restored.notes
    assert note.startswith(f"checkpoint step 3 in {run_dir / 'checkpoints'} is damaged (step 3: params/")
    assert note.endswith("the older step 2 is intact and was restored") and "\n" not in note


def test_missing_or_truncated_files_are_damage_too(run):
    run_dir, cfg = run
    step3 = run_dir / "checkpoints" / "3"
    victim = next(p for p in sorted((step3 / "params").rglob("*")) if p.is_file())
    victim.unlink()
    truncated = zero_bytes_in_params(run_dir, 2)
    truncated.write_bytes(truncated.read_bytes()[:-10])
    restored = restore_latest(run_dir, cfg)
    assert restored.step == 1
    assert_params_of(restored.params, cfg, 1)
    assert f"{victim.relative_to(step3).as_posix()} is missing" in restored.notes[0]
    assert "bytes, " in restored.notes[0] and "steps 3, 2" in restored.notes[0]


def test_all_steps_damaged_is_one_clear_error(run):
    run_dir, cfg = run
    for step in (1, 2, 3):
        zero_bytes_in_params(run_dir, step)
    with pytest.raises(CheckpointError) as e:
        restore_latest(run_dir, cfg)
    message = str(e.value)
    assert message.startswith(f"no intact checkpoint in {run_dir / 'checkpoints'}: step 3: params/")
    assert "; step 2: params/" in message and "; step 1: params/" in message
    assert "\n" not in message


def test_a_step_without_manifest_restores_unverified_and_a_failing_restore_falls_back(run):
    """Steps saved before checksums existed have no manifest: restored with a note. When such a
    step cannot be restored, the TensorStore error becomes one line and the older step is used."""
    run_dir, cfg = run
    (run_dir / "checkpoints" / "2" / MANIFEST).unlink()
    (run_dir / "checkpoints" / "3" / MANIFEST).unlink()
    # Every byte of step 3's OCDBT data files (d/) zeroed: 64 bytes in the middle of one file (as above)
    # can land in a region TensorStore never reads, and then the step restores fine.
    for data_file in (p for p in (run_dir / "checkpoints" / "3" / "params" / "d").iterdir() if p.is_file()):
        data_file.write_bytes(bytes(data_file.stat().st_size))
    restored = restore_latest(run_dir, cfg)
    assert restored.step == 2
    assert_params_of(restored.params, cfg, 2)
    damaged, unverified = restored.notes
    assert damaged.startswith("checkpoint step 3 in ") and "\n" not in damaged and len(damaged) < 800
    assert "DATA_LOSS" in damaged  # TensorStore's own status, not its spec dump
    assert unverified.startswith("checkpoint step 2 has no checksums")


def test_load_model_from_run_skips_a_damaged_latest_step_but_not_a_requested_one(run):
    run_dir, cfg = run
    zero_bytes_in_params(run_dir, 3)
    warnings = []
    model, _, step = load_model_from_run(run_dir, warn=warnings.append)
    assert step == 2 and "step 3" in warnings[0] and "older step 2 is intact" in warnings[0]
    with pytest.raises(CheckpointError, match=r"step 3: params/.*content differs.*other saved steps: \[1, 2\]"):
        load_model_from_run(run_dir, step=3)
    _, _, step = load_model_from_run(run_dir, step=1)
    assert step == 1


def test_rotation_deletes_manifests_with_their_steps(tmp_path):
    run_dir = tmp_path / "run"
    cfg = make_run_dir(run_dir, steps=(1,))
    ckpt = RunCheckpointer(run_dir, keep=2)
    for step in (2, 3, 4):
        ckpt.save(step, step_params(cfg, step), {"count": np.int32(step)}, {"step": step})
    ckpt.close()
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [3, 4]
    restored = restore_latest(run_dir, cfg)
    assert restored.step == 4 and restored.notes == []
