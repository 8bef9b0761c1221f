"""Per-token log-probabilities (and entropies) of completion tokens.

    z[b, t, :] = (h[b, t, :] @ W) / τ                         logits at temperature τ   [B, T, V]
    logp[b, t] = z[b, t, y[b, t]] − logsumexp_v z[b, t, v]    log π(y_t | y_<t)
    H[b, t]    = −Σ_v p_v log p_v,  p = softmax(z[b, t, :])

`hidden[b, t]` is the final hidden state (after the last norm) at the position that predicts
`targets[b, t]`, i.e. the caller has already shifted by one. τ = 1 is what Open-RS ran for the
loss (docs/design.md: Open-RS's TRL did not divide by the sampling temperature 0.7; newer TRL
divides by `args.temperature`, available here as `temperature`).

`token_logprobs` never holds the [B, T, V] logits: it maps over chunks of at most
`chunk_size` positions, and each chunk has a hand-written VJP that keeps only the per-token
logsumexp (and entropy): the backward pass recomputes that chunk's [B, chunk, V] logits rather
than keeping them. At the Open-RS shape (micro-batch 6, T = 4096, V = 151,936) the full float32
logits are 15 GB; one chunk of 512 is 1.9 GB.

The backward pass of a chunk, with p = softmax(z) and g, e the cotangents of logp and H:
    dz = g·(onehot(y) − p) − e·p·(log p + H)          one fused pass over [B, chunk, V]
    dh = (dz/τ) @ Wᵀ,   dW = hᵀ @ (dz/τ)              two matmuls in `compute_dtype`
It exists for speed: differentiating the float32-accumulated matmul with autodiff gives a
float32 cotangent, so both backward matmuls ran as float32 (TF32) products, ~3× slower than
bf16 on an H100, and the log-softmax backward took several passes over [B, chunk, V]
(docs/BENCHMARKS.md, issue 7).

Precision: the matmuls run in `compute_dtype` (default: the dtype of `hidden`, bf16 in
training) with float32 accumulation (`preferred_element_type`); the log-softmax and dz run in
float32, and dz is rounded to `compute_dtype` for the two backward matmuls (as the forward's
operands are). The gradient of `lm_head` is summed over the chunks in `lm_head`'s own dtype,
so pass the float32 master weight (it is cast to `compute_dtype` inside each chunk) to
accumulate it in float32; a bf16 `lm_head` accumulates in bf16.

`token_logprobs_from_logits` is the plain reference on materialised logits (tests, the
reference-model pass when the logits are at hand anyway).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int


def _logprobs_and_entropy(
    logits: Float[Array, "... V"], targets: Int[Array, "..."], temperature: float, entropy: bool
) -> tuple[Float[Array, "..."], Float[Array, "..."] | None]:
    z = logits.astype(jnp.float32) / temperature
    lse = jax.nn.logsumexp(z, axis=-1)  # [...]
    target_z = jnp.take_along_axis(z, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if not entropy:
        return target_z - lse, None
    # −Σ p·log p rather than lse − Σ p·z: the latter cancels (lse ≫ H) and loses ~1e-6.
    logp_all = z - lse[..., None]
    return target_z - lse, -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)


def token_logprobs_from_logits(
    logits: Float[Array, "B T V"],
    targets: Int[Array, "B T"],
    temperature: float = 1.0,
    *,
    return_entropy: bool = False,
) -> Float[Array, "B T"] | tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """logp[b, t] = log_softmax(logits[b, t] / τ)[targets[b, t]] in float32 (and H[b, t])."""
    _check_temperature(temperature)
    logps, entropy = _logprobs_and_entropy(logits, targets, temperature, return_entropy)
    if entropy is None:  # not asked for
        return logps
    return logps, entropy


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def token_logprobs(
    hidden: Float[Array, "B T D"],
    lm_head: Float[Array, "D V"],
    targets: Int[Array, "B T"],
    *,
    temperature: float = 1.0,
    chunk_size: int = 512,
    return_entropy: bool = False,
    compute_dtype: DTypeLike | None = None,
) -> Float[Array, "B T"] | tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """Chunked, rematerialised `log_softmax(hidden @ lm_head / τ)[targets]` (see module doc).

    chunk_size: the most positions per chunk (`chunk_length` evens the chunks out; padded
    positions are computed and dropped). Peak extra memory is about
    B · chunk_size · V · 4 bytes (a few such buffers in the backward pass).
    compute_dtype: dtype of the matmul inputs; defaults to `hidden.dtype`.
    Returns float32 logps [B, T] (and float32 entropies [B, T] if `return_entropy`).
    """
    _check_temperature(temperature)
    if hidden.ndim != 3 or targets.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden must be [B, T, D] and targets [B, T]; got {hidden.shape} and {targets.shape}"
        )
    if lm_head.ndim != 2 or lm_head.shape[0] != hidden.shape[2]:
        raise ValueError(f"lm_head must be [D, V] with D={hidden.shape[2]}, got {lm_head.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    compute_dtype = jnp.dtype(compute_dtype or hidden.dtype)
    batch, seq, dim = hidden.shape
    chunk = chunk_length(seq, chunk_size)
    num_chunks = math.ceil(seq / chunk)
    pad = num_chunks * chunk - seq
    targets = targets.astype(jnp.int32)
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hidden_chunks = hidden.reshape(batch, num_chunks, chunk, dim).swapaxes(0, 1)  # [num_chunks, B, chunk, D]
    target_chunks = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)  # [num_chunks, B, chunk]
    one_chunk = _chunk_fn(temperature, compute_dtype, return_entropy)

    def body(carry, xs):
        h, y = xs
        return carry, one_chunk(h, lm_head, y)

    _, (logps, entropy) = jax.lax.scan(body, None, (hidden_chunks, target_chunks))

    def unchunk(x):  # [num_chunks, B, chunk] -> [B, T]
        return x.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :seq]

    logps = unchunk(logps)
    return (logps, unchunk(entropy)) if return_entropy else logps


def chunk_length(seq: int, chunk_size: int) -> int:
    """Positions per chunk: the fewest chunks of at most `chunk_size`, made equal (rounded up
    to a multiple of 8), so that little is padded: 768 positions at chunk_size 512 run as two
    chunks of 384, not 512 + a half-empty 512."""
    if seq <= chunk_size:
        return seq
    n = math.ceil(seq / chunk_size)
    return min(chunk_size, -(-math.ceil(seq / n) // 8) * 8)


def _chunk_fn(temperature: float, compute_dtype, entropy: bool):
    """(h [B, chunk, D], W [D, V], y [B, chunk]) → (logp [B, chunk], entropy [B, chunk] or None)
    with the VJP of the module docstring; residuals: h, W, y, logsumexp and the entropy (no
    [B, chunk, V] array). Einsum strings write the chunk's positions as t."""

    def logits(h, w):
        z = jnp.einsum("btd,dv->btv", h.astype(compute_dtype), w.astype(compute_dtype),
                       preferred_element_type=jnp.float32)
        return z / temperature

    def forward(h, w, y):
        z = logits(h, w)
        lse = jax.nn.logsumexp(z, axis=-1)
        target_z = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0]
        ent = None
        if entropy:
            # −Σ p·log p rather than lse − Σ p·z: the latter cancels (lse ≫ H) and loses ~1e-6.
            logp_all = z - lse[..., None]
            ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
        return (target_z - lse, ent), (h, w, y, lse, ent)

    @jax.custom_vjp
    def fn(h, w, y):
        return forward(h, w, y)[0]

    def bwd(res, cts):
        h, w, y, lse, ent = res
        g_logp, g_ent = cts
        logp_all = logits(h, w) - lse[..., None]
        p = jnp.exp(logp_all)
        onehot = jnp.arange(p.shape[-1], dtype=jnp.int32) == y[..., None]
        dz = g_logp[..., None] * (onehot.astype(jnp.float32) - p)
        if entropy:
            dz = dz - g_ent[..., None] * p * (logp_all + ent[..., None])
        dz = (dz / temperature).astype(compute_dtype)
        dh = jnp.einsum("btv,dv->btd", dz, w.astype(compute_dtype), preferred_element_type=jnp.float32)
        dw = jnp.einsum("btd,btv->dv", h.astype(compute_dtype), dz, preferred_element_type=jnp.float32)
        return dh.astype(h.dtype), dw.astype(w.dtype), np.zeros(y.shape, jax.dtypes.float0)

    fn.defvjp(forward, bwd)
    return fn
