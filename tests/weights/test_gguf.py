"""GGUF files in: tiny GGUF files written here the way llama.cpp's converter writes them
(quantised, Llama q/k rows permuted), loaded by us and by transformers' GGUF loader; the cache;
the errors. The real SmolLM2 file is tested in tests/weights/test_smollm2.py."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_utils import make_hf_model, transformers_from_gguf

gguf = pytest.importorskip("gguf", reason="the optional extra openrs-jax[gguf] (pip install gguf)")

from openrs_jax.weights import WeightsError, load_hf, load_model_config, to_hf_state_dict  # noqa: E402
from openrs_jax.weights.gguf import GGUF_TO_HF, GGUFError, gguf_to_hf_dir, unpermute_rotary  # noqa: E402

TOL = 1e-4
Q = gguf.GGMLQuantizationType
HF_TO_GGUF = [(h, g) for g, h in GGUF_TO_HF]


def _gguf_name(hf_name: str) -> str:
    import re

    for h, g in HF_TO_GGUF:
        m = re.match("^" + re.escape(h).replace(r"\{i\}", r"(?P<i>\d+)") + "$", hf_name)
        if m:
            return g.replace("{i}", m.groupdict().get("i") or "")
    raise KeyError(hf_name)


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute` (the layout GGUF Llama files hold)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, ref, family: str, qtype=Q.Q8_0, extra_tensor=None, raw_types=None):
    """`ref` (a transformers model) as llama.cpp writes it: matrices quantised to `qtype`,
    norms and biases F32, Llama q/k permuted, no output.weight when tied. `raw_types`: GGUF
    tensor name → a type to write instead, as zero bytes (types `gguf` cannot produce)."""
    cfg = ref.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(str(path), family)
    a = lambda key: f"{family}.{key}"
    w.add_uint32(a("block_count"), cfg.num_hidden_layers)
    w.add_uint32(a("context_length"), cfg.max_position_embeddings)
    w.add_uint32(a("embedding_length"), cfg.hidden_size)
    w.add_uint32(a("feed_forward_length"), cfg.intermediate_size)
    w.add_uint32(a("attention.head_count"), cfg.num_attention_heads)
    w.add_uint32(a("attention.head_count_kv"), cfg.num_key_value_heads)
    w.add_uint32(a("attention.key_length"), head_dim)
    w.add_uint32(a("attention.value_length"), head_dim)
    w.add_uint32(a("rope.dimension_count"), head_dim)
    w.add_float32(a("rope.freq_base"), cfg.rope_parameters["rope_theta"])
    w.add_float32(a("attention.layer_norm_rms_epsilon"), cfg.rms_norm_eps)
    w.add_uint32(a("vocab_size"), cfg.vocab_size)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    for name, t in ref.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        arr = t.float().numpy()
        if family == "llama" and ".q_proj." in name:
            arr = llama_cpp_permute(arr, cfg.num_attention_heads)
        elif family == "llama" and ".k_proj." in name:
            arr = llama_cpp_permute(arr, cfg.num_key_value_heads)
        gname = _gguf_name(name)
        if gname in (raw_types or {}):
            block, size = gguf.GGML_QUANT_SIZES[raw_types[gname]]
            zeros = np.zeros((arr.shape[0], arr.shape[1] // block * size), np.uint8)
            w.add_tensor(gname, zeros, raw_dtype=raw_types[gname])
        elif arr.ndim == 2:
            w.add_tensor(gname, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, arr.astype(np.float32))
    if extra_tensor is not None:
        w.add_tensor(*extra_tensor[:2], raw_dtype=extra_tensor[2])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


CASES = {
    "llama_tied_q8": ("llama", dict(tie=True, num_heads=4, num_kv_heads=2), Q.Q8_0),
    "llama_q4_1": ("llama", dict(num_heads=4, num_kv_heads=1), Q.Q4_1),
    "qwen2_bias_q8": ("qwen2", dict(tie=True), Q.Q8_0),
    # transformers' GGUF loader keeps Qwen3Config's head_dim default (128): use that.
    "qwen3_q8": ("qwen3", dict(num_heads=2, num_kv_heads=1, head_dim=128), Q.Q8_0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_and_tensors_match_transformers_gguf_loader(tmp_path, name, monkeypatch):
    monkeypatch.setenv("OPENRS_JAX_CACHE", str(tmp_path / "cache"))
    family, kwargs, qtype = CASES[name]
    src = make_hf_model(tmp_path / "hf", family, **kwargs)
    path = write_gguf(tmp_path / f"{name}.gguf", src, family, qtype)
    ref, ref_tensors = transformers_from_gguf(path)
    model = load_hf(path, dtype=jnp.float32)
    assert model.config.architecture == family
    # The dequantised (and un-permuted) tensors are transformers' own, bit for bit.
    ours = to_hf_state_dict(model)
    assert set(ours) == set(ref_tensors) | ({"lm_head.weight"} & set(ours))
    for k, v in ref_tensors.items():
        np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)
    toks = np.random.default_rng(0).integers(0, 128, (2, 23))
    with torch.no_grad():
        want = ref(torch.tensor(toks)).logits.numpy()
    got = np.asarray(model(jnp.asarray(toks, jnp.int32)))
    assert np.abs(got - want).max() <= TOL
    # Quantisation changed the weights: the test would notice a loader that read the source.
    assert np.abs(got - src(torch.tensor(toks)).logits.detach().numpy()).max() > 10 * TOL


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(6 * 8 * 3, dtype=np.float32).reshape(48, 3)
    np.testing.assert_array_equal(unpermute_rotary(llama_cpp_permute(w, 6), 6), w)
    b = np.arange(48, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_rotary(llama_cpp_permute(b, 3), 3), b)
    assert not np.array_equal(llama_cpp_permute(w, 6), w)


def test_converted_once_and_cached(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("OPENRS_JAX_CACHE", str(tmp_path / "cache"))
    src = make_hf_model(tmp_path / "hf", "llama", tie=True)
    path = write_gguf(tmp_path / "m.gguf", src, "llama")
    out = gguf_to_hf_dir(path)
    assert out.parent == tmp_path / "cache" / "gguf" and out.name.startswith("m-")
    source = json.loads((out / "source.json").read_text())
    assert source["tensor_types"]["Q8_0"] > 0 and source["architecture"] == "llama"
    assert load_model_config(path) == load_model_config(out)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert gguf_to_hf_dir(path) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp
    # A modified file is a new key: converted again, into a new directory.
    os.utime(path, ns=(source["mtime_ns"] + 10**9, source["mtime_ns"] + 10**9))
    again = gguf_to_hf_dir(path)
    assert again != out and (again / "source.json").is_file()
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    # The HF directory loads in transformers as it is.
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(out)
    assert back.config.tie_word_embeddings and type(back).__name__ == "LlamaForCausalLM"


def test_unreadable_quantisation_types_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENRS_JAX_CACHE", str(tmp_path / "cache"))
    src = make_hf_model(tmp_path / "hf", "llama")
    # Q8_1 (llama.cpp's intermediate type) and Q8_K have no dequantiser in `gguf`.
    raw = {"blk.1.ffn_up.weight": Q.Q8_1, "blk.0.ffn_up.weight": Q.Q8_1, "blk.0.attn_v.weight": Q.Q8_0}
    path = write_gguf(tmp_path / "m.gguf", src, "llama", raw_types=raw)
    with pytest.raises(GGUFError, match=r"cannot dequantise tensor type\(s\) Q8_1 \(2 tensors, e\.g\. blk\.0\.ffn_up"):
        load_hf(path)
    assert not list((tmp_path / "cache" / "gguf").iterdir())  # nothing left behind


def test_other_gguf_problems_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENRS_JAX_CACHE", str(tmp_path / "cache"))
    src = make_hf_model(tmp_path / "hf", "llama")
    rope_freqs = ("rope_freqs.weight", np.ones(8, np.float32), None)
    with pytest.raises(GGUFError, match="rope_freqs"):
        load_hf(write_gguf(tmp_path / "a.gguf", src, "llama", extra_tensor=rope_freqs))
    bogus = ("blk.0.attn_sinks.weight", np.ones(4, np.float32), None)
    with pytest.raises(GGUFError, match="no HF name.*attn_sinks"):
        load_hf(write_gguf(tmp_path / "b.gguf", src, "llama", extra_tensor=bogus))
    not_gguf = tmp_path / "c.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises((WeightsError, ValueError)):
        load_hf(not_gguf)
