"""Qwen2 building blocks: RMSNorm, rotary embeddings, SwiGLU MLP, parameter helpers.

Every parameter is an `nnx.Param` with logical axis names in its `axes` metadata; the rules
table in `openrs_jax.sharding` maps them to mesh axes. No module here knows HF names.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

_INIT_STD = 0.02  # HF Qwen2 initializer_range


def param(rngs: nnx.Rngs | None, shape, axes, dtype, init: str = "normal") -> nnx.Param:
    """A parameter with logical axes. `rngs=None` gives zeros (shape-only construction)."""
    if init == "ones":
        value = jnp.ones(shape, dtype)
    elif init == "zeros" or rngs is None:
        value = jnp.zeros(shape, dtype)
    else:
        value = (_INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, axes=tuple(axes))


class RMSNorm(nnx.Module):
    """y = w · x / sqrt(mean(x²) + ε), statistics in float32 (as HF Qwen2RMSNorm, which casts
    the normalised activations back to the input dtype before the scale)."""

    def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs | None = None):
        self.eps = eps
        self.scale = param(rngs, (dim,), ("norm",), param_dtype, init="ones")

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.scale[...].astype(x.dtype) * y


class Rope(NamedTuple):
    """Rotary embedding tables of one forward, computed once from the positions and shared by
    every layer: cos, sin [B, T, H]."""

    cos: Float[Array, "B T H"]
    sin: Float[Array, "B T H"]


def rope_cos_sin(positions: Int[Array, "B T"], head_dim: int, theta: float, dtype) -> Rope:
    """cos, sin [B, T, H] for rotate-half RoPE (HF layout: frequencies repeated twice)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, H]
    return Rope(jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype))


def apply_rope(x: Float[Array, "B T N H"], rope: Rope) -> Float[Array, "B T N H"]:
    """x·cos + rotate_half(x)·sin with rotate_half(x) = [-x₂, x₁]."""
    h = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * rope.cos[:, :, None, :] + rotated * rope.sin[:, :, None, :]


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) · up(x))."""

    def __init__(self, dim: int, hidden: int, *, dtype, param_dtype, rngs: nnx.Rngs | None):
        self.dtype = dtype
        self.gate = param(rngs, (dim, hidden), ("embed", "mlp"), param_dtype)
        self.up = param(rngs, (dim, hidden), ("embed", "mlp"), param_dtype)
        self.down = param(rngs, (hidden, dim), ("mlp", "embed"), param_dtype)

    def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
        dt = self.dtype
        g = jnp.einsum("btd,df->btf", x, self.gate[...].astype(dt))
        u = jnp.einsum("btd,df->btf", x, self.up[...].astype(dt))
        return jnp.einsum("btf,fd->btd", jax.nn.silu(g) * u, self.down[...].astype(dt))
