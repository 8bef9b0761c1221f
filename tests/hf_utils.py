"""Helpers shared by tests: tiny random HF Qwen2 checkpoints built locally (no hub)."""

from __future__ import annotations

import pathlib

import numpy as np


def make_hf_qwen2(
    out_dir: pathlib.Path,
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
):
    """A random `transformers.Qwen2ForCausalLM`, perturbed so biases and norms are not trivial,
    saved to `out_dir`. Returns the torch model (eval mode, float32)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    kwargs = {} if head_dim is None else {"head_dim": head_dim}
    cfg = Qwen2Config(
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
    )
    model = Qwen2ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir)
    return model.float()


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
