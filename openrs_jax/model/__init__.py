"""Qwen2 in Flax NNX: config, presets, the decoder, and sharded construction."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from openrs_jax import sharding as shd
from openrs_jax.model.attention import AttentionOp, CacheView, KVCache, LayerCache
from openrs_jax.model.config import (
    ModelConfig,
    PRESETS,
    deepseek_r1_distill_qwen_1p5b,
    get_preset,
    qwen2p5_0p5b,
    tiny,
)
from openrs_jax.model.qwen2 import DecoderLayer, Qwen2

__all__ = [
    "AttentionOp",
    "CacheView",
    "KVCache",
    "LayerCache",
    "ModelConfig",
    "PRESETS",
    "Qwen2",
    "DecoderLayer",
    "abstract_model",
    "create_sharded",
    "deepseek_r1_distill_qwen_1p5b",
    "get_preset",
    "qwen2p5_0p5b",
    "tiny",
]


def abstract_model(cfg: ModelConfig) -> Qwen2:
    """The model with ShapeDtypeStruct leaves: no memory, used to plan shardings and loads."""
    return nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0)))


def create_sharded(
    cfg: ModelConfig,
    mesh: jax.sharding.Mesh | None = None,
    rules: dict[str, Any] | None = None,
    seed: int = 0,
) -> Qwen2:
    """Randomly initialised model whose parameters are created directly in their shards
    (jit with out_shardings), so no device ever holds the whole model."""
    if mesh is None:
        return Qwen2(cfg, rngs=nnx.Rngs(seed))
    rules = shd.TRAIN_RULES if rules is None else rules
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    shardings = shd.state_shardings(abs_state, mesh, rules)

    def init():
        return nnx.state(Qwen2(cfg, rngs=nnx.Rngs(seed)))

    state = jax.jit(init, out_shardings=shardings)()
    model = nnx.merge(graphdef, state)
    model.set_sharding(mesh, rules)
    return model
