"""Rollout schedules: when a step's batch is sampled relative to the updates (layer L5).

With W_k the weights after update k and B_k the batch update k trains on:

    sync           B_k is sampled with W_{k-1}, then update k runs (on-policy; the sampler and
                   the trainer take turns).
    one_step_off   B_{k+1} is sampled with W_{k-1} while update k runs (B_1 and B_2 with W_0):
                   generation overlaps training, every batch is exactly one update stale, and
                   the run is deterministic. A checkpoint after step k holds B_{k+1}, so a
                   resumed run replays the uninterrupted one exactly.

In the overlapped mode the sampler's per-token log-probs are the behaviour policy: the loss
applies the sampler importance-sampling correction (`RunConfig.sampler_correction`, see
`openrs_jax.grpo.loss`), which with μ = 1 is AReaL's decoupled objective
    ℓ = −w · min(ρ·A, clip(ρ, 1 − ε, 1 + ε_h)·A),  ρ = π_θ / sg(π_θ),  w = cap(π_θ / π_behav)
(`grpo.vllm_importance_sampling_mode` picks TRL's token/sequence and truncate/mask variants).

A schedule owns the engine between steps: it syncs the weights when the sampler is idle, and
`quiesce` waits for sampling in flight (before validation, which samples too, and before a
checkpoint, which stores the batch in flight).
"""

from __future__ import annotations

import abc
import concurrent.futures
from typing import Any

from openrs_jax.metrics import PhaseTimer
from openrs_jax.trainer.grpo_step import Experience, collect, sync_weights
from openrs_jax.trainer.setup import Run
from openrs_jax.trainer.state import TrainState


class Schedule(abc.ABC):
    def __init__(self, run: Run):
        self.run = run

    @abc.abstractmethod
    def next_experience(self, state: TrainState, timer: PhaseTimer) -> Experience:
        """The batch update `state.step + 1` trains on."""

    def after_update(self, state: TrainState, timer: PhaseTimer) -> None:
        """Called with the updated state."""

    def quiesce(self, state: TrainState, timer: PhaseTimer) -> None:
        """Waits for sampling in flight and leaves the engine idle with `state`'s weights."""

    def in_flight(self) -> Experience | None:
        """The sampled batch of the next step, if one is held (after `quiesce`)."""
        return None

    def close(self) -> None:
        """Waits for a background rollout (the engine must not be closed under it)."""


class SyncSchedule(Schedule):
    """Sample, update, sync: the engine always holds the newest weights between steps."""

    def next_experience(self, state: TrainState, timer: PhaseTimer) -> Experience:
        return collect(self.run, state.step + 1, state.data, policy_step=state.step)

    def after_update(self, state: TrainState, timer: PhaseTimer) -> None:
        sync_weights(self.run, state, timer)


class OneStepOffSchedule(Schedule):
    """B_{k+1} sampled with W_{k-1} in a background thread while update k runs."""

    def __init__(self, run: Run, pending: Experience | None = None):
        super().__init__(run)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="openrs-sampler")
        self._pending: concurrent.futures.Future | None = None
        if pending is not None:  # restored from a checkpoint: the batch that was in flight
            self._pending = concurrent.futures.Future()
            self._pending.set_result(pending)
        self._engine_step: int | None = None  # the optimizer step of the weights the engine holds

    def _wait(self, timer: PhaseTimer) -> Experience | None:
        if self._pending is None:
            return None
        with timer("wait_rollout"):  # the trainer idles while the sampler finishes
            return self._pending.result()

    def _sync(self, state: TrainState, timer: PhaseTimer) -> None:
        if self._engine_step != state.step:
            sync_weights(self.run, state, timer, own_copy=True)
            self._engine_step = state.step

    def next_experience(self, state: TrainState, timer: PhaseTimer) -> Experience:
        exp = self._wait(timer)
        self._pending = None
        if exp is None:  # the first step (or none was in flight): sample it now
            self._sync(state, timer)
            exp = collect(self.run, state.step + 1, state.data, policy_step=state.step)
        # The engine is idle: it takes W_k (this state's weights) and samples B_{k+2} while
        # update k+1 trains on `exp`.
        self._sync(state, timer)
        if exp.step < self.run.cfg.optim.max_steps:
            self._pending = self._pool.submit(collect, self.run, exp.step + 1, exp.data, state.step)
        return exp

    def quiesce(self, state: TrainState, timer: PhaseTimer) -> None:
        if self._pending is not None:
            self._wait(timer)
        self._sync(state, timer)

    def in_flight(self) -> Experience | None:
        if self._pending is None:
            return None
        exp = self._pending.result()
        exp.wait_scores()
        return exp

    def close(self) -> None:
        if self._pending is not None:
            try:
                self._pending.result()
            except Exception:  # noqa: BLE001 — the main thread reports its own error
                pass
        self._pool.shutdown(wait=True)


def make_schedule(run: Run, pending: Experience | None = None) -> Schedule:
    mode = run.cfg.rollout.mode
    if mode == "sync":
        return SyncSchedule(run)
    if mode == "one_step_off":
        return OneStepOffSchedule(run, pending)
    raise NotImplementedError(f"rollout.mode {mode!r}")
