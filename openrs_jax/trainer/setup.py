"""Building a run's parts from its RunConfig: mesh, model, tokenizer, rollout engine, rewards."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from openrs_jax import sharding as shd
from openrs_jax.config import ConfigError, RunConfig
from openrs_jax.model import ModelConfig, Qwen2, create_sharded
from openrs_jax.weights.resolve import model_config_for, resolve_model_dir


def build_meshes(cfg: RunConfig) -> tuple[jax.sharding.Mesh, jax.sharding.Mesh | None]:
    """(training mesh, sampling mesh or None). With `mesh.rollout_devices` = r > 0 the last r
    devices sample (data-parallel rows, `SAMPLE_RULES`) and the others train."""
    devices = jax.devices()
    if cfg.mesh.num_devices is not None:
        if cfg.mesh.num_devices > len(devices):
            raise ConfigError(f"mesh.num_devices {cfg.mesh.num_devices} > {len(devices)} visible devices")
        devices = devices[: cfg.mesh.num_devices]
    r = cfg.mesh.rollout_devices
    if r == 0:
        return shd.make_mesh(cfg.mesh.axis_sizes(len(devices)), devices=devices), None
    if r >= len(devices):
        raise ConfigError(
            f"mesh.rollout_devices {r} leaves no device to train on ({len(devices)} devices); "
            "use 0 to sample on the training mesh"
        )
    if cfg.rollout.engine != "jax":
        raise ConfigError("mesh.rollout_devices needs rollout.engine: jax (a vLLM server has its own GPUs)")
    train, roll = devices[: len(devices) - r], devices[len(devices) - r :]
    train_mesh = shd.make_mesh(cfg.mesh.axis_sizes(len(train)), devices=train)
    return train_mesh, shd.make_mesh({"data": r, "fsdp": 1, "tensor": 1}, devices=roll)


def build_model(cfg: RunConfig, mesh: jax.sharding.Mesh) -> Qwen2:
    """The initial policy, created or loaded straight into its shards (TRAIN_RULES)."""
    model_cfg = model_config_for(cfg)
    if cfg.model.name_or_path is None:
        return create_sharded(model_cfg, mesh, shd.TRAIN_RULES, seed=cfg.seed)
    from openrs_jax.weights import load_hf

    overrides = {k: v for k, v in cfg.model.model_config_overrides().items() if k not in ("dtype", "param_dtype")}
    return load_hf(
        resolve_model_dir(cfg.model.name_or_path),
        dtype=jnp.dtype(model_cfg.dtype),
        param_dtype=jnp.dtype(model_cfg.param_dtype),
        mesh=mesh,
        rules=shd.TRAIN_RULES,
        **overrides,
    )


def eos_and_pad(tokenizer, model_cfg: ModelConfig) -> tuple[list[int], int]:
    """EOS ids (tokenizer's and the model config's) and the pad id (pad, else EOS)."""
    eos = []
    if tokenizer.eos_token_id is not None:
        eos.append(int(tokenizer.eos_token_id))
    for t in model_cfg.eos_token_ids:
        if int(t) not in eos:
            eos.append(int(t))
    if not eos:
        raise ConfigError("neither the tokenizer nor the model config defines an EOS token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    return eos, int(pad)


def build_rewards(cfg: RunConfig) -> list[Any]:
    """The configured reward functions; pool settings passed to the rewards that take them."""
    from openrs_jax.rewards import get_reward, reward_params

    fns = []
    for name in cfg.rewards.reward_funcs:
        kwargs = dict(cfg.rewards.reward_kwargs.get(name, {}))
        accepted = reward_params(name)
        if "workers" in accepted:
            kwargs.setdefault("workers", cfg.rewards.num_workers)
        if "timeout_s" in accepted:
            kwargs.setdefault("timeout_s", cfg.rewards.timeout_s)
        fns.append(get_reward(name, **kwargs))
    return fns
