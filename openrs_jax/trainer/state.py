"""The training state: everything a run needs to continue, and nothing else (layer L5).

A GRPO step is a function `TrainState -> TrainState` (plus metrics): it reads prompts at the
state's data cursor, samples with a seed derived from (run seed, step), updates the
parameters and the optimizer state, and returns the advanced state. A checkpoint stores one
`TrainState`; restoring it and stepping on replays the run exactly.

RNG: there is no RNG state to carry. Step s samples with `step_seed(seed, s)`, the reward
workers are deterministic, and the update has no randomness, so (run seed, step) is the whole
random state.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of step `step` (1-based): a function of (run seed, step) only."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


@dataclasses.dataclass
class TrainState:
    """step: optimizer steps done (0 before the first); params: the policy's `nnx.State`
    (nnx.Param leaves, sharded by TRAIN_RULES); opt_state: the optax state (same layout);
    data: the prompt stream's cursor (`PromptIterator.state_dict()`) after the last batch drawn
    for a completed step; nonfinite_run: consecutive skipped (non-finite) steps so far;
    in_flight: the next step's batch when it was sampled before this state's update finished
    (one-step-off; `grpo_step.experience_to_json`), else None; num_tokens: prompt and completion
    tokens of every step so far (TRL's `num_input_tokens_seen`, logged as `num_tokens`)."""

    step: int
    params: Any
    opt_state: Any
    data: dict[str, Any]
    nonfinite_run: int = 0
    in_flight: dict[str, Any] | None = None
    num_tokens: int = 0

    def meta(self, *, seed: int, run_name: str) -> dict[str, Any]:
        """The JSON part of a checkpoint (the arrays are saved beside it)."""
        meta = {"step": self.step, "data": self.data, "seed": seed, "nonfinite_run": self.nonfinite_run,
                "run_name": run_name, "num_tokens": self.num_tokens}
        if self.in_flight is not None:
            meta["in_flight"] = self.in_flight
        return meta

    @classmethod
    def from_checkpoint(cls, params: Any, opt_state: Any, meta: dict[str, Any]) -> "TrainState":
        return cls(step=int(meta["step"]), params=params, opt_state=opt_state, data=meta["data"],
                   nonfinite_run=int(meta.get("nonfinite_run", 0)), in_flight=meta.get("in_flight"),
                   num_tokens=int(meta.get("num_tokens", 0)))
