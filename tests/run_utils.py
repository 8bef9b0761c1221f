"""A tiny training run directory without training: config.yaml plus Orbax checkpoints of
random quickstart-sized models, one per step (for checkpoint and export tests)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from openrs_jax.checkpoint import RunCheckpointer
from openrs_jax.config import dump_yaml, load_config
from openrs_jax.model import Qwen2
from openrs_jax.weights.resolve import model_config_for


def step_params(cfg, step: int) -> nnx.State:
    """The parameters saved for `step` (a model initialised with seed `step`)."""
    return nnx.split(Qwen2(model_config_for(cfg), rngs=nnx.Rngs(step)), nnx.Param)[1]


def make_run_dir(run_dir: pathlib.Path, steps=(1, 2), *, async_save: bool = True):
    """Writes config.yaml and a checkpoint per step; returns the run config."""
    cfg = load_config("quickstart", [f"checkpoint.output_dir={run_dir}"])
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run_dir / "config.yaml")
    ckpt = RunCheckpointer(run_dir, async_save=async_save)
    try:
        for step in steps:
            ckpt.save(step, step_params(cfg, step), {"count": jnp.asarray(step, jnp.int32)}, {"step": step})
    finally:
        ckpt.close()
    return cfg


def leaves(state) -> list[np.ndarray]:
    """The arrays of an NNX state, in tree order."""
    return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(state))]
