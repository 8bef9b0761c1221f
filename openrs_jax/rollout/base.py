"""The rollout interface: prompts in, host arrays out.

Layer L0 (no JAX): every engine (the built-in JAX sampler, the vLLM client) implements
`RolloutEngine`; the trainer and the evaluator only see this module.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Iterable, Sequence

import numpy as np

FINISH_STOP = "stop"  # an EOS or stop token was sampled (it is part of the completion)
FINISH_LENGTH = "length"  # max_new_tokens reached


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample. `temperature == 0` means greedy. `top_p == 1` and `top_k <= 0` disable
    those filters. `stop_token_ids` end a completion like EOS does (and are kept in it).
    `logprob_temperature`: None reports each sampled token's log-prob under the sampling
    distribution; a value T reports log softmax(logits / T) at the token, unfiltered: the
    behaviour policy in the trainer's parametrisation (`grpo.logprob_temperature`), which the
    sampler importance-sampling correction compares with the trainer's own log-probs."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: tuple[int, ...] = ()
    seed: int = 0
    logprob_temperature: float | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.logprob_temperature is not None and not self.logprob_temperature > 0:
            raise ValueError(f"logprob_temperature must be > 0 or None, got {self.logprob_temperature}")


@dataclasses.dataclass
class RolloutBatch:
    """P prompts × G samples = B completions, row b = prompt b // G, sample b % G.

    completion_ids: int32 [B, C], right-padded with `pad_token_id`.
    completion_mask: int32 [B, C], 1 up to and including the first EOS/stop token.
    logprobs: float32 [B, C], log-prob of each sampled token under the sampling distribution
      (0 where the mask is 0).
    lengths: int32 [B], number of completion tokens (sum of the mask).
    finish_reasons: list of "stop" | "length", one per row.
    prompt_ids: list of the P prompts' token ids (unpadded), in order.
    weight_version: the weights version that produced the batch (engines that sync weights).
    token_versions: int32 [B, C], the weights version (as given to `offer_weights`) that
      sampled each token, when the engine took new weights during this batch; else None.
    """

    completion_ids: np.ndarray
    completion_mask: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    finish_reasons: list[str]
    prompt_ids: list[list[int]]
    num_generations: int
    weight_version: int = 0
    token_versions: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return int(self.completion_ids.shape[0])

    def completion_token_lists(self) -> list[list[int]]:
        return [row[: int(n)].tolist() for row, n in zip(self.completion_ids, self.lengths)]


class RolloutEngine(abc.ABC):
    """Generates completions and receives new weights.

    `progress`: when set, engines that can tell call `progress(finished rows, total rows)` while
    `generate` runs (the JAX sampler between decode segments, the vLLM client per request), for
    progress bars; None (the default) reports nothing."""

    progress: Callable[[int, int], None] | None = None

    @abc.abstractmethod
    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], num_generations: int, sampling: SamplingParams
    ) -> RolloutBatch:
        """Samples `num_generations` completions for each prompt."""

    @abc.abstractmethod
    def update_weights(self, params: Any) -> None:
        """Makes the next `generate` use `params` (an NNX model or state)."""

    def close(self) -> None:
        """Releases resources (servers, device buffers)."""


def pack_completions(
    completions: Sequence[Sequence[int]],
    logprobs: Sequence[Sequence[float]],
    finish_reasons: Sequence[str],
    prompt_ids: Sequence[Sequence[int]],
    num_generations: int,
    pad_token_id: int,
    eos_token_ids: Sequence[int],
    weight_version: int = 0,
) -> RolloutBatch:
    """Packs per-row token lists (an HTTP engine's output) into a `RolloutBatch`, cutting each
    row after its first EOS/stop token (`pack_arrays`)."""
    b = len(completions)
    valid = np.asarray([len(ids) for ids in completions], np.int64)
    width = max(1, int(valid.max(initial=0)))
    tokens = np.full((b, width), pad_token_id, np.int32)
    lps = np.zeros((b, width), np.float32)
    for i, (ids, lp) in enumerate(zip(completions, logprobs)):
        tokens[i, : len(ids)] = ids
        lps[i, : len(lp)] = lp
    return pack_arrays(tokens, lps, valid, finish_reasons, prompt_ids=prompt_ids, num_generations=num_generations,
                       pad_token_id=pad_token_id, stop_token_ids=eos_token_ids, weight_version=weight_version)


def pack_arrays(
    tokens: np.ndarray,
    logprobs: np.ndarray,
    valid: np.ndarray,
    finish_reasons: Sequence[str],
    *,
    prompt_ids: Sequence[Sequence[int]],
    num_generations: int,
    pad_token_id: int,
    stop_token_ids: Iterable[int],
    weight_version: int = 0,
) -> RolloutBatch:
    """The one place that defines a completion's extent, for every engine: row i is
    tokens[i, :valid[i]] cut after its first stop token (kept, finish reason "stop"; else the
    given reason); the mask covers exactly those tokens, the rest is padding."""
    cols = np.arange(tokens.shape[1])[None]
    valid = np.asarray(valid)
    stop = np.isin(tokens, sorted(set(int(t) for t in stop_token_ids))) & (cols < valid[:, None])
    has_stop = stop.any(axis=1)
    lengths = np.where(has_stop, stop.argmax(axis=1) + 1, valid).astype(np.int32)
    width = max(1, int(lengths.max(initial=0)))
    mask = cols[:, :width] < lengths[:, None]
    return RolloutBatch(
        completion_ids=np.where(mask, tokens[:, :width], pad_token_id).astype(np.int32),
        completion_mask=mask.astype(np.int32),
        logprobs=np.where(mask, logprobs[:, :width], 0.0).astype(np.float32),
        lengths=lengths,
        finish_reasons=[FINISH_STOP if s else r for s, r in zip(has_stop, finish_reasons)],
        prompt_ids=[list(p) for p in prompt_ids],
        num_generations=num_generations,
        weight_version=weight_version,
    )
