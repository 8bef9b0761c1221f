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
    reaches p (the token that crosses p is kept; HF's TopPLogitsWarper semantics; tokens tied
    with the last kept one are kept too).

    No sort: token i is kept iff the mass of strictly more likely tokens is < p, i.e. iff
    prob_i >= x*, the smallest float x with mass(prob > x) < p. mass(prob > x) is a
    non-increasing step function of x, so x* is found by searching the float32 bit patterns
    of [0, 1] (monotone for non-negative floats): `_TOP_P_FANOUT`-way splits, 15 candidate
    thresholds summed in one pass over [B, V], 8 passes. A GPU sort of [B, 151936] per decode
    step cost more than the rest of the step at batch 64 (docs/BENCHMARKS.md)."""
    if p >= 1.0:
        return logits
    probs = jax.nn.softmax(logits, axis=-1)
    keep = probs >= _top_p_threshold(probs, p)[:, None]
    return jnp.where(keep, logits, NEG_INF)


_TOP_P_FANOUT = 16
_ONE_BITS = 0x3F800000  # float32 1.0: mass(prob > 1) = 0 < p, so the search starts at (0, 1]


def _top_p_threshold(probs: Float[Array, "B V"], p: float) -> Float[Array, "B"]:
    """Per row, the smallest float32 x in (0, 1] with sum(probs[probs > x]) < p."""
    b = probs.shape[0]
    lo = jnp.zeros((b,), jnp.int32)  # exclusive: mass(prob > lo) >= p (or lo = 0)
    hi = jnp.full((b,), _ONE_BITS, jnp.int32)  # inclusive: mass(prob > hi) < p
    m = jnp.arange(1, _TOP_P_FANOUT, dtype=jnp.int32)  # interior split points 1..F-1
    width = _ONE_BITS
    while width > 1:  # static: 8 passes for F = 16
        step = -(-(hi - lo) // _TOP_P_FANOUT)  # ceil, per row
        cand = jnp.minimum(lo[:, None] + step[:, None] * m[None], hi[:, None])  # [B, F-1]
        x = jax.lax.bitcast_convert_type(cand, jnp.float32)
        mass = jnp.sum(jnp.where(probs[:, None, :] > x[:, :, None], probs[:, None, :], 0.0), axis=-1)
        # edges = lo, cand..., hi; below[j] says mass(prob > edges[j + 1]) < p, monotone in j
        # (False...False True...True) and True at hi by the invariant: the answer lies in
        # (edges[first], edges[first + 1]].
        edges = jnp.concatenate([lo[:, None], cand, hi[:, None]], axis=1)  # [B, F + 1]
        below = jnp.concatenate([mass < p, jnp.ones((b, 1), bool)], axis=1)  # [B, F]
        first = jnp.argmax(below, axis=1)[:, None]
        lo = jnp.take_along_axis(edges, first, axis=1)[:, 0]
        hi = jnp.take_along_axis(edges, first + 1, axis=1)[:, 0]
        width = -(-width // _TOP_P_FANOUT)
    return jax.lax.bitcast_convert_type(hi, jnp.float32)


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
