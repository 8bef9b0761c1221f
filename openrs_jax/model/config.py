"""Decoder configuration: a frozen dataclass, named presets, HF config in and out.

Three HF families share one decoder (pre-norm, GQA with RoPE, SwiGLU, RMSNorm) and differ in a
few switches, all fields of `ModelConfig` resolved from `architecture` (the HF `model_type`):

| architecture | q/k/v bias | o bias | q/k RMSNorm per head | head_dim | RoPE scaling |
|---|---|---|---|---|---|
| qwen2 (DeepSeek-R1-Distill-Qwen, Qwen2.5) | yes | no | no | D / N | none |
| llama (Llama 2/3.x, SmolLM2) | `attention_bias` | `attention_bias` | no | `head_dim` or D / N | linear, llama3 |
| qwen3 | `attention_bias` | `attention_bias` | yes | `head_dim` (128) | linear, llama3 |

What the HF configs can say and this decoder cannot do is rejected by `from_hf_config` with the
field named: sliding-window attention, MLP biases, partial rotary embeddings, RoPE types other
than default/linear/llama3, activations other than SiLU.

Layer L0: no JAX here, so configs can be built, compared and serialised anywhere.
Shape alphabet used across the model (README, "Shape alphabet"): B batch, T sequence, S
key/cache slots, D model, F MLP hidden, N query heads, K kv heads, Q query heads per kv head
(N = K·Q), H head dim, V vocab.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# HF `model_type` → `architectures[0]`: the families this decoder loads and writes.
ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES.values())
ROPE_TYPES = ("linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling as HF's `rope_scaling` / `rope_parameters` describe it.

    "linear": every inverse frequency divided by `factor` (position interpolation).
    "llama3" (Llama 3.1+): wavelengths longer than original/low_freq_factor divided by
      `factor`, shorter than original/high_freq_factor kept, smoothly interpolated between.
    """

    rope_type: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope scaling {self.rope_type!r} is not supported (default, {', '.join(ROPE_TYPES)})")
        if not self.factor > 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")
        if self.rope_type == "llama3":
            low, high, _ = self.llama3_bands()
            if not high > low:
                raise ValueError("llama3 rope scaling needs high_freq_factor > low_freq_factor")

    def llama3_bands(self) -> tuple[float, float, int]:
        """(low_freq_factor, high_freq_factor, original_max_position_embeddings) of a "llama3"
        scaling; ValueError naming the ones that are missing."""
        low, high = self.low_freq_factor, self.high_freq_factor
        original = self.original_max_position_embeddings
        if low is None or high is None or original is None:
            missing = [k for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                       if getattr(self, k) is None]
            raise ValueError(f"llama3 rope scaling needs {', '.join(missing)}")
        return low, high, original

    def to_hf(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a decoder of one of the `ARCHITECTURES`.

    `qkv_bias`, `o_bias` and `qk_norm` left as None take the architecture's values (table in the
    module docstring); set explicitly they must be ones the architecture can express, so that
    `to_hf_config` describes the same model.
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
    rope_scaling: RopeScaling | None = None  # a dict is converted (YAML overrides)
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 131072
    bos_token_id: int | None = 151643
    eos_token_id: int | tuple[int, ...] | None = 151643  # a list is stored as a tuple (hashable)
    architecture: str = "qwen2"  # the HF model_type
    qkv_bias: bool | None = None
    o_bias: bool | None = None
    qk_norm: bool | None = None
    dtype: str = "bfloat16"
    param_dtype: str = "bfloat16"
    attention_impl: str = "auto"
    # Rematerialisation of each decoder layer in the backward pass: "none", "full" (recompute
    # everything) or "dots" (keep matmul outputs, recompute the cheap elementwise ops).
    remat: str = "none"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(SUPPORTED_MODEL_TYPES)}, got {self.architecture!r}"
            )
        # Resolve the architecture's switches (frozen: set through object.__setattr__).
        set_ = lambda k, v: object.__setattr__(self, k, v)
        if self.qkv_bias is None:
            set_("qkv_bias", self.architecture == "qwen2")
        if self.o_bias is None:
            set_("o_bias", False if self.architecture == "qwen2" else self.qkv_bias)
        if self.qk_norm is None:
            set_("qk_norm", self.architecture == "qwen3")
        if isinstance(self.rope_scaling, dict):
            set_("rope_scaling", RopeScaling(**self.rope_scaling))
        if isinstance(self.eos_token_id, list):
            set_("eos_token_id", tuple(self.eos_token_id))
        expressible = {
            "qwen2": self.qkv_bias and not self.o_bias and not self.qk_norm,
            "llama": self.qkv_bias == self.o_bias and not self.qk_norm,
            "qwen3": self.qkv_bias == self.o_bias and self.qk_norm,
        }[self.architecture]
        if not expressible:
            raise ValueError(
                f"architecture {self.architecture!r} cannot have qkv_bias={self.qkv_bias}, o_bias={self.o_bias}, "
                f"qk_norm={self.qk_norm} (qwen2: q/k/v bias only; llama: one attention_bias for q/k/v/o; "
                "qwen3: as llama plus q/k norms)"
            )
        if self.hidden_size % self.num_heads and self.head_dim is None:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "set head_dim explicitly"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.resolved_head_dim % 2:
            raise ValueError(f"head_dim must be even (rotary embeddings rotate pairs), got {self.resolved_head_dim}")
        if self.attention_impl not in ("auto", "xla", "cudnn"):
            raise ValueError(f"attention_impl must be auto, xla or cudnn, got {self.attention_impl!r}")
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"remat must be none, full or dots, got {self.remat!r}")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """`eos_token_id` as a tuple (empty when None)."""
        eos = self.eos_token_id
        return () if eos is None else tuple(eos) if isinstance(eos, tuple) else (eos,)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with `changes`; a new `architecture` also takes that architecture's switches
        (qkv_bias, o_bias, qk_norm) unless they are among the changes."""
        if changes.get("architecture", self.architecture) != self.architecture:
            changes = {"qkv_bias": None, "o_bias": None, "qk_norm": None, **changes}
        return dataclasses.replace(self, **changes)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Parameter count (for MFU: 6·N·tokens uses `include_embeddings=False`)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.resolved_head_dim
        n, k = self.num_heads, self.num_kv_heads
        attn = d * n * h + 2 * d * k * h + n * h * d
        # The switches are bools once __post_init__ has resolved the architecture's defaults.
        attn += (n * h + 2 * k * h) * bool(self.qkv_bias) + d * bool(self.o_bias) + 2 * h * bool(self.qk_norm)
        mlp = 3 * d * f
        per_layer = attn + mlp + 2 * d
        total = self.num_layers * per_layer + d
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return total

    # ------------------------------------------------------------------ HF config
    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], **overrides: Any) -> "ModelConfig":
        """Builds a config from an HF `config.json` dict (its `model_type`, else its
        `architectures`); raises ValueError naming the field this decoder cannot express."""
        arch = _hf_architecture(hf)
        _reject_unsupported(hf, arch)
        rope_theta, rope_scaling = _hf_rope(hf)
        num_heads = hf["num_attention_heads"]
        # A missing head_dim means D / N, except for Qwen3 whose config class defaults to 128.
        head_dim = hf.get("head_dim", 128 if arch == "qwen3" else None)
        if head_dim == hf["hidden_size"] // num_heads and hf["hidden_size"] % num_heads == 0:
            head_dim = None
        attention_bias = bool(hf.get("attention_bias", False))
        eos = hf.get("eos_token_id")
        kwargs: dict[str, Any] = dict(
            architecture=arch,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=hf.get("tie_word_embeddings", False),
            max_position_embeddings=hf.get("max_position_embeddings", 131072),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            qkv_bias=True if arch == "qwen2" else attention_bias,
            o_bias=False if arch == "qwen2" else attention_bias,
            qk_norm=arch == "qwen3",
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_config(self, torch_dtype: str | None = None) -> dict[str, Any]:
        """The `config.json` dict of the equivalent `<Architecture>ForCausalLM`, in the
        format transformers 4 and 5 both read (top-level `rope_theta`, `rope_scaling`)."""
        eos = self.eos_token_id
        out = {
            "architectures": [ARCHITECTURES[self.architecture]],
            "model_type": self.architecture,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.resolved_head_dim,
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rope_scaling": None if self.rope_scaling is None else self.rope_scaling.to_hf(),
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
            "torch_dtype": torch_dtype or self.param_dtype,
        }
        if self.architecture in ("qwen2", "qwen3"):
            out.update(max_window_layers=self.num_layers, use_sliding_window=False, sliding_window=None)
        if self.architecture in ("llama", "qwen3"):
            out["attention_bias"] = bool(self.qkv_bias)
        if self.architecture == "llama":
            out["mlp_bias"] = False
        return out


def _hf_architecture(hf: dict[str, Any]) -> str:
    model_type = hf.get("model_type")
    if model_type in ARCHITECTURES:
        return model_type
    archs = hf.get("architectures") or []
    by_class = {v: k for k, v in ARCHITECTURES.items()}
    for a in archs:
        if a in by_class and model_type is None:
            return by_class[a]
    raise ValueError(
        f"unsupported architecture {model_type or archs!r}: openrs_jax loads model_type "
        f"{', '.join(SUPPORTED_MODEL_TYPES)} ({', '.join(SUPPORTED_ARCHITECTURES)})"
    )


def _reject_unsupported(hf: dict[str, Any], arch: str) -> None:
    """Raises on config fields that change the computation in ways this decoder does not have."""
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported (SwiGLU with silu only)")
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias=true is not supported (MLP projections without bias only)")
    layer_types = hf.get("layer_types") or []
    sliding = [i for i, t in enumerate(layer_types) if t != "full_attention"]
    if hf.get("use_sliding_window") or sliding:
        raise ValueError(
            f"sliding-window attention is not supported (use_sliding_window={hf.get('use_sliding_window')}, "
            f"sliding_window={hf.get('sliding_window')}, non-full layer_types at layers {sliding}); "
            "every layer must attend to the full context"
        )
    rope = _rope_dict(hf)
    prf = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if prf not in (None, 1.0, 1):
        raise ValueError(f"partial_rotary_factor={prf} is not supported (rotary embeddings on the full head_dim only)")


def _rope_dict(hf: dict[str, Any]) -> dict[str, Any]:
    """The RoPE parameters, wherever the config keeps them: transformers 5 writes
    `rope_parameters` (with rope_theta inside), transformers 4 `rope_scaling` + `rope_theta`."""
    out = dict(hf.get("rope_scaling") or {})
    out.update(hf.get("rope_parameters") or {})
    return out


def _hf_rope(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    rope = _rope_dict(hf)
    theta = hf.get("rope_theta")
    if theta is None:
        theta = rope.get("rope_theta", 10000.0)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type in (None, "default"):
        return float(theta), None
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope scaling {rope_type!r} is not supported (default, {', '.join(ROPE_TYPES)})")
    original = rope.get("original_max_position_embeddings")
    if rope_type == "llama3" and original is None:
        original = hf.get("original_max_position_embeddings", hf.get("max_position_embeddings"))
    return float(theta), RopeScaling(
        rope_type=rope_type,
        factor=float(rope["factor"]),
        low_freq_factor=None if rope_type != "llama3" else float(rope["low_freq_factor"]),
        high_freq_factor=None if rope_type != "llama3" else float(rope["high_freq_factor"]),
        # None when the config has no length at all: RopeScaling then names what is missing.
        original_max_position_embeddings=None if rope_type != "llama3" or original is None else int(original),
    )


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
