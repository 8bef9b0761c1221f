"""The chunked, rematerialised log-prob path against the naive one."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.grpo import token_logprobs, token_logprobs_from_logits
from openrs_jax.grpo.logprobs import chunk_length

B, T, D, V = 2, 13, 8, 37


def _inputs(dtype=jnp.float32):
    kh, kw, ky = jax.random.split(jax.random.PRNGKey(0), 3)
    hidden = jax.random.normal(kh, (B, T, D), dtype)
    lm_head = (jax.random.normal(kw, (D, V)) / np.sqrt(D) * 3).astype(dtype)
    targets = jax.random.randint(ky, (B, T), 0, V)
    return hidden, lm_head, targets


def _naive(hidden, lm_head, targets, temperature):
    logits = jnp.einsum("btd,dv->btv", hidden, lm_head, preferred_element_type=jnp.float32)
    return token_logprobs_from_logits(logits, targets, temperature, return_entropy=True)


def _objective(fn):
    # A weighted sum of both outputs, so every gradient path (log-probs and entropy) is used.
    weights = jax.random.normal(jax.random.PRNGKey(1), (2, B, T))

    def f(hidden, lm_head):
        logps, ent = fn(hidden, lm_head)
        return jnp.sum(weights[0] * logps) + jnp.sum(weights[1] * ent)

    return f


@pytest.mark.parametrize(
    "chunk_size, temperature", [(1, 1.0), (4, 1.0), (5, 0.7), (13, 1.0), (64, 1.0)]
)
def test_chunked_equals_naive(chunk_size, temperature):
    hidden, lm_head, targets = _inputs()
    chunked = lambda h, w: token_logprobs(
        h, w, targets, temperature=temperature, chunk_size=chunk_size, return_entropy=True
    )
    naive = lambda h, w: _naive(h, w, targets, temperature)
    for got, want in zip(jax.jit(chunked)(hidden, lm_head), jax.jit(naive)(hidden, lm_head)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    got = jax.jit(jax.grad(_objective(chunked), argnums=(0, 1)))(hidden, lm_head)
    want = jax.jit(jax.grad(_objective(naive), argnums=(0, 1)))(hidden, lm_head)
    for g, w, name in zip(got, want, ("hidden", "lm_head")):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
        assert np.abs(np.asarray(w)).max() > 1e-2


def test_logps_only_matches_and_is_normalised():
    hidden, lm_head, targets = _inputs()
    logps = jax.jit(lambda h, w: token_logprobs(h, w, targets, chunk_size=4))(hidden, lm_head)
    assert logps.shape == (B, T) and logps.dtype == jnp.float32
    want = _naive(hidden, lm_head, targets, 1.0)[0]
    np.testing.assert_allclose(logps, want, rtol=1e-6, atol=1e-6)
    # Σ_v p(v) = 1: scoring every vocabulary entry at one position gives a distribution.
    all_targets = jnp.arange(V)[None, :]
    h0 = jnp.broadcast_to(hidden[:1, :1], (1, V, D))
    total = jnp.exp(token_logprobs(h0, lm_head, all_targets, chunk_size=7)).sum()
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_bf16_inputs_float32_math():
    hidden, lm_head, targets = _inputs(jnp.bfloat16)
    logps, ent = token_logprobs(hidden, lm_head, targets, chunk_size=5, return_entropy=True)
    assert logps.dtype == ent.dtype == jnp.float32
    # Same bf16 products, float32 accumulation and softmax: equal to the naive bf16 path...
    want_logps, want_ent = _naive(hidden, lm_head, targets, 1.0)
    np.testing.assert_allclose(logps, want_logps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, want_ent, rtol=1e-5, atol=1e-5)
    # ...and a float32 master lm_head cast to bf16 per chunk gives the same values, with a
    # float32 gradient.
    w32 = lm_head.astype(jnp.float32)
    np.testing.assert_allclose(
        token_logprobs(hidden, w32, targets, chunk_size=5, compute_dtype=jnp.bfloat16),
        logps,
        rtol=1e-6,
        atol=1e-6,
    )
    grad = jax.grad(
        lambda w: token_logprobs(hidden, w, targets, chunk_size=5, compute_dtype=jnp.bfloat16).sum()
    )(w32)
    assert grad.dtype == jnp.float32


def test_backward_does_not_keep_the_logits():
    """Compiled temp memory of value+grad stays well under one [B, T, V] float32 logits."""
    b, t, d, v, chunk = 2, 512, 16, 4096, 32
    hidden = jnp.zeros((b, t, d), jnp.float32)
    lm_head = jnp.zeros((d, v), jnp.float32)
    targets = jnp.zeros((b, t), jnp.int32)
    logits_bytes = b * t * v * 4

    def temp_bytes(fn):
        grad = jax.jit(jax.value_and_grad(lambda h, w: fn(h, w).sum(), argnums=(0, 1)))
        stats = grad.lower(hidden, lm_head).compile().memory_analysis()
        if stats is None:
            pytest.skip("this backend reports no compiled memory statistics")
        return stats.temp_size_in_bytes

    chunked = temp_bytes(lambda h, w: token_logprobs(h, w, targets, chunk_size=chunk))
    naive = temp_bytes(lambda h, w: _naive(h, w, targets, 1.0)[0])
    assert naive >= logits_bytes  # the reference does hold the logits
    assert chunked < logits_bytes / 4, (chunked, naive, logits_bytes)


def test_bad_arguments_are_named(unchecked):
    hidden, lm_head, targets = _inputs()
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden, lm_head, targets, temperature=0.0)
    with pytest.raises(ValueError, match="lm_head"):
        token_logprobs(hidden, lm_head.T, targets)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(hidden, lm_head, targets[:, :-1])
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(hidden, lm_head, targets, chunk_size=0)


@pytest.mark.parametrize("seq, chunk_size, want", [(768, 512, 384), (1792, 512, 448), (3840, 512, 480),
                                                   (100, 512, 100), (512, 512, 512), (13, 5, 5), (1000, 512, 504)])
def test_chunk_length_evens_out_chunks(seq, chunk_size, want):
    got = chunk_length(seq, chunk_size)
    assert got == want
    assert got <= chunk_size and math.ceil(seq / got) == math.ceil(seq / chunk_size)


def _dot_dtypes(jaxpr) -> list[tuple[str, ...]]:
    """Operand dtypes of every dot_general in a jaxpr and its sub-jaxprs (scan bodies, VJPs)."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out.extend(_dot_dtypes(inner))
    return out


