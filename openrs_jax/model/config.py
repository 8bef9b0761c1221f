"""Qwen2 model configuration: a frozen dataclass, named presets, HF config in and out.

Layer L0: no JAX here, so configs can be built, compared and serialised anywhere.
Shape alphabet used across the model: B batch, T sequence, S key/cache length, D model,
F mlp hidden, N query heads, K kv heads, H head dim, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# HF `config.json` architectures we know how to load. Qwen2 is the only decoder the recipe needs.
SUPPORTED_ARCHITECTURES = ("Qwen2ForCausalLM",)
SUPPORTED_MODEL_TYPES = ("qwen2",)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Qwen2 decoder.

    `dtype` is the compute dtype and `param_dtype` the storage dtype of parameters (names of
    numpy dtypes so the config stays JAX-free). `attention_impl` picks the attention kernel:
    "xla" (portable einsum path, used on CPU), "cudnn" (fused flash attention through
    `jax.nn.dot_product_attention`) or "auto" (cudnn on GPU, xla elsewhere).
    """

    vocab_size: int
    hidden_size: int  # D
    intermediate_size: int  # F
    num_layers: int
    num_heads: int  # N
    num_kv_heads: int  # K
    head_dim: int | None = None  # H; default D // N
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 131072
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151643
    dtype: str = "bfloat16"
    param_dtype: str = "bfloat16"
    attention_impl: str = "auto"
    # Rematerialisation of each decoder layer in the backward pass: "none", "full" (recompute
    # everything) or "dots" (keep matmul outputs, recompute the cheap elementwise ops).
    remat: str = "none"

    def __post_init__(self):
        if self.hidden_size % self.num_heads and self.head_dim is None:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "set head_dim explicitly"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.attention_impl not in ("auto", "xla", "cudnn"):
            raise ValueError(f"attention_impl must be auto, xla or cudnn, got {self.attention_impl!r}")
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"remat must be none, full or dots, got {self.remat!r}")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (for MFU: 6·N·tokens uses `include_embeddings=False`)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.resolved_head_dim
        n, k = self.num_heads, self.num_kv_heads
        attn = d * n * h + n * h + 2 * (d * k * h + k * h) + n * h * d
        mlp = 3 * d * f
        per_layer = attn + mlp + 2 * d
        total = self.num_layers * per_layer + d
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return total

    # ------------------------------------------------------------------ HF config
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> "ModelConfig":
        """Builds a config from an HF `config.json` dict; raises on another architecture."""
        archs = hf.get("architectures") or []
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES and not set(archs) & set(SUPPORTED_ARCHITECTURES):
            raise ValueError(
                f"unsupported architecture {archs or model_type!r}: openrs_jax loads "
                f"{', '.join(SUPPORTED_ARCHITECTURES)} (model_type 'qwen2')"
            )
        rope_theta = hf.get("rope_theta")
        if rope_theta is None:  # transformers 5 nests it under rope_parameters
            rope_theta = (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        rope_scaling = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
        rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
        if rope_type not in (None, "default"):
            raise ValueError(f"rope scaling {rope_type!r} is not supported (only default RoPE)")
        num_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim")
        if head_dim == hf["hidden_size"] // num_heads:
            head_dim = None
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads", num_heads),
            head_dim=head_dim,
            rope_theta=float(rope_theta),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            max_position_embeddings=hf.get("max_position_embeddings", 131072),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_config(self, torch_dtype: str | None = None) -> dict[str, Any]:
        """The `config.json` dict of the equivalent `Qwen2ForCausalLM`."""
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.resolved_head_dim,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "max_window_layers": self.num_layers,
            "use_sliding_window": False,
            "sliding_window": None,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": torch_dtype or self.param_dtype,
        }


# ---------------------------------------------------------------------- presets
def deepseek_r1_distill_qwen_1p5b(**overrides: Any) -> ModelConfig:
    """DeepSeek-R1-Distill-Qwen-1.5B (the Open-RS base model)."""
    return ModelConfig(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        max_position_embeddings=131072,
        bos_token_id=151646,
        eos_token_id=151643,
    ).replace(**overrides)


def qwen2p5_0p5b(**overrides: Any) -> ModelConfig:
    """Qwen2.5-0.5B (tied embeddings)."""
    return ModelConfig(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        bos_token_id=151643,
        eos_token_id=151643,
    ).replace(**overrides)


def tiny(**overrides: Any) -> ModelConfig:
    """A few-hundred-thousand-parameter Qwen2 for tests and the CPU quickstart."""
    return ModelConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=0,
        dtype="float32",
        param_dtype="float32",
    ).replace(**overrides)


PRESETS = {
    "deepseek_r1_distill_qwen_1p5b": deepseek_r1_distill_qwen_1p5b,
    "qwen2p5_0p5b": qwen2p5_0p5b,
    "tiny": tiny,
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    try:
        return PRESETS[name](**overrides)
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
