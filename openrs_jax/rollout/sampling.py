"""Token sampling from logits: temperature, top-k, top-p, with the sampled token's log-prob.

Pure functions on [B, V] float32 logits. The log-prob returned is under the distribution
actually sampled from: softmax(logits / T) restricted to the top-k / top-p support and
renormalised (for greedy decoding, T = 0, the temperature-1 log-softmax at the argmax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

NEG_INF = -jnp.inf


def filter_top_k(logits: Float[Array, "B V"], k: int) -> Float[Array, "B V"]:
    """Keeps the k largest logits of each row (ties at the k-th value are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jnp.where(logits < kth, NEG_INF, logits)


def filter_top_p(logits: Float[Array, "B V"], p: float) -> Float[Array, "B V"]:
    """Nucleus filter: keeps the smallest set of most likely tokens whose probability mass
    reaches p (the token that crosses p is kept; HF's TopPLogitsWarper semantics)."""
    if p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    keep_sorted = mass_before < p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, NEG_INF)


def sample_tokens(
    logits: Float[Array, "B V"],
    keys: Array,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[Int[Array, "B"], Float[Array, "B"]]:
    """Samples one token per row with its own PRNG key; returns (tokens, log-probs)."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        tokens = jnp.argmax(logits, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return tokens.astype(jnp.int32), jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
    scaled = filter_top_p(filter_top_k(logits / temperature, top_k), top_p)
    tokens = jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys, scaled)
    logp = jax.nn.log_softmax(scaled, axis=-1)
    return tokens.astype(jnp.int32), jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
