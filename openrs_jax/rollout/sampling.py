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


def _top_p_threshold(probs: Float[Array, "B V"], p: float) -> Float[Array, " B"]:
    """Per row, the smallest float32 x in (0, 1] with sum(probs[probs > x]) < p."""
    b = probs.shape[0]
    lo = jnp.zeros((b,), jnp.int32)  # exclusive: mass(prob > lo) >= p (or lo = 0)
    hi = jnp.full((b,), _ONE_BITS, jnp.int32)  # inclusive: mass(prob > hi) < p
    m = jnp.arange(1, _TOP_P_FANOUT, dtype=jnp.int32)  # interior split points 1..fanout-1
    width = _ONE_BITS
    while width > 1:  # static: 8 passes for a fanout of 16
        step = -(-(hi - lo) // _TOP_P_FANOUT)  # ceil, per row
        cand = jnp.minimum(lo[:, None] + step[:, None] * m[None], hi[:, None])  # [B, fanout - 1]
        x = jax.lax.bitcast_convert_type(cand, jnp.float32)
        mass = jnp.sum(jnp.where(probs[:, None, :] > x[:, :, None], probs[:, None, :], 0.0), axis=-1)
        # edges = lo, cand..., hi; below[j] says mass(prob > edges[j + 1]) < p, monotone in j
        # (False...False True...True) and True at hi by the invariant: the answer lies in
        # (edges[first], edges[first + 1]].
        edges = jnp.concatenate([lo[:, None], cand, hi[:, None]], axis=1)  # [B, fanout + 1]
        below = jnp.concatenate([mass < p, jnp.ones((b, 1), bool)], axis=1)  # [B, fanout]
        first = jnp.argmax(below, axis=1)[:, None]
        lo = jnp.take_along_axis(edges, first, axis=1)[:, 0]
        hi = jnp.take_along_axis(edges, first + 1, axis=1)[:, 0]
        width = -(-width // _TOP_P_FANOUT)
    return jax.lax.bitcast_convert_type(hi, jnp.float32)


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def hash_gumbel(keys: Array, vocab: int) -> Float[Array, "B V"]:
    """Standard Gumbel noise [B, V] from per-row raw uint32 keys [B, 2] by a counter hash of
    (key, token id): three MurmurHash3 finaliser rounds keyed by both key words, 24 bits to a
    uniform in (0, 1), then -log(-log(u)).

    Why not `jax.random.categorical`: its threefry draws cost ~130 integer operations per
    entry of the [B, 151,936] logits at every decode step; this is ~15, with no [B, V] array
    of random bits in memory (XLA fuses it into the argmax). The row's key (folded with the
    step by the sampler) still decides everything, so samples do not depend on batching."""
    k = keys.astype(jnp.uint32)
    idx = jax.lax.broadcasted_iota(jnp.uint32, (keys.shape[0], vocab), 1)
    x = _fmix32(idx * jnp.uint32(0x9E3779B1) + k[:, :1])
    x = _fmix32(x ^ k[:, 1:2])
    x = _fmix32(x + k[:, :1] * jnp.uint32(0x632BE5AB) + jnp.uint32(0x7F4A7C15))
    u = ((x >> 8).astype(jnp.float32) + 0.5) * (2.0**-24)  # (0, 1)
    return -jnp.log(-jnp.log(u))


def sample_tokens(
    logits: Float[Array, "B V"],
    keys: Array,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    noise: str = "hash",
    logprob_temperature: float | None = None,
) -> tuple[Int[Array, " B"], Float[Array, " B"]]:
    """Samples one token per row with its own PRNG key (raw uint32 [B, 2]); returns (tokens,
    log-probs). Gumbel-max: argmax(z + g) with z the filtered logits / T, g Gumbel noise from
    `hash_gumbel` (noise="hash") or `jax.random.categorical`'s threefry ("threefry"); the
    log-prob is z[token] − logsumexp(z), or, with `logprob_temperature` T, the unfiltered
    log softmax(logits / T) at the token."""
    tokens, logp = _sample(logits, keys, temperature=temperature, top_k=top_k, top_p=top_p, noise=noise)
    if logprob_temperature is not None:
        # The behaviour policy in the trainer's parametrisation: log softmax(logits / T) at
        # the token, unfiltered (what the trainer's own log-probs at T are compared with).
        z = logits.astype(jnp.float32) / logprob_temperature
        logp = jnp.take_along_axis(z, tokens[:, None], axis=-1)[:, 0] - jax.nn.logsumexp(z, axis=-1)
    return tokens, logp


def _sample(logits, keys, *, temperature: float, top_k: int, top_p: float, noise: str):
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        tokens = jnp.argmax(logits, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return tokens.astype(jnp.int32), jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
    scaled = filter_top_p(filter_top_k(logits / temperature, top_k), top_p)
    if noise == "hash":
        tokens = jnp.argmax(scaled + hash_gumbel(keys, scaled.shape[-1]), axis=-1)
    elif noise == "threefry":
        tokens = jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys, scaled)
    else:
        raise ValueError(f"noise must be 'hash' or 'threefry', got {noise!r}")
    tokens = tokens.astype(jnp.int32)
    lse = jax.nn.logsumexp(scaled, axis=-1)
    return tokens, jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0] - lse
