"""A rollout engine that lives in process 0 of a multi-process run (layer L4).

An external vLLM server is reached by the trainer's process 0 only: one client, one weight
sync, one set of requests. Every process holds a `PrimaryEngine`; process 0's wraps the real
engine (`inner`), the others' wrap nothing.

    generate(prompts, G, sampling)   process 0 samples; the RolloutBatch is broadcast (through
                                     the coordination service) so every process returns it
    update_weights(model)            every process gathers the (process-spanning) parameters to
                                     its host (a collective); process 0 pushes them

An error in process 0 (an unreachable server, say) stops the other processes through
`distributed.abort` (openrs_jax/cli.py): they are waiting for the broadcast.
"""

from __future__ import annotations

from typing import Any, Sequence

from flax import nnx

from openrs_jax import distributed as dist
from openrs_jax.rollout.base import RolloutBatch, RolloutEngine, SamplingParams


def host_model(model: Any) -> Any:
    """`model` (an NNX module whose parameters may span processes) with its parameters as host
    numpy arrays, on every process (a collective)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return nnx.merge(graphdef, dist.tree_to_host(params), rest)


class PrimaryEngine(RolloutEngine):
    """`inner` on process 0, None elsewhere (see the module docstring)."""

    def __init__(self, inner: RolloutEngine | None):
        if (inner is None) == dist.is_primary():
            raise ValueError("PrimaryEngine needs the engine on process 0 and on no other process")
        self.inner = inner
        self.last_stats: dict[str, float] = {}

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], num_generations: int, sampling: SamplingParams
    ) -> RolloutBatch:
        out = None
        if self.inner is not None:
            batch = self.inner.generate(prompt_token_ids, num_generations, sampling)
            out = (batch, dict(getattr(self.inner, "last_stats", {})))
        batch, self.last_stats = dist.broadcast_object("rollout", out)
        return batch

    def update_weights(self, params: Any) -> None:
        model = host_model(params) if isinstance(params, nnx.Module) else dist.tree_to_host(params)
        if self.inner is not None:
            self.inner.update_weights(model)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