def test_bf16_backward_matmuls_run_in_bf16():
    """The gradient's matmuls take bf16 operands (autodiff of the float32-accumulated product
    would hand them a float32 cotangent: float32 products, ~3× slower on an H100)."""
    hidden, lm_head, targets = _inputs(jnp.bfloat16)
    w32 = lm_head.astype(jnp.float32)
    fn = lambda h, w: jnp.sum(token_logprobs(h, w, targets, chunk_size=5, compute_dtype=jnp.bfloat16,
                                             return_entropy=True)[1])
    dots = _dot_dtypes(jax.make_jaxpr(jax.grad(fn, argnums=(0, 1)))(hidden, w32).jaxpr)
    assert len(dots) >= 3  # forward, recomputed forward, two backward products (one scan body each)
    assert all(d == ("bfloat16", "bfloat16") for d in dots), dots


def test_bf16_gradients_close_to_float32():
    hidden, lm_head, targets = _inputs()
    chunked = lambda h, w: token_logprobs(
        h, w, targets, chunk_size=5, return_entropy=True, compute_dtype=jnp.bfloat16)
    naive = lambda h, w: _naive(h, w, targets, 1.0)
    got = jax.grad(_objective(chunked), argnums=(0, 1))(hidden.astype(jnp.bfloat16), lm_head)
    want = jax.grad(_objective(naive), argnums=(0, 1))(hidden, lm_head)
    for g, w, name in zip(got, want, ("hidden", "lm_head")):
        g, w = np.asarray(g, np.float32), np.asarray(w)
        # bf16 has 8 bits of mantissa: a few ulps of the largest entry.
        assert np.abs(g - w).max() <= 3e-2 * np.abs(w).max(), name
