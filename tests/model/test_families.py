"""Llama and Qwen3 (and Qwen2.5 details) against transformers: logits parity in float32
(max |Δ| ≤ 1e-4), the KV-cache path, the export round trip, greedy decode equal to HF
`generate`, and clear errors for what the decoder cannot express."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_utils import left_padded, make_hf_model
from openrs_jax.model import ModelConfig
from openrs_jax.weights import WeightsError, load_hf, save_hf

TOL = 1e-4

# Llama 3 RoPE with original_max_position_embeddings=256 at θ=500000, H=16: one frequency is
# kept, one smoothed (wavelength 79 between 256/4 and 256/1) and the rest divided by the factor,
# so all three branches act on positions 0..30.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256}

CONFIGS = {
    "llama_tied": ("llama", dict(tie=True, rms_norm_eps=1e-5)),  # SmolLM2's layout
    "llama3_rope": ("llama", dict(rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE))),
    "llama_linear_rope": ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "llama_attention_bias": ("llama", dict(attention_bias=True, num_kv_heads=1)),
    "llama_head_dim": ("llama", dict(head_dim=32)),
    "qwen3": ("qwen3", dict(head_dim=32)),  # head_dim ≠ D / N
    "qwen3_tied_bias": ("qwen3", dict(head_dim=16, tie=True, attention_bias=True)),
    "qwen3_llama3_rope": ("qwen3", dict(head_dim=16, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE))),
    "qwen2p5_tied": ("qwen2", dict(tie=True, rope_theta=1_000_000.0)),
}


def _make(path, name):
    family, kwargs = CONFIGS[name]
    return make_hf_model(path, family, **kwargs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_transformers(tmp_path, name):
    ref = _make(tmp_path, name)
    model = load_hf(tmp_path, dtype=jnp.float32)
    assert model.config.architecture == CONFIGS[name][0]
    rng = np.random.default_rng(0)
    for b, t in [(1, 1), (2, 13), (3, 31)]:
        toks = rng.integers(0, 128, size=(b, t))
        with torch.no_grad():
            want = ref(torch.tensor(toks)).logits.numpy()
        got = np.asarray(model(jnp.asarray(toks, jnp.int32)))
        assert got.shape == (b, t, 128)
        assert np.abs(got - want).max() <= TOL, (name, b, t, np.abs(got - want).max())


@pytest.mark.parametrize("name", ["llama3_rope", "qwen3_tied_bias"])
def test_left_padded_and_kv_cache(tmp_path, name):
    """A left-padded batch matches HF with the same mask and positions; prefill + decode
    through the KV cache gives the full forward's logits."""
    ref = _make(tmp_path, name)
    model = load_hf(tmp_path, dtype=jnp.float32)
    rng = np.random.default_rng(1)
    toks, mask, pos = left_padded(rng, [9, 4, 1, 7], 128)
    with torch.no_grad():
        want = ref(torch.tensor(toks), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits.numpy()
    got = np.asarray(model(jnp.asarray(toks, jnp.int32), positions=jnp.asarray(pos), attention_mask=jnp.asarray(mask)))
    real = mask.astype(bool)
    assert np.abs(got - want)[real].max() <= TOL

    cache = model.init_cache(batch=4, max_length=16, dtype=jnp.float32)
    logits, cache = model.forward_cached(jnp.asarray(toks, jnp.int32), jnp.asarray(pos), jnp.asarray(mask), cache,
                                         last_n=1)
    np.testing.assert_allclose(np.asarray(logits[:, 0]), want[:, -1], atol=TOL)
    nxt = rng.integers(3, 128, size=(4, 1))
    full_toks, full_mask = np.concatenate([toks, nxt], 1), np.concatenate([mask, np.ones_like(nxt)], 1)
    full_pos = np.clip(full_mask.cumsum(-1) - 1, 0, None)
    with torch.no_grad():
        want2 = ref(torch.tensor(full_toks), attention_mask=torch.tensor(full_mask),
                    position_ids=torch.tensor(full_pos)).logits.numpy()
    logits, _ = model.forward_cached(jnp.asarray(nxt, jnp.int32), jnp.asarray(full_pos[:, -1:]),
                                     jnp.ones((4, 1), jnp.int32), cache, kv_read_len=toks.shape[1] + 1)
    np.testing.assert_allclose(np.asarray(logits[:, 0]), want2[:, -1], atol=TOL)


@pytest.mark.parametrize("name", ["llama_tied", "llama3_rope", "llama_attention_bias", "qwen3", "qwen3_tied_bias"])
def test_export_round_trip(tmp_path, name):
    """save_hf → transformers loads it with no missing or extra keys → identical tensors and
    logits; our loader reads the export back to the same config."""
    from transformers import AutoModelForCausalLM

    src, out = tmp_path / "src", tmp_path / "out"
    ref = _make(src, name)
    model = load_hf(src, dtype=jnp.float32)
    save_hf(model, out)
    back, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys"), info
    assert type(back) is type(ref)
    a, b = ref.state_dict(), back.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    toks = torch.tensor(np.random.default_rng(2).integers(0, 128, (2, 31)))
    with torch.no_grad():
        np.testing.assert_array_equal(back(toks).logits.numpy(), ref(toks).logits.numpy())
    assert load_hf(out, dtype=jnp.float32).config == model.config
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["model_type"] == CONFIGS[name][0]


@pytest.mark.parametrize("name", ["llama3_rope", "qwen3_tied_bias"])
def test_greedy_decode_matches_hf_generate(tmp_path, name):
    """The sampler's KV-cache decode (prefill, while-loop segments, compaction) picks HF's
    greedy tokens."""
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.jax_engine import JaxEngine

    ref = _make(tmp_path, name)
    model = load_hf(tmp_path, dtype=jnp.float32)
    prompts = [[5, 9, 17, 33, 4, 8, 21], [7, 7, 3], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [11]]
    t = max(map(len, prompts))
    ids = torch.zeros((len(prompts), t), dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = torch.tensor(p)
        mask[i, t - len(p):] = 1
    with torch.no_grad():
        want = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=40, do_sample=False,
                            eos_token_id=2, pad_token_id=0)[:, t:].numpy()
    engine = JaxEngine(model, eos_token_ids=[2], pad_token_id=0, kv_bucket=32, segment_len=16, prompt_bucket=4)
    batch = engine.generate(prompts, 1, SamplingParams(max_new_tokens=40, temperature=0.0))
    for i in range(len(prompts)):
        n = int(batch.lengths[i])
        np.testing.assert_array_equal(batch.completion_ids[i, :n], want[i, :n])


def _config(family, **fields):
    base = {"model_type": family, "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    return {**base, **fields}


@pytest.mark.parametrize("fields, match", [
    (dict(use_sliding_window=True, sliding_window=64), "sliding-window"),
    (dict(layer_types=["full_attention", "sliding_attention"]), "sliding-window"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "yarn"),
    (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}), "dynamic"),
    # llama3 scaling with no original length anywhere (nor max_position_embeddings to fall back on)
    (dict(rope_scaling={k: v for k, v in LLAMA3_ROPE.items() if k != "original_max_position_embeddings"}),
     "needs original_max_position_embeddings"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(model_type="mistral"), "mistral"),
])
def test_unsupported_configs_are_named(fields, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf_config(_config("qwen2", **fields))


def test_config_fields_per_family():
    q2 = ModelConfig.from_hf_config(_config("qwen2", use_sliding_window=False, sliding_window=32768,
                                            max_window_layers=21))  # as Qwen2.5 ships it
    assert (q2.qkv_bias, q2.o_bias, q2.qk_norm) == (True, False, False)
    llama = ModelConfig.from_hf_config(_config("llama", mlp_bias=False, rope_theta=5e5,
                                               rope_scaling=dict(LLAMA3_ROPE), eos_token_id=[1, 2]))
    assert (llama.qkv_bias, llama.o_bias, llama.qk_norm) == (False, False, False)
    assert llama.rope_scaling.rope_type == "llama3" and llama.rope_theta == 5e5
    assert llama.eos_token_ids == (1, 2)
    hash(llama)  # static module attribute: must be hashable (eos list stored as a tuple)
    with pytest.raises(ValueError, match="mlp_bias"):
        ModelConfig.from_hf_config(_config("llama", mlp_bias=True))
    q3 = ModelConfig.from_hf_config(_config("qwen3"))  # no head_dim: Qwen3Config's default 128
    assert q3.resolved_head_dim == 128 and q3.qk_norm and not q3.qkv_bias
    # A Qwen3 config cannot drop its q/k norms; changing the architecture takes its switches.
    with pytest.raises(ValueError, match="cannot have"):
        q3.replace(qk_norm=False)
    assert q3.replace(architecture="qwen2").qkv_bias
    assert ModelConfig.from_hf_config(q3.to_hf_config()) == q3.replace(dtype="bfloat16", param_dtype="bfloat16")
    assert ModelConfig.from_hf_config(llama.to_hf_config()) == llama


def test_llama_checkpoint_with_qwen2_biases_is_rejected(tmp_path):
    """A qwen2 checkpoint relabelled as llama: its q/k/v biases are unexpected tensors."""
    make_hf_model(tmp_path, "qwen2")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"unexpected tensors.*llama.*q_proj\.bias"):
        load_hf(tmp_path)
