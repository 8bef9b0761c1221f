"""Rollout schedules: when a step's batch is sampled relative to the updates (layer L5).

With W_k the weights after update k and B_k the batch update k trains on:

    sync           B_k is sampled with W_{k-1}, then update k runs (on-policy; the sampler and
                   the trainer take turns).
    one_step_off   B_{k+1} is sampled with W_{k-1} while update k runs (B_1 and B_2 with W_0):
                   generation overlaps training, every batch is exactly one update stale, and
                   the run is deterministic. A checkpoint after step k holds B_{k+1}, so a
                   resumed run replays the uninterrupted one exactly.
    async          the sampler runs ahead in its own thread, up to `max_staleness` batches into
                   a queue, taking the newest weights before each batch (and between decode
                   segments when the engine supports in-flight updates: the KV cache is kept,
                   each token records the weights that sampled it). Update k+1 takes the next
                   batch whose oldest token was sampled with W_j, j >= k - max_staleness;
                   older ones are dropped (`rollout/batches_dropped_stale`). Timing decides
                   which weights sample what, so runs are not bit-reproducible; a checkpoint
                   holds no batch in flight (a resumed run samples its next prompts again).

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
import os
import queue
import threading
from typing import Any

import jax

from openrs_jax.metrics import PhaseTimer
from openrs_jax.trainer.grpo_step import Experience, collect, sync_weights
from openrs_jax.trainer.setup import Run, samples_in_a_thread
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

    def metrics(self) -> dict[str, float]:
        """The schedule's own counters, logged with every step."""
        return {}

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


class _Stop(Exception):
    """Raised inside the producer thread to end it (quiesce/close)."""


