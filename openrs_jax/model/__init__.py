"""The decoder in Flax NNX (Qwen2, Llama, Qwen3): config, presets, the model, and sharded
construction. `Qwen2` is the model's former name, kept as an alias of `CausalLM`."""

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
from openrs_jax.model.causal_lm import CausalLM, DecoderLayer

Qwen2 = CausalLM  # the name from when Qwen2 was the only family

__all__ = [
    "AttentionOp",
    "CacheView",
    "KVCache",
    "LayerCache",
    "ModelConfig",
    "PRESETS",
    "CausalLM",
    "Qwen2",
    "DecoderLayer",
    "abstract_model",
    "create_sharded",
    "deepseek_r1_distill_qwen_1p5b",
    "get_preset",
    "qwen2p5_0p5b",
    "tiny",
]


def abstract_model(cfg: ModelConfig) -> CausalLM:
    """The model with ShapeDtypeStruct leaves: no memory, used to plan shardings and loads."""
    return nnx.eval_shape(lambda: CausalLM(cfg, rngs=nnx.Rngs(0)))


def create_sharded(
    cfg: ModelConfig,
    mesh: jax.sharding.Mesh | None = None,
    rules: dict[str, Any] | None = None,
    seed: int = 0,
) -> CausalLM:
    """Randomly initialised model whose parameters are created directly in their shards
    (jit with out_shardings), so no device ever holds the whole model."""
    if mesh is None:
        return CausalLM(cfg, rngs=nnx.Rngs(seed))
    rules = shd.TRAIN_RULES if rules is None else rules
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    shardings = shd.state_shardings(abs_state, mesh, rules)

    def init():
        return nnx.state(CausalLM(cfg, rngs=nnx.Rngs(seed)))

    state = jax.jit(init, out_shardings=shardings)()
    model = nnx.merge(graphdef, state)
    model.set_sharding(mesh, rules)
    return model
