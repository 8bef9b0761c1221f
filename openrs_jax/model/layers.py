"""Decoder building blocks: RMSNorm, rotary embeddings (with Llama 3 / linear scaling), SwiGLU
MLP, parameter helpers.

Every parameter is an `nnx.Param` with logical axis names in its `axes` metadata; the rules
table in `openrs_jax.sharding` maps them to mesh axes. No module here knows HF names.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from openrs_jax.model.config import RopeScaling

_INIT_STD = 0.02  # HF initializer_range (Qwen2, Llama, Qwen3)


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
    """y = w · x / sqrt(mean(x²) + ε), statistics in float32 (as HF's Qwen2/Llama/Qwen3 RMSNorm, which cast
    the normalised activations back to the input dtype before the scale)."""

    def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs | None = None):
        self.eps = eps
        self.scale = param(rngs, (dim,), ("norm",), param_dtype, init="ones")

    def __call__(self, x: Float[Array, "... dim"]) -> Float[Array, "... dim"]:
        """Normalises the last axis (D, or H for Qwen3's per-head q/k norms)."""
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.scale[...].astype(x.dtype) * y


class Rope(NamedTuple):
    """Rotary embedding tables of one forward, computed once from the positions and shared by
    every layer: cos, sin [B, T, H]."""

    cos: Float[Array, "B T H"]
    sin: Float[Array, "B T H"]


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> np.ndarray:
    """Inverse frequencies [H/2] (float32, computed on the host as transformers does in
    float32): θ^(-2i/H), then the `scaling` of Llama 3 ("llama3") or position interpolation
    ("linear")."""
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))))
    inv_freq = inv_freq.astype(np.float32)
    if scaling is None:
        return inv_freq
    factor = np.float32(scaling.factor)
    if scaling.rope_type == "linear":
        return (inv_freq / factor).astype(np.float32)
    # llama3 (transformers' _compute_llama3_parameters): long wavelengths divided by factor,
    # short ones kept, the band between interpolated by a smooth factor.
    lo, hi, old_len = scaling.llama3_bands()
    low_freq_wavelen, high_freq_wavelen = old_len / lo, old_len / hi
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions: Int[Array, "B T"], inv_freq: np.ndarray, dtype) -> Rope:
    """cos, sin [B, T, H] for rotate-half RoPE (HF layout: frequencies repeated twice);
    `inv_freq` [H/2] from `rope_inv_freq`."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # [B, T, H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, H]
    return Rope(jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype))


def apply_rope(x: Float[Array, "B T heads H"], rope: Rope) -> Float[Array, "B T heads H"]:
    """x·cos + rotate_half(x)·sin with rotate_half(x) = [-x₂, x₁]; heads = N (q) or K (k)."""
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
