"""The fused decode-attention kernel (Pallas) against float32 XLA attention at the 1.5B decode
shapes (one layer: q [B, 12, 128], cache [B, 2, S, 128] bf16, rows left-padded), at its
defaults and over a sweep of block sizes, programs per row and warps: no less accurate than
XLA's own bf16 path, up to one bf16 rounding of the output. (Was the error half of
scripts/gpu_check_decode_attention.py; its per-call timings were dispatch-bound and are left to
scripts/gpu_decode_sweep.py, which times the kernel in a decode step's setting.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.model.attention import xla_attention
from openrs_jax.model.decode_attention import decode_attention, default_n_split

pytestmark = pytest.mark.gpu

BF16_ULP = 2.0**-8  # spacing of bf16 numbers in [1, 2)


def _inputs(b, s, fill):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(kq, (b, 12, 128), jnp.bfloat16)
    k = jax.random.normal(kk, (b, 2, s, 128), jnp.bfloat16)
    v = jax.random.normal(kv, (b, 2, s, 128), jnp.bfloat16)
    start = jnp.asarray(np.random.default_rng(0).integers(0, 200, b), jnp.int32)
    end = jnp.full((b,), fill, jnp.int32)
    slot = jnp.arange(s)
    mask = ((slot[None] >= start[:, None]) & (slot[None] < end[:, None]))[:, None, :]
    return q, k, v, start, end, mask


@pytest.mark.parametrize("b,s,fill", [(96, 1024, 768), (96, 2560, 2304), (18, 1024, 768), (72, 4096, 3800)])
def test_fused_decode_attention_as_accurate_as_xla(b, s, fill):
    q, k, v, start, end, mask = _inputs(b, s, fill)
    ref = xla_attention(q[:, None].astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask)[:, 0]
    xla = jax.jit(lambda q, k, v, m: xla_attention(q[:, None], k, v, m)[:, 0])(q, k, v, mask)
    err_xla = float(jnp.abs(xla.astype(jnp.float32) - ref).max())
    bound = err_xla + BF16_ULP * float(jnp.abs(ref).max())
    configs = [{}]  # the defaults must compile
    for block_k in (32, 64, 128):
        for n_split in (1, default_n_split(b, 2, s, block_k)):
            for warps in (4, 8):
                configs.append(dict(block_k=block_k, n_split=n_split, num_warps=warps))
    errors, rejected = {}, {}
    for cfg in configs:
        try:
            out = decode_attention(q, k, v, start, end, **cfg)
        except Exception as e:  # a swept configuration the compiler rejects is not a failure
            if not cfg:
                raise
            rejected[str(cfg)] = str(e)[:200]
            continue
        errors[str(cfg)] = float(jnp.abs(out.astype(jnp.float32) - ref).max())
    print(f"B={b} S={s} filled={fill}: xla bf16 error {err_xla:.2e}, bound {bound:.2e}; fused {errors}; "
          f"rejected by the compiler {list(rejected)}")
    bad = {c: e for c, e in errors.items() if not e <= bound}
    assert not bad, f"above {bound:.2e} (XLA bf16: {err_xla:.2e}): {bad}"
