"""Grouped-query attention with RoPE, optional q/k/v/o biases and per-head q/k RMSNorm (the
switches of `ModelConfig`), and an optional KV cache.

The attention operation (`AttentionOp`: q, k, v → output, with its mask bound) is chosen once
per forward by the model and applied by every layer, so a layer never knows which kernel or
which sampler runs it:
- `xla_op`: einsum attention, scores and softmax in float32; any boolean mask (left padding,
  KV-cache slots), optionally reading only a static prefix of the cache. Runs everywhere; used
  on CPU, for prefill against the cache, and for decode steps unless told otherwise.
- `cudnn_op`: `jax.nn.dot_product_attention(implementation="cudnn")`, the fused flash kernel
  on NVIDIA GPUs, for training and scoring forwards.
- `openrs_jax.model.decode_attention.decode_attention_op`: the fused decode kernel (one query
  token per row, valid slots given as a range per row) for the sampler's decode steps on GPUs
  (`CausalLM.forward_cached(decode_impl="pallas")`).

A layer sees the KV cache through a `CacheView` (its buffers and the slot where the new
tokens go) and returns its updated `LayerCache`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple, no_type_check

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from openrs_jax.model.layers import RMSNorm, Rope, apply_rope, param

# Finite "minus infinity": a fully masked row (a padding query) then gives a uniform
# distribution instead of NaN, and its output is ignored downstream.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


# The caches' annotations say what a forward holds; they are not checked at construction
# (`no_type_check` keeps the tests' import hook off them): JAX rebuilds a pytree with any
# leaves (None, shardings, abstract values) when it maps over it.
@no_type_check
@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerCache:
    """KV cache of one layer: [B, K, S, H] (heads before slots, so each decode step's q·kᵀ
    reads every head's keys as one contiguous [S, H] matrix, with no transpose); all rows
    write the same slot index."""

    k: Float[Array, "B K S H"]
    v: Float[Array, "B K S H"]


@no_type_check
@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """The decoder's KV cache.

    layers: one LayerCache per decoder layer.
    valid: bool [B, S], True where a slot holds a real (non-padding) token.
    index: int32 scalar, the next slot to write (shared by all rows: prompts are left-padded
      to one length, so every row advances in lock-step).
    """

    layers: list[LayerCache]
    valid: Bool[Array, "B S"]
    index: Int[Array, ""]

    @property
    def max_length(self) -> int:
        return self.valid.shape[1]

    @classmethod
    def init(cls, num_layers: int, batch: int, max_length: int, num_kv_heads: int, head_dim: int, dtype) -> "KVCache":
        shape = (batch, num_kv_heads, max_length, head_dim)
        return cls(
            layers=[LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(num_layers)],
            valid=jnp.zeros((batch, max_length), bool),
            index=jnp.zeros((), jnp.int32),
        )


def to_cache_dtype(x: Array, dtype) -> Array:
    """x in the cache's dtype. A float8 cache (the sampler's option) stores values unscaled,
    as vLLM does with its default scale 1.0, saturated at the format's largest finite value
    (a plain cast would turn them into NaN)."""
    dtype = jnp.dtype(dtype)
    if dtype.itemsize == 1 and jnp.issubdtype(dtype, jnp.floating):
        big = float(jnp.finfo(dtype).max)
        x = jnp.clip(x.astype(jnp.float32), -big, big)
    return x.astype(dtype)


class CacheView(NamedTuple):
    """One layer's view of the KV cache in a cached forward: its buffers and the slot where
    the T new tokens go (shared by all rows)."""

    layer: LayerCache
    # Named as KVCache's field; it shadows tuple.index, which nothing calls on a view.
    index: Int[Array, ""]  # pyright: ignore[reportIncompatibleMethodOverride]

    def write(self, k: Float[Array, "B T K H"], v: Float[Array, "B T K H"]) -> LayerCache:
        """The layer's cache with k, v written to slots [index, index + T)."""
        zero = jnp.zeros((), jnp.int32)
        at = (zero, zero, self.index, zero)
        kt, vt = k.swapaxes(1, 2), v.swapaxes(1, 2)  # [B, K, T, H]
        return LayerCache(
            jax.lax.dynamic_update_slice(self.layer.k, to_cache_dtype(kt, self.layer.k.dtype), at),
            jax.lax.dynamic_update_slice(self.layer.v, to_cache_dtype(vt, self.layer.v.dtype), at),
        )


# The attention of one forward: (q [B, T, N, H], k [B, K, S, H], v [B, K, S, H]) → [B, T, N, H],
# with its mask (and kernel) bound by the model; every layer applies the same operation.
AttentionOp = Callable[[Array, Array, Array], Array]


