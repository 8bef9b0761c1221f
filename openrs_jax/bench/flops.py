"""Model FLOPs and bytes moved: the numerators of the benchmarks' MFU and roofline columns.
Pure arithmetic on a `ModelConfig` (no JAX), the same count for JAX and PyTorch.

Update and reference, per row of T tokens with C completion tokens; recomputation (remat,
gradient checkpointing, chunked log-probs) is not counted, as is usual for MFU:

    forward  = 2·N·T  +  2·D·V·C  +  2·L·N_h·H·T²
    update   = 3 × forward        (backward = 2 × forward)

N = non-embedding parameters (`ModelConfig.num_params(include_embeddings=False)`: attention,
MLP, norms); 2·D·V·C is the LM-head matmul, counted because both implementations run it, on
the C completion positions only (the forward's `logits_to_keep` in TRL, the chunked log-probs
here); 2·L·N_h·H·T² is causal attention (QKᵀ and AV, 2·T²·N_h·H each for full attention,
halved by the causal mask). The input embedding is a gather and is not counted.

Decode, per new token at context S: 2·(N + D·V) + 4·L·N_h·H·S (the LM head on every token,
attention over the cache); bytes per decode step = weights read (`decode_weight_bytes`) + the
filled KV cache (`kv_bytes_per_token` × rows × context).
"""

from __future__ import annotations


def model_flops(cfg, seq: int, completion: int, phase: str) -> float:
    """Model FLOPs of one row of `seq` tokens with `completion` completion tokens (module
    docstring): forward = 2·N·T + 2·D·V·C + 2·L·N_h·H·T²; "update" = 3 × forward;
    "reference" = forward."""
    n = cfg.num_params(include_embeddings=False)
    fwd = (
        2 * n * seq
        + 2 * cfg.hidden_size * cfg.vocab_size * completion
        + 2 * cfg.num_layers * cfg.num_heads * cfg.resolved_head_dim * seq**2
    )
    if phase == "update":
        return 3.0 * fwd
    if phase == "reference":
        return float(fwd)
    raise ValueError(f"model_flops: phase must be 'update' or 'reference', got {phase!r}")


def decode_flops_per_token(cfg, context: float) -> float:
    """Forward FLOPs of one decoded token at an average `context` length:
    2·(N + D·V) + 4·L·N_h·H·context (the LM head on every token; attention over the cache)."""
    n = cfg.num_params(include_embeddings=False)
    return 2.0 * (n + cfg.hidden_size * cfg.vocab_size) + 4.0 * cfg.num_layers * cfg.num_heads * cfg.resolved_head_dim * context


def kv_bytes_per_token(cfg, bytes_per_el: int = 2) -> int:
    """KV-cache bytes of one token: K and V of every layer and kv head."""
    return cfg.num_layers * 2 * cfg.num_kv_heads * cfg.resolved_head_dim * bytes_per_el


def decode_weight_bytes(cfg, bytes_per_el: int = 2) -> int:
    """Weights read per decode step: all non-embedding parameters plus the LM head (the
    input embedding is a gather of B rows)."""
    head = cfg.vocab_size * cfg.hidden_size
    return (cfg.num_params(include_embeddings=False) + head) * bytes_per_el
