"""The fused decode-attention kernel (run by the Pallas interpreter on CPU) against the XLA
attention path with the equivalent boolean mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.model.attention import xla_attention
from openrs_jax.model.decode_attention import decode_attention, default_n_split


def _reference(q, k, v, start, end):
    slot = jnp.arange(k.shape[2])
    mask = ((slot[None] >= start[:, None]) & (slot[None] < end[:, None]))[:, None, :]  # [B, 1, S]
    return xla_attention(q[:, None], k, v, mask)[:, 0]


def _inputs(b, n, kv, s, h, dtype=jnp.float32, seed=0):
    kq, kk, kv_ = jax.random.split(jax.random.PRNGKey(seed), 3)
    q = jax.random.normal(kq, (b, n, h), dtype)
    k = jax.random.normal(kk, (b, kv, s, h), dtype)
    v = jax.random.normal(kv_, (b, kv, s, h), dtype)
    return q, k, v


@pytest.mark.parametrize("block_k, n_split", [(16, 1), (32, 3), (16, 8), (None, None)])
def test_matches_masked_xla_attention(block_k, n_split):
    b, n, kv, s, h = 5, 12, 2, 128, 16
    q, k, v = _inputs(b, n, kv, s, h)
    # One valid slot; a range inside one block; ranges crossing blocks and shares; the whole
    # cache; a range starting mid-block (left padding) and ending mid-block.
    start = jnp.array([0, 3, 17, 0, 70])
    end = jnp.array([1, 9, 100, 128, 111])
    got = decode_attention(q, k, v, start, end, block_k=block_k, n_split=n_split, interpret=True)
    want = _reference(q, k, v, start, end)
    assert got.shape == (b, n, h) and got.dtype == q.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_slots_outside_the_range_are_never_used():
    b, n, kv, s, h = 2, 4, 1, 64, 8
    q, k, v = _inputs(b, n, kv, s, h, seed=1)
    start, end = jnp.array([5, 20]), jnp.array([30, 64])
    slot = jnp.arange(s)[None, None, :, None]
    outside = (slot < start[:, None, None, None]) | (slot >= end[:, None, None, None])
    # Garbage outside the range (NaN keys, huge values): any use of it would show. Keys are
    # masked by a select before the softmax; values meet probability 0.
    k_bad, v_bad = jnp.where(outside, jnp.nan, k), jnp.where(outside, 1e6, v)
    got = decode_attention(q, k_bad, v_bad, start, end, block_k=16, n_split=2, interpret=True)
    np.testing.assert_allclose(got, _reference(q, k, v, start, end), rtol=1e-5, atol=1e-5)


def test_empty_range_reads_nothing_and_gives_zeros():
    """A finished row (start == end) reads no cache: NaN everywhere in its cache changes
    nothing, and its output is zero; the other rows are unaffected."""
    b, n, kv, s, h = 3, 4, 2, 64, 8
    q, k, v = _inputs(b, n, kv, s, h, seed=3)
    start, end = jnp.array([0, 40, 7]), jnp.array([50, 40, 64])
    row = jnp.arange(b)[:, None, None, None]
    k_bad, v_bad = jnp.where(row == 1, jnp.nan, k), jnp.where(row == 1, jnp.nan, v)
    got = decode_attention(q, k_bad, v_bad, start, end, block_k=16, n_split=3, interpret=True)
    assert np.all(np.asarray(got[1]) == 0)
    keep = np.array([0, 2])
    np.testing.assert_allclose(got[keep], _reference(q[keep], k[keep], v[keep], start[keep], end[keep]),
                               rtol=1e-5, atol=1e-5)


def test_bf16_inputs():
    b, n, kv, s, h = 3, 12, 2, 64, 32
    q, k, v = _inputs(b, n, kv, s, h, jnp.bfloat16, seed=2)
    start, end = jnp.array([0, 10, 40]), jnp.array([64, 33, 41])
    got = decode_attention(q, k, v, start, end, interpret=True)
    want = _reference(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), start, end)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2e-2, atol=2e-2)


def test_default_n_split_fills_the_gpu():
    for b, kv, s in [(96, 2, 1024), (18, 2, 512), (96, 2, 4096), (1, 2, 512), (256, 2, 512)]:
        n_split = default_n_split(b, kv, s, 64)
        assert 1 <= n_split <= s // 64
        # More programs than SMs, unless every block already has its own program.
        assert n_split == s // 64 or b * kv * n_split >= 132


def test_bad_shapes_are_named():
    q, k, v = _inputs(1, 2, 1, 40, 8)
    with pytest.raises(ValueError, match="multiple of 16"):
        decode_attention(q, k, v, jnp.array([0]), jnp.array([4]), interpret=True)
    q, k, v = _inputs(1, 2, 1, 64, 8)
    with pytest.raises(ValueError, match="block_k"):
        decode_attention(q, k, v, jnp.array([0]), jnp.array([4]), block_k=48, interpret=True)
