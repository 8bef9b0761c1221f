"""The fused decode kernel under a mesh (shard_map over the rows): a small random model in
float32 sampled greedily on one GPU and on a data-parallel mesh of all GPUs gives the same
tokens. (Was scripts/gpu_check_sharded_decode.py; it ran on 2 CPU devices, not yet on GPUs,
which is why `decode_attention="auto"` keeps XLA on multi-GPU meshes.)"""

import jax
import numpy as np
import pytest

from openrs_jax import sharding as shd
from openrs_jax.model import create_sharded, tiny
from openrs_jax.rollout.base import SamplingParams
from openrs_jax.rollout.jax_engine import JaxEngine

pytestmark = pytest.mark.gpu


def test_pallas_decode_on_a_mesh_equals_one_gpu():
    # float32: in bf16, greedy sequences diverge between any two programs (one device vs a
    # mesh differ even on the XLA path), so equality is checked in float32.
    cfg = tiny(dtype="float32", param_dtype="float32", num_layers=4, hidden_size=256, intermediate_size=512,
               num_heads=8, num_kv_heads=2, vocab_size=1024)
    n = jax.device_count()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 1000, size=int(rng.integers(5, 60))).tolist() for _ in range(4 * n)]
    sp = SamplingParams(max_new_tokens=300, temperature=0.0)
    out = {}
    for attn in ("pallas", "xla"):
        single = create_sharded(cfg, None, seed=0)
        out[attn, 1] = JaxEngine(single, eos_token_ids=[1], pad_token_id=0, decode_attention=attn).generate(prompts, 1, sp)
        mesh = shd.make_mesh({"data": n, "fsdp": 1, "tensor": 1})
        model = create_sharded(cfg, mesh, shd.TRAIN_RULES, seed=0)
        out[attn, n] = JaxEngine(model, eos_token_ids=[1], pad_token_id=0, mesh=mesh, decode_attention=attn).generate(
            prompts, 1, sp)
    agree = {f"{a} 1 vs {n}": float(np.mean(out[a, 1].completion_ids == out[a, n].completion_ids)) for a in ("xla", "pallas")}
    agree["pallas vs xla, 1 device"] = float(np.mean(out["pallas", 1].completion_ids == out["xla", 1].completion_ids))
    print(f"devices {n} ({jax.devices()[0].device_kind}): token agreement {agree}")
    assert np.array_equal(out["pallas", 1].completion_ids, out["pallas", n].completion_ids), agree
