"""Per-token log-probabilities (and entropies) of completion tokens.

    z[b, t, :] = (h[b, t, :] @ W) / τ                         logits at temperature τ   [B, T, V]
    logp[b, t] = z[b, t, y[b, t]] − logsumexp_v z[b, t, v]    log π(y_t | y_<t)
    H[b, t]    = −Σ_v p_v log p_v,  p = softmax(z[b, t, :])

`hidden[b, t]` is the final hidden state (after the last norm) at the position that predicts
`targets[b, t]`, i.e. the caller has already shifted by one. τ = 1 is what Open-RS ran for the
loss (DESIGN.md: Open-RS's TRL did not divide by the sampling temperature 0.7; newer TRL
divides by `args.temperature`, available here as `temperature`).

`token_logprobs` never holds the [B, T, V] logits: it maps over chunks of `chunk_size`
positions, and each chunk's body runs under `jax.checkpoint`, so the backward pass recomputes
that chunk's [B, chunk, V] logits rather than keeping them. At the Open-RS shape (micro-batch 6,
T = 4096, V = 151,936) the full float32 logits are 15 GB; one chunk of 512 is 1.9 GB.

Precision: the matmul runs in `compute_dtype` (default: the dtype of `hidden`, bf16 in
training) with float32 accumulation (`preferred_element_type`); the log-softmax runs in
float32. The gradient of `lm_head` is summed over the chunks in `lm_head`'s own dtype, so pass
the float32 master weight (it is cast to `compute_dtype` inside each chunk) to accumulate it in
float32; a bf16 `lm_head` accumulates in bf16.

`token_logprobs_from_logits` is the plain reference on materialised logits (tests, the
reference-model pass when the logits are at hand anyway).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
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
    return (logps, entropy) if return_entropy else logps


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
    compute_dtype: jnp.dtype | None = None,
) -> Float[Array, "B T"] | tuple[Float[Array, "B T"], Float[Array, "B T"]]:
    """Chunked, rematerialised `log_softmax(hidden @ lm_head / τ)[targets]` (see module doc).

    chunk_size: positions per chunk (the last chunk is zero-padded when it does not divide T;
    padded positions are computed and dropped). Peak extra memory is about
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
    chunk = min(chunk_size, seq)
    num_chunks = math.ceil(seq / chunk)
    pad = num_chunks * chunk - seq
    targets = targets.astype(jnp.int32)
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hidden_chunks = hidden.reshape(batch, num_chunks, chunk, dim).swapaxes(0, 1)  # [n, B, c, D]
    target_chunks = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)  # [n, B, c]

    # prevent_cse=False: inside a scan the rematerialisation cannot be CSE'd away (JAX docs).
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def one_chunk(h, w, y):
        logits = jnp.einsum(
            "bcd,dv->bcv",
            h.astype(compute_dtype),
            w.astype(compute_dtype),
            preferred_element_type=jnp.float32,
        )  # [B, c, V]
        return _logprobs_and_entropy(logits, y, temperature, return_entropy)

    def body(carry, xs):
        h, y = xs
        return carry, one_chunk(h, lm_head, y)

    _, (logps, entropy) = jax.lax.scan(body, None, (hidden_chunks, target_chunks))

    def unchunk(x):  # [n, B, c] -> [B, T]
        return x.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :seq]

    logps = unchunk(logps)
    return (logps, unchunk(entropy)) if return_entropy else logps
