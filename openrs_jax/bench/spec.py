"""What one worker of the update benchmark (`python -m openrs_jax.bench`) measures, the model
shape it measures it at and the synthetic batch that both implementations (JAX in
`bench.update`, the PyTorch reference in `bench.torch_trl`) see.

No JAX at import: the orchestrator imports this module and must leave the GPU to the workers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# Open-RS: G = 6 completions per prompt, one prompt per micro-batch of 6.
NUM_GENERATIONS = 6
BETA = 0.04
SEED = 0


def model_config(overrides: dict[str, Any] | None = None):
    """The 1.5B shape (DeepSeek-R1-Distill-Qwen-1.5B) with `overrides` (ModelConfig fields;
    the smoke test shrinks it). Imported lazily: the orchestrator must not import JAX."""
    from openrs_jax.model.config import deepseek_r1_distill_qwen_1p5b

    cfg = deepseek_r1_distill_qwen_1p5b(**(overrides or {}))
    # A shrunken vocabulary cannot hold the preset's special ids (transformers warns).
    ids = {k: None for k in ("bos_token_id", "eos_token_id")
           if isinstance(getattr(cfg, k), int) and getattr(cfg, k) >= cfg.vocab_size}
    return cfg.replace(**ids)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one worker measures. `model` holds ModelConfig overrides of the 1.5B shape."""

    batch: int = 6
    seq: int = 2048  # T, prompt + completion
    prompt: int = 256
    remat: str = "dots"
    chunk: int = 512
    compile: bool = False  # torch.compile
    warmup: int = 2
    repeats: int = 5
    ceiling_n: int = 16384
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    devices: int = 1  # JAX update over a mesh of this many GPUs
    parallel: str = "data"  # that mesh's one axis: "data" (replicated state) or "fsdp" (sharded state)

    @property
    def rows(self) -> int:
        """Rows of one step: `batch` per device."""
        return self.batch * self.devices

    @property
    def completion(self) -> int:
        return self.seq - self.prompt

    def __post_init__(self):
        if not 0 < self.prompt < self.seq:
            raise ValueError(f"prompt length {self.prompt} must be in (0, seq={self.seq})")
        if self.warmup < 1 or self.repeats < 1:
            raise ValueError(f"warmup ({self.warmup}) and repeats ({self.repeats}) must be >= 1")
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")
        if self.parallel not in ("fsdp", "data"):
            raise ValueError(f"parallel must be 'fsdp' or 'data', got {self.parallel!r}")


def synthetic_batch(vocab: int, batch: int, seq: int, prompt: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Host arrays of one update batch: tokens [B, T], full masks, positions 0..T-1,
    advantages [B] ~ N(0, 1), reference log-probs [B, C] (negative, plausible magnitudes)."""
    rng = np.random.default_rng(seed)
    c = seq - prompt
    return {
        "tokens": rng.integers(0, vocab, size=(batch, seq), dtype=np.int32),
        "attention_mask": np.ones((batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
        "completion_mask": np.ones((batch, c), np.float32),
        "advantages": rng.standard_normal(batch).astype(np.float32),
        "ref_logps": (-1.0 - np.abs(rng.standard_normal((batch, c)))).astype(np.float32),
    }


def num_generations(batch: int) -> int:
    """Completions per prompt in a micro-batch of `batch` rows: Open-RS's 6 where it divides,
    else one group of all rows (the tiny CPU sizes)."""
    return NUM_GENERATIONS if batch % NUM_GENERATIONS == 0 else batch

