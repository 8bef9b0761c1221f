"""The two multi-device layouts on fake CPU devices: one mesh for everything, and the paper's
split (training devices + separate sampling devices, weights copied after each update)."""

import jax
import numpy as np
import pytest

from openrs_jax.config import ConfigError, load_config
from openrs_jax.metrics import read_metrics
from openrs_jax.trainer.trainer import Trainer


def _run(tmp_path, name, *overrides):
    cfg = load_config("quickstart", [f"checkpoint.output_dir={tmp_path / name}", "log.report_to=[jsonl]",
                                     "log.logging_steps=1", "optim.max_steps=4", "checkpoint.save_steps=100",
                                     *overrides])
    trainer = Trainer(cfg)
    trainer.run()
    return trainer, read_metrics(tmp_path / name)


def test_split_layout_matches_shared_mesh(tmp_path):
    shared, m_shared = _run(tmp_path, "shared", "mesh.num_devices=2")
    split, m_split = _run(tmp_path, "split", "mesh.num_devices=3", "mesh.rollout_devices=1")
    devs = jax.devices()
    train_devices = set(split.run_parts.mesh.devices.flat)
    sample_devices = set(split.run_parts.rollout_mesh.devices.flat)
    assert train_devices == {devs[0], devs[1]} and sample_devices == {devs[2]}
    q_train = split.state.params["layers"][0]["attn"]["q_proj"][...]
    q_sample = split.run_parts.engine._params["layers"][0]["attn"]["q_proj"][...]
    assert q_train.sharding.device_set == train_devices
    assert q_sample.sharding.device_set == sample_devices
    # Same weights after the last update on both meshes.
    np.testing.assert_array_equal(np.asarray(q_train), np.asarray(q_sample))
    # The same algorithm: identical rollouts and rewards, the same losses up to float reordering.
    for a, b in zip(m_shared, m_split):
        assert a["reward"] == b["reward"] and a["completions/mean_length"] == b["completions/mean_length"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_split_layout_errors(tmp_path):
    out = f"checkpoint.output_dir={tmp_path / 'r'}"
    with pytest.raises(ConfigError, match="leaves no device to train on"):
        Trainer(load_config("quickstart", [out, "mesh.num_devices=2", "mesh.rollout_devices=2"]))._setup()
    with pytest.raises(ConfigError, match="needs rollout.engine: jax"):
        Trainer(load_config("quickstart", [out, "mesh.num_devices=2", "mesh.rollout_devices=1",
                                           "rollout.engine=vllm"]))._setup()
    assert not (tmp_path / "r").exists()  # nothing written on bad input