def xla_attention(
    q: Float[Array, "B T N H"],
    k: Float[Array, "B K S H"],
    v: Float[Array, "B K S H"],
    mask: Bool[Array, "B T S"],
) -> Float[Array, "B T N H"]:
    """softmax(q·kᵀ/√H + mask)·v with query heads grouped over the K kv heads."""
    b, t, n, h = q.shape
    kv = k.shape[1]
    out_dtype = q.dtype
    if jax.default_backend() == "cpu" and q.dtype != jnp.float32:
        # XLA:CPU has no bf16 × bf16 → f32 kernel for these batched dots; on CPU attention
        # runs in float32 (GPUs take bf16 operands with float32 accumulation).
        q, k, v = q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32)
    qg = q.reshape(b, t, kv, n // kv, h)  # [B, T, K, Q, H]
    scores = jnp.einsum("btkqh,bksh->bkqts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (h**-0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [B, K, Q, T, S]
    out = jnp.einsum("bkqts,bksh->btkqh", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, n, h).astype(out_dtype)


def cudnn_attention(
    q: Float[Array, "B T N H"],
    k: Float[Array, "B S K H"],
    v: Float[Array, "B S K H"],
    mask: Bool[Array, "B T S"] | None,
) -> Float[Array, "B T N H"]:
    """Fused flash attention. `mask=None` means plain causal attention over [0, T)."""
    if mask is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")


def xla_op(mask: Bool[Array, "B T S"], read_len: int | None = None) -> AttentionOp:
    """`xla_attention` under `mask`, reading only the first `read_len` key slots (static;
    default all): the sampler passes a bound on the filled part of the cache."""

    def attend(q, k, v):
        s = read_len or k.shape[2]
        return xla_attention(q, k[:, :, :s].astype(q.dtype), v[:, :, :s].astype(q.dtype), mask)

    return attend


def cudnn_op(mask: Bool[Array, "B T S"] | None) -> AttentionOp:
    """`cudnn_attention` under `mask` (None: plain causal attention)."""

    def attend(q, k, v):
        # cuDNN takes [B, S, K, H]; transposing the layer's [B, K, S, H] back cancels out in XLA.
        return cudnn_attention(q, k.swapaxes(1, 2), v.swapaxes(1, 2), mask)

    return attend


class Attention(nnx.Module):
    """q, k, v projections (+ bias when `cfg.qkv_bias`), per-head RMSNorm of q and k before
    RoPE when `cfg.qk_norm` (Qwen3), the attention operation, the output projection (+ bias
    when `cfg.o_bias`)."""

    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs | None):
        d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
        self.dtype = dtype
        # Projections are stored as [D, N·H] (heads flattened) so tensor parallelism shards the
        # flattened dimension and the HF mapping is a plain transpose.
        self.q_proj = param(rngs, (d, n * h), ("embed", "q_heads"), param_dtype)
        self.k_proj = param(rngs, (d, k * h), ("embed", "kv_heads"), param_dtype)
        self.v_proj = param(rngs, (d, k * h), ("embed", "kv_heads"), param_dtype)
        self.o_proj = param(rngs, (n * h, d), ("q_heads", "embed"), param_dtype)
        if cfg.qkv_bias:
            self.q_bias = param(rngs, (n * h,), ("q_heads",), param_dtype, init="zeros")
            self.k_bias = param(rngs, (k * h,), ("kv_heads",), param_dtype, init="zeros")
            self.v_bias = param(rngs, (k * h,), ("kv_heads",), param_dtype, init="zeros")
        if cfg.o_bias:
            self.o_bias = param(rngs, (d,), ("norm",), param_dtype, init="zeros")
        if cfg.qk_norm:
            self.q_norm = RMSNorm(h, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
            self.k_norm = RMSNorm(h, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

    def __call__(
        self,
        x: Float[Array, "B T D"],
        rope: Rope,
        attend: AttentionOp,
        cache: CacheView | None = None,
    ) -> tuple[Float[Array, "B T D"], LayerCache | None]:
        """Self-attention of the T tokens of `x` (and, with a cache, of the slots before them);
        returns the output and the layer's updated cache (None without one)."""
        b, t, _ = x.shape
        dt = self.dtype
        n, kvh, h = self.num_heads, self.num_kv_heads, self.head_dim

        def proj(name, heads):  # [B, T, N, H] for q, [B, T, K, H] for k and v
            # [B, T, D] @ [D, heads·H]: a plain matmul, as the heads are flattened in the weight.
            y = x @ getattr(self, f"{name}_proj")[...].astype(dt)
            if hasattr(self, f"{name}_bias"):
                y = y + getattr(self, f"{name}_bias")[...].astype(dt)
            return y.reshape(b, t, heads, h)

        q, k, v = proj("q", n), proj("k", kvh), proj("v", kvh)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)  # [B, T, N, H], [B, T, K, H]

        if cache is None:
            new_cache = None
            out = attend(q, k.swapaxes(1, 2), v.swapaxes(1, 2))
        else:
            new_cache = cache.write(k, v)
            out = attend(q, new_cache.k, new_cache.v)
        out = out.reshape(b, t, n * h) @ self.o_proj[...].astype(dt)  # [B, T, N·H] @ [N·H, D]
        if hasattr(self, "o_bias"):
            out = out + self.o_bias[...].astype(dt)
        return out, new_cache