class AsyncSchedule(Schedule):
    """A producer thread samples batches ahead into a bounded queue (module docstring)."""

    def __init__(self, run: Run):
        super().__init__(run)
        self.max_staleness = run.cfg.rollout.max_staleness
        self._queue: queue.Queue = queue.Queue(maxsize=self.max_staleness)
        self._lock = threading.Lock()
        self._latest: tuple[Any, int] | None = None  # (sampler-owned params, optimizer step)
        self._engine_step: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped_stale = 0

    # -- the producer ------------------------------------------------------------------------
    def _take_weights(self, timer: PhaseTimer) -> None:
        """Gives the engine the newest weights (producer thread, between batches)."""
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is not None:
            params, step = latest
            with timer("sync"):
                self.run.engine.update_weights(self.run.policy.model(params))
            self._engine_step = step

    def _produce(self, step: int, cursor: dict[str, Any]) -> None:
        try:
            while not self._stop.is_set():
                timer = PhaseTimer()
                self._take_weights(timer)
                engine_step = self._engine_step
                assert engine_step is not None  # _start sets it before starting this thread
                exp = collect(self.run, step, cursor, policy_step=engine_step)
                versions = exp.batch.token_versions
                if versions is not None and (versions >= 0).any():
                    exp.policy_step = int(versions[versions >= 0].min())  # the oldest weights it used
                    self._engine_step = int(versions.max())
                if isinstance(exp.scores, concurrent.futures.Future):
                    exp.wait_scores()  # (deferred in-process rewards are scored by the trainer thread)
                with timer("idle"):  # the queue is full: the sampler waits for the trainer
                    while not self._stop.is_set():
                        try:
                            self._queue.put(exp, timeout=0.05)
                            break
                        except queue.Full:
                            continue
                exp.times.update({f"sampler_{k}": v for k, v in timer.times.items()})
                step, cursor = step + 1, exp.data
        except BaseException as e:  # noqa: BLE001 — handed to the trainer thread
            self._queue.put(e)

    def _start(self, state: TrainState) -> None:
        self._stop.clear()
        if self._engine_step is None:
            self._engine_step = state.step  # the engine was built with this state's weights
        self._thread = threading.Thread(target=self._produce, args=(state.step + 1, state.data),
                                        name="openrs-async-sampler", daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- the trainer side --------------------------------------------------------------------
    def next_experience(self, state: TrainState, timer: PhaseTimer) -> Experience:
        if self._thread is None:
            self._start(state)
        while True:
            with timer("wait_rollout"):
                exp = self._queue.get()
            if isinstance(exp, BaseException):
                self._thread = None
                raise exp
            if state.step - exp.policy_step <= self.max_staleness:  # its oldest token's weights
                # Update state.step + 1 trains on this batch; the data cursor moves past it.
                exp.step = state.step + 1
                return exp
            self.dropped_stale += 1

    def metrics(self) -> dict[str, float]:
        return {"rollout/batches_dropped_stale": float(self.dropped_stale)}

    def after_update(self, state: TrainState, timer: PhaseTimer) -> None:
        with timer("sync"):
            params = self.run.policy.sampler_params(state.params)  # the sampler's own buffers
        offer = getattr(self.run.engine, "offer_weights", None)
        if offer is not None:
            # Taken by the running generate between two decode segments (KV cache kept).
            offer(self.run.policy.model(params), state.step)
            return
        with self._lock:  # taken by the producer before its next batch
            self._latest = (params, state.step)

    def quiesce(self, state: TrainState, timer: PhaseTimer) -> None:
        # Batches sampled ahead are dropped: their prompts are drawn again, from the state's cursor.
        self._halt()
        with self._lock:
            self._latest = None
        offer = getattr(self.run.engine, "offer_weights", None)
        if offer is not None:
            with timer("sync"):  # taken at the start of the engine's next generate
                offer(self.run.policy.model(self.run.policy.sampler_params(state.params)), state.step)
        else:
            sync_weights(self.run, state, timer, own_copy=True)
        self._engine_step = state.step

    def close(self) -> None:
        self._halt()


# XLA:GPU runs a program's kernels as a CUDA graph recorded by stream capture. CUDA invalidates
# a capture when *any* thread synchronises on the same GPU, so a sampler thread and the update
# sharing one GPU fail with cudaErrorStreamCaptureInvalidated: seen on an H200 (one_step_off,
# the jax engine, openrs3 at 1.5B, docs/BENCHMARKS.md 2026-12-03). The overlapped modes with an
# in-process sampler therefore run without command buffers (the empty list disables them all).
NO_COMMAND_BUFFERS = "--xla_gpu_enable_command_buffer="


def thread_safe_xla_flags(flags: str) -> str:
    """`flags` (XLA_FLAGS) with command buffers off, unless the user already chose a setting."""
    if "--xla_gpu_enable_command_buffer" in flags:
        return flags
    return f"{flags} {NO_COMMAND_BUFFERS}".strip()


def check_thread_safe_backend(cfg, backend: str, flags: str) -> None:
    """Refuses an overlapped in-process sampler on a GPU whose XLA_FLAGS keep command buffers on
    (the CLI sets them before JAX starts; a library caller must set them itself)."""
    if backend == "gpu" and samples_in_a_thread(cfg) and thread_safe_xla_flags(flags) != flags:
        raise ValueError(
            f"rollout.mode={cfg.rollout.mode} with the jax engine samples in a second thread, which "
            f"breaks XLA's CUDA-graph capture on a shared GPU; start the process with "
            f"XLA_FLAGS='{thread_safe_xla_flags(flags)}' (openrs_jax.train sets it) or use rollout.mode=sync"
        )


def make_schedule(run: Run, pending: Experience | None = None) -> Schedule:
    mode = run.cfg.rollout.mode
    check_thread_safe_backend(run.cfg, jax.default_backend(), os.environ.get("XLA_FLAGS", ""))
    if mode == "sync":
        return SyncSchedule(run)
    if mode == "one_step_off":
        return OneStepOffSchedule(run, pending)
    return AsyncSchedule(run)
