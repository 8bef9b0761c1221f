"""The model FLOP count of the update benchmark's MFU, against a hand count."""

import pytest

from openrs_jax.bench.flops import decode_flops_per_token, decode_weight_bytes, kv_bytes_per_token, model_flops
from openrs_jax.bench.spec import model_config

TINY = dict(num_layers=1, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, vocab_size=512)


def test_model_flops_counts_params_head_and_causal_attention():
    cfg = model_config(TINY)
    n = cfg.num_params(include_embeddings=False)
    t, c = 96, 80
    # Hand count: 2·N·T + 2·D·V·C + 2·L·N_h·H·T² (H = 64 / 4 = 16).
    fwd = 2 * n * t + 2 * 64 * 512 * c + 2 * 1 * 4 * 16 * t * t
    assert model_flops(cfg, t, c, "reference") == fwd
    assert model_flops(cfg, t, c, "update") == 3 * fwd
    with pytest.raises(ValueError, match="phase"):
        model_flops(cfg, t, c, "decode")


def test_decode_counts_weights_head_and_cache():
    cfg = model_config(TINY)
    n = cfg.num_params(include_embeddings=False)
    # K and V of 1 layer, 2 kv heads, head dim 16, bf16.
    assert kv_bytes_per_token(cfg) == 1 * 2 * 2 * 16 * 2
    assert decode_weight_bytes(cfg) == (n + 512 * 64) * 2
    # 2·(N + D·V) + 4·L·N_h·H·context.
    assert decode_flops_per_token(cfg, 100.0) == 2.0 * (n + 64 * 512) + 4.0 * 1 * 4 * 16 * 100
