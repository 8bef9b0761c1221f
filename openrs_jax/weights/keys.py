"""The one declarative HF ↔ NNX key table, used by both import and export.

Each row: (HF tensor name pattern, NNX parameter path pattern, transform). `{i}` is the layer
index. Transforms are their own inverses' names: "T" transposes a matrix (HF stores Linear
weights as [out, in], we store [in, out]); None copies.

Qwen2, Llama and Qwen3 checkpoints use the same names; a family has the rows of the parameters
its config creates (biases, q/k norms), so import and export walk the model's parameters, not
the table.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

KEY_TABLE: tuple[tuple[str, str, str | None], ...] = (
    ("model.embed_tokens.weight", "embed", None),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.input_norm.scale", None),
    ("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.q_proj", "T"),
    ("model.layers.{i}.self_attn.q_proj.bias", "layers.{i}.attn.q_bias", None),
    ("model.layers.{i}.self_attn.k_proj.weight", "layers.{i}.attn.k_proj", "T"),
    ("model.layers.{i}.self_attn.k_proj.bias", "layers.{i}.attn.k_bias", None),
    ("model.layers.{i}.self_attn.v_proj.weight", "layers.{i}.attn.v_proj", "T"),
    ("model.layers.{i}.self_attn.v_proj.bias", "layers.{i}.attn.v_bias", None),
    ("model.layers.{i}.self_attn.o_proj.weight", "layers.{i}.attn.o_proj", "T"),
    ("model.layers.{i}.self_attn.o_proj.bias", "layers.{i}.attn.o_bias", None),
    ("model.layers.{i}.self_attn.q_norm.weight", "layers.{i}.attn.q_norm.scale", None),
    ("model.layers.{i}.self_attn.k_norm.weight", "layers.{i}.attn.k_norm.scale", None),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.post_attn_norm.scale", None),
    ("model.layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.gate", "T"),
    ("model.layers.{i}.mlp.up_proj.weight", "layers.{i}.mlp.up", "T"),
    ("model.layers.{i}.mlp.down_proj.weight", "layers.{i}.mlp.down", "T"),
    ("model.norm.weight", "final_norm.scale", None),
    ("lm_head.weight", "lm_head", "T"),
)

# HF tensors that may appear in a checkpoint and carry nothing we need.
IGNORABLE_HF = (re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq"),)


def _compile(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_HF_RE = [(_compile(hf), nnx, t) for hf, nnx, t in KEY_TABLE]
_NNX_RE = [(_compile(nnx), hf, t) for hf, nnx, t in KEY_TABLE]


def nnx_to_hf_name(nnx_path: str) -> tuple[str, str | None]:
    """NNX path ('layers.3.attn.q_proj') → (HF name, transform)."""
    for rx, hf, t in _NNX_RE:
        m = rx.match(nnx_path)
        if m:
            return hf.replace("{i}", m.groupdict().get("i") or ""), t
    raise KeyError(f"parameter {nnx_path!r} has no row in the HF key table")


def hf_to_nnx_name(hf_name: str) -> tuple[str, str | None]:
    for rx, path, t in _HF_RE:
        m = rx.match(hf_name)
        if m:
            return path.replace("{i}", m.groupdict().get("i") or ""), t
    raise KeyError(f"HF tensor {hf_name!r} has no row in the key table")


def is_ignorable(hf_name: str) -> bool:
    return any(rx.match(hf_name) for rx in IGNORABLE_HF)


def to_nnx(array: np.ndarray, transform: str | None) -> np.ndarray:
    return array.T if transform == "T" else array


def to_hf(array: np.ndarray, transform: str | None) -> np.ndarray:
    return np.ascontiguousarray(array.T) if transform == "T" else np.ascontiguousarray(array)


def iter_table() -> Iterator[tuple[str, str, str | None]]:
    return iter(KEY_TABLE)
