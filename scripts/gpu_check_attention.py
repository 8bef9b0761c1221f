"""GPU check: the cuDNN flash-attention path gives the same logits as the XLA path (bf16,
the 1.5B layer shape, causal and left-padded), and both match float32 XLA within bf16 error.

    PYTHONPATH=. python scripts/gpu_check_attention.py
"""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from openrs_jax.model import Qwen2, deepseek_r1_distill_qwen_1p5b


def rel(a, b, mask=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def main():
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
    for impl in ("xla", "cudnn"):
        m = Qwen2(cfg.replace(attention_impl=impl), rngs=nnx.Rngs(0))
        fwd = nnx.jit(lambda m, *a, **k: m(*a, **k))
        causal = fwd(m, toks)
        masked = fwd(m, toks, positions=jnp.asarray(pos), attention_mask=jnp.asarray(mask))
        print(f"{impl:6s} bf16 vs f32: causal rel err {rel(causal, ref_causal):.2e}  "
              f"left-padded rel err {rel(masked, ref_masked, real):.2e}  finite {bool(jnp.isfinite(masked).all())}")


if __name__ == "__main__":
    main()
