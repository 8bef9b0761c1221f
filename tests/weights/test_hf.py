"""HF import/export: bit-identical round trip, sharded index files, clear errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from hf_utils import make_hf_qwen2
from openrs_jax.weights import WeightsError, load_hf, save_hf, to_hf_state_dict
from openrs_jax.weights.hf import EXPORT_MARKER


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_bit_identical(tmp_path, tie, dtype):
    from transformers import AutoModelForCausalLM

    src, out = tmp_path / "src", tmp_path / "out"
    make_hf_qwen2(src, tie=tie, dtype=dtype)
    tdt = getattr(torch, dtype)
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=tdt)
    model = load_hf(src, dtype=getattr(jnp, dtype))
    save_hf(model, out)
    back, info = AutoModelForCausalLM.from_pretrained(out, dtype=tdt, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    a, b = ref.state_dict(), back.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == tdt, k
        assert torch.equal(a[k], b[k]), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["tie_word_embeddings"] == tie
    assert (out / "generation_config.json").is_file()


def test_sharded_index_round_trip(tmp_path):
    """Many safetensors files + index, written by us and read back by us and by transformers."""
    from transformers import AutoModelForCausalLM

    src, out = tmp_path / "src", tmp_path / "out"
    ref = make_hf_qwen2(src)
    model = load_hf(src, dtype=jnp.float32)
    save_hf(model, out, max_shard_bytes=40_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    again = load_hf(out, dtype=jnp.float32)
    for k, v in to_hf_state_dict(again).items():
        np.testing.assert_array_equal(v, ref.state_dict()[k].numpy())
    back = AutoModelForCausalLM.from_pretrained(out)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])


def test_save_with_tokenizer_and_replace(tmp_path, shared_data):
    from transformers import PreTrainedTokenizerFast

    src, out = tmp_path / "src", tmp_path / "out"
    make_hf_qwen2(src)
    model = load_hf(src, dtype=jnp.float32)
    save_hf(model, out)
    # A file of the earlier export (listed in its marker) goes when the export is replaced.
    marker = json.loads((out / EXPORT_MARKER).read_text())
    (out / "stale.txt").write_text("old")
    (out / EXPORT_MARKER).write_text(json.dumps({**marker, "files": marker["files"] + ["stale.txt"]}))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(shared_data / "tokenizer-qwen2" / "tokenizer.json"))
    save_hf(model, out, tokenizer=tok)
    assert (out / "tokenizer.json").is_file()
    assert not (out / "stale.txt").exists()  # replaced atomically, not merged
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left


def test_missing_config(tmp_path):
    with pytest.raises(WeightsError, match="config.json"):
        load_hf(tmp_path)
    with pytest.raises(WeightsError, match="not a directory"):
        load_hf(tmp_path / "nope")


def test_other_architecture(tmp_path):
    make_hf_qwen2(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["MistralForCausalLM"], "mistral"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="mistral.*LlamaForCausalLM"):
        load_hf(tmp_path)


def test_no_safetensors(tmp_path):
    make_hf_qwen2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no \\*.safetensors"):
        load_hf(tmp_path)


def _rewrite(path, fn):
    tensors = load_file(str(path / "model.safetensors"))
    fn(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor(tmp_path):
    make_hf_qwen2(tmp_path)
    _rewrite(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(WeightsError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        load_hf(tmp_path)


def test_misshaped_tensor(tmp_path):
    make_hf_qwen2(tmp_path)

    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][:8]

    _rewrite(tmp_path, shrink)
    with pytest.raises(WeightsError, match=r"k_proj\.weight.*shape \(8, 64\).*expected \(32, 64\)"):
        load_hf(tmp_path)


def test_unexpected_tensor(tmp_path):
    make_hf_qwen2(tmp_path)

    def extra(t):
        t["model.layers.7.mlp.up_proj.weight"] = np.zeros((3, 3), np.float32)

    _rewrite(tmp_path, extra)
    with pytest.raises(WeightsError, match=r"unexpected tensors.*layers\.7"):
        load_hf(tmp_path)


def test_index_names_missing_file(tmp_path):
    make_hf_qwen2(tmp_path)
    model = load_hf(tmp_path)
    out = tmp_path / "sharded"
    save_hf(model, out, max_shard_bytes=40_000)
    victim = sorted(out.glob("model-*.safetensors"))[0]
    victim.unlink()
    with pytest.raises(WeightsError, match=victim.name):
        load_hf(out)
