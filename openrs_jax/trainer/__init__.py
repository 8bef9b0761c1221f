"""GRPO training (layer L5): the state, the jitted phases, one step, and the loop.

    state.py      TrainState: params, optimizer state, step, data cursor (the RNG is the step)
    step.py       the jitted phases: TrainBatch, the update, the log-prob pass, the optimizer
    grpo_step.py  one GRPO step, top to bottom: prompts → rollouts → rewards → update → sync
    setup.py      building a run from its config (Run: mesh, model, engine, rewards, ...)
    run_dir.py    the run directory's rules: lock, config, logs truncated on resume
    trainer.py    the loop: steps, logging, validation, checkpoints, signals
"""

from typing import TYPE_CHECKING

from openrs_jax.trainer.state import TrainState, step_seed
from openrs_jax.trainer.step import (
    LossSettings,
    TrainBatch,
    build_logps_fn,
    build_train_batch,
    build_train_step,
    loss_settings,
    lr_schedule,
    make_optimizer,
)

if TYPE_CHECKING:  # imported lazily below; named here for type checkers
    from openrs_jax.trainer.trainer import Trainer

__all__ = [
    "LossSettings",
    "TrainBatch",
    "TrainState",
    "Trainer",
    "build_logps_fn",
    "build_train_batch",
    "build_train_step",
    "loss_settings",
    "lr_schedule",
    "make_optimizer",
    "step_seed",
]


def __getattr__(name):
    # The loop pulls in data, rewards and the engines; import it only when asked for.
    if name == "Trainer":
        from openrs_jax.trainer.trainer import Trainer

        return Trainer
    raise AttributeError(name)
