"""Grouped-query attention with qkv bias, RoPE and an optional KV cache.

Three kernels behind one function:
- "xla": einsum attention, scores and softmax in float32; any boolean mask (left padding,
  KV-cache slots). Runs everywhere; used on CPU, for prefill against the cache, and for decode
  steps unless told otherwise.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, the fused flash kernel
  on NVIDIA GPUs, for training and scoring forwards.
- the fused decode kernel of `openrs_jax.model.decode_attention` (one query token per row,
  valid slots given as a range per row), passed in as `decode_attn` for the sampler's decode
  steps on GPUs (`Qwen2.forward_cached(decode_impl="pallas")`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from openrs_jax.model.layers import apply_rope, param

# Finite "minus infinity": a fully masked row (a padding query) then gives a uniform
# distribution instead of NaN, and its output is ignored downstream.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerCache:
    """KV cache of one layer: [B, K, S, H] (heads before slots, so each decode step's q·kᵀ
    reads every head's keys as one contiguous [S, H] matrix, with no transpose); all rows
    write the same slot index."""

    k: Float[Array, "B K S H"]
    v: Float[Array, "B K S H"]


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
    qg = q.reshape(b, t, kv, n // kv, h)  # [B, T, K, G, H]
    scores = jnp.einsum("btkgh,bksh->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (h**-0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # [B, K, G, T, S]
    out = jnp.einsum("bkgts,bksh->btkgh", probs, v, preferred_element_type=jnp.float32)
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


class Attention(nnx.Module):
    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs | None):
        d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = n, k, h
        self.rope_theta = cfg.rope_theta
        self.dtype = dtype
        # Projections are stored as [D, N·H] (heads flattened) so tensor parallelism shards the
        # flattened dimension and the HF mapping is a plain transpose.
        self.q_proj = param(rngs, (d, n * h), ("embed", "q_heads"), param_dtype)
        self.q_bias = param(rngs, (n * h,), ("q_heads",), param_dtype, init="zeros")
        self.k_proj = param(rngs, (d, k * h), ("embed", "kv_heads"), param_dtype)
        self.k_bias = param(rngs, (k * h,), ("kv_heads",), param_dtype, init="zeros")
        self.v_proj = param(rngs, (d, k * h), ("embed", "kv_heads"), param_dtype)
        self.v_bias = param(rngs, (k * h,), ("kv_heads",), param_dtype, init="zeros")
        self.o_proj = param(rngs, (n * h, d), ("q_heads", "embed"), param_dtype)

    def __call__(
        self,
        x: Float[Array, "B T D"],
        cos: Array,
        sin: Array,
        mask: Bool[Array, "B T S"] | None,
        cache: LayerCache | None = None,
        cache_index: Int[Array, ""] | None = None,
        kv_read_len: int | None = None,
        impl: str = "xla",
        decode_attn=None,
    ) -> tuple[Float[Array, "B T D"], LayerCache | None]:
        """decode_attn: with a cache, a fused decode kernel `(q [B, N, H], k, v) -> [B, N, H]`
        bound to the rows' valid slots (`Qwen2.forward_cached`); replaces the XLA path."""
        b, t, _ = x.shape
        dt = self.dtype
        n, kvh, h = self.num_heads, self.num_kv_heads, self.head_dim

        def proj(w, bias, heads):
            y = jnp.einsum("btd,de->bte", x, w[...].astype(dt)) + bias[...].astype(dt)
            return y.reshape(b, t, heads, h)

        q = apply_rope(proj(self.q_proj, self.q_bias, n), cos, sin)  # [B, T, N, H]
        k = apply_rope(proj(self.k_proj, self.k_bias, kvh), cos, sin)  # [B, T, K, H]
        v = proj(self.v_proj, self.v_bias, kvh)

        new_cache = None
        if cache is not None:
            zero = jnp.zeros((), jnp.int32)
            kt, vt = k.swapaxes(1, 2), v.swapaxes(1, 2)  # [B, K, T, H]
            ck = jax.lax.dynamic_update_slice(cache.k, to_cache_dtype(kt, cache.k.dtype), (zero, zero, cache_index, zero))
            cv = jax.lax.dynamic_update_slice(cache.v, to_cache_dtype(vt, cache.v.dtype), (zero, zero, cache_index, zero))
            new_cache = LayerCache(ck, cv)
            if decode_attn is not None:
                # The kernel reads only the rows' valid slots: no slicing (a slice of the
                # [B, K, S, H] buffer along S would be copied for the custom call).
                out = decode_attn(q[:, 0], ck, cv)[:, None]
            else:
                # Read only the filled part of the cache (a static bound chosen by the caller).
                s = kv_read_len or ck.shape[2]
                out = xla_attention(q, ck[:, :, :s].astype(dt), cv[:, :, :s].astype(dt), mask)
        elif impl == "cudnn":
            out = cudnn_attention(q, k, v, mask)
        else:
            out = xla_attention(q, k.swapaxes(1, 2), v.swapaxes(1, 2), mask)
        out = jnp.einsum("bte,ed->btd", out.reshape(b, t, n * h), self.o_proj[...].astype(dt))
        return out, new_cache
