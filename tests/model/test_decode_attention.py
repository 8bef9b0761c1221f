"""The fused decode-attention kernel (run by the Pallas interpreter on CPU) against the XLA
attention path with the equivalent boolean mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.model.attention import xla_attention
from openrs_jax.model.decode_attention import decode_attention, default_split


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


@pytest.mark.parametrize("block_k, split", [(16, 32), (32, 64), (16, 128), (None, None)])
def test_matches_masked_xla_attention(block_k, split):
    b, n, kv, s, h = 5, 12, 2, 128, 16
    q, k, v = _inputs(b, n, kv, s, h)
    # One valid slot; a range inside one block; ranges crossing blocks and splits; the whole
    # cache; a range starting mid-split (left padding) and ending mid-block.
    start = jnp.array([0, 3, 17, 0, 70])
    end = jnp.array([1, 9, 100, 128, 111])
    got = decode_attention(q, k, v, start, end, block_k=block_k, split=split, interpret=True)
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
    got = decode_attention(q, k_bad, v_bad, start, end, block_k=16, split=32, interpret=True)
    np.testing.assert_allclose(got, _reference(q, k, v, start, end), rtol=1e-5, atol=1e-5)


def test_bf16_inputs():
    b, n, kv, s, h = 3, 12, 2, 64, 32
    q, k, v = _inputs(b, n, kv, s, h, jnp.bfloat16, seed=2)
    start, end = jnp.array([0, 10, 40]), jnp.array([64, 33, 41])
    got = decode_attention(q, k, v, start, end, interpret=True)
    want = _reference(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), start, end)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2e-2, atol=2e-2)


def test_default_split_divides_the_cache_and_fills_the_gpu():
    for b, kv, s in [(96, 2, 1024), (18, 2, 512), (96, 2, 4096), (1, 2, 512), (256, 2, 512)]:
        split = default_split(b, kv, s, 64)
        assert s % split == 0 and split % 64 == 0
        # More programs than SMs, unless the split is already at its floor (2 blocks) or the
        # whole cache.
        assert split in (s, 128) or b * kv * (s // split) >= 132


def test_bad_shapes_are_named():
    q, k, v = _inputs(1, 2, 1, 40, 8)
    with pytest.raises(ValueError, match="multiple of 16"):
        decode_attention(q, k, v, jnp.array([0]), jnp.array([4]), interpret=True)
    q, k, v = _inputs(1, 2, 1, 64, 8)
    with pytest.raises(ValueError, match="split"):
        decode_attention(q, k, v, jnp.array([0]), jnp.array([4]), block_k=16, split=48, interpret=True)
