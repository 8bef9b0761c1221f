"""The cuDNN flash-attention path gives the logits of the XLA path: bf16, the 1.5B layer shape
(2 layers), causal and left-padded, each against float32 XLA. (Was scripts/gpu_check_attention.py,
which printed the errors; measured on an H100, 2026-11-22: both paths 1.33e-2.)"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from openrs_jax.model import Qwen2, deepseek_r1_distill_qwen_1p5b

pytestmark = pytest.mark.gpu


def rel(a, b, mask=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_cudnn_attention_matches_xla_in_bf16():
    cfg = deepseek_r1_distill_qwen_1p5b(num_layers=2, vocab_size=4096)
    m32 = Qwen2(cfg.replace(dtype="float32", param_dtype="float32", attention_impl="xla"), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    b, t = 4, 512
    toks = jnp.asarray(rng.integers(0, 4096, (b, t)), jnp.int32)
    lens = np.array([512, 300, 77, 1])
    mask = np.zeros((b, t), np.int32)
    for i, n in enumerate(lens):
        mask[i, t - n:] = 1
    pos = np.clip(mask.cumsum(-1) - 1, 0, None)
    real = mask.astype(bool)
    ref_causal = m32(toks)
    ref_masked = m32(toks, positions=jnp.asarray(pos), attention_mask=jnp.asarray(mask))
    err = {}
    for impl in ("xla", "cudnn"):
        m = Qwen2(cfg.replace(attention_impl=impl), rngs=nnx.Rngs(0))
        fwd = nnx.jit(lambda m, *a, **k: m(*a, **k))
        causal = fwd(m, toks)
        masked = fwd(m, toks, positions=jnp.asarray(pos), attention_mask=jnp.asarray(mask))
        assert bool(jnp.isfinite(causal).all()) and bool(jnp.isfinite(masked[real]).all()), impl
        err[impl] = (rel(causal, ref_causal), rel(masked, ref_masked, real))
    print(f"bf16 vs float32 relative error (causal, left-padded): {err}")
    for i, case in enumerate(("causal", "left-padded")):
        # bf16 rounding puts both near 1.3e-2; a wrong mask or layout is O(1).
        assert err["xla"][i] < 3e-2, (case, err)
        assert err["cudnn"][i] <= 1.5 * err["xla"][i], (case, err)
