"""GRPO training (layer L5): the jitted step functions and the loop."""

from openrs_jax.trainer.step import (
    LossSettings,
    TrainBatch,
    build_logps_fn,
    build_train_batch,
    build_train_step,
    lr_schedule,
    make_optimizer,
)

__all__ = [
    "LossSettings",
    "TrainBatch",
    "Trainer",
    "build_logps_fn",
    "build_train_batch",
    "build_train_step",
    "lr_schedule",
    "make_optimizer",
]


def __getattr__(name):
    # The loop pulls in data, rewards and the engines; import it only when asked for.
    if name == "Trainer":
        from openrs_jax.trainer.trainer import Trainer

        return Trainer
    raise AttributeError(name)
