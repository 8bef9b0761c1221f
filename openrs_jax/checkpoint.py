"""Orbax checkpoints of a training run: everything needed to resume (layer L4).

Layout of a run directory:

    <run_dir>/config.yaml          the resolved RunConfig (written once at the start)
    <run_dir>/checkpoints/<step>/  params, opt_state (sharded arrays), meta (JSON: step,
                                   data cursor, RNG seed, weight version, non-finite count)

Saves are asynchronous (training continues while the arrays are written) and atomic
(Orbax writes into a temporary directory and renames it on commit), so a crash or a full
disk never leaves a half-written step that `latest_step` would pick. The reference model is
not saved: it is the run's initial policy, rebuilt deterministically from the config.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Iterable

import jax
import orbax.checkpoint as ocp
from flax import nnx

from openrs_jax import sharding as shd

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointError(RuntimeError):
    """Saving or restoring failed; the message names the step and directory."""


class RunCheckpointer:
    """Keep-N, async, atomic Orbax checkpoints under `<run_dir>/checkpoints`."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        keep: int | None = None,
        async_save: bool = True,
        protect: Callable[[], Iterable[int]] | None = None,
    ):
        """keep: the newest `keep` checkpoints survive rotation (None: all), plus the steps
        `protect()` names (the best validation step)."""
        self.directory = pathlib.Path(run_dir).absolute() / CHECKPOINT_SUBDIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.protect = protect
        # Rotation is ours, not Orbax's max_to_keep: it must spare protected steps.
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=async_save, create=True)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, params: nnx.State, opt_state: Any, meta: dict[str, Any]) -> None:
        """Starts an async save of `step`. Raises CheckpointError (the previous checkpoints
        stay intact) if the save cannot be started or an earlier async save failed."""
        try:
            self._mngr.save(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
                    opt_state=ocp.args.StandardSave(opt_state),
                    meta=ocp.args.JsonSave(meta),
                ),
            )
        except Exception as e:  # noqa: BLE001 — reported with context, never swallowed
            raise CheckpointError(
                f"saving checkpoint step {step} in {self.directory} failed: {type(e).__name__}: {e}. "
                f"Last complete checkpoint: {self.latest_step()}"
            ) from e
        self._rotate()

    def _rotate(self) -> None:
        """Deletes committed checkpoints beyond the newest `keep`, sparing protected steps."""
        if self.keep is None:
            return
        steps = sorted(self.all_steps())
        spared = set(steps[-self.keep :]) | set(self.protect() if self.protect else ())
        for step in steps:
            if step not in spared:
                self._mngr.delete(step)

    def wait(self) -> None:
        """Blocks until pending async saves are committed; raises CheckpointError on failure."""
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"writing a checkpoint in {self.directory} failed: {type(e).__name__}: {e}. "
                f"Last complete checkpoint: {self.latest_step()}"
            ) from e

    def restore(self, step: int, abstract_params: nnx.State, abstract_opt_state: Any | None) -> tuple[nnx.State, Any, dict]:
        """Restores `step` into the given abstract targets (ShapeDtypeStructs with shardings),
        so every array lands directly in its shard."""
        args = {
            "params": ocp.args.StandardRestore(nnx.to_pure_dict(abstract_params)),
            "meta": ocp.args.JsonRestore(),
        }
        if abstract_opt_state is not None:
            args["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"restoring checkpoint step {step} from {self.directory} failed: {e}") from e
        params = abstract_params
        nnx.replace_by_pure_dict(params, restored["params"])
        return params, restored.get("opt_state") if abstract_opt_state is not None else None, restored["meta"]

    def close(self) -> None:
        self._mngr.close()


def abstract_with_shardings(tree: Any) -> Any:
    """ShapeDtypeStructs carrying each array's sharding (restore targets)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def load_model_from_run(run_dir: str | os.PathLike, step: int | None = None, *, mesh=None, dtype=None):
    """(model, tokenizer, step) from a training run directory: the parameters of `step`
    (default: the latest) in a model built from the run's own config.yaml."""
    from openrs_jax.config import load_config
    from openrs_jax.data import load_tokenizer
    from openrs_jax.model import abstract_model
    from openrs_jax.weights.resolve import model_config_for

    run_dir = pathlib.Path(run_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} not found: {run_dir} is not a training run directory")
    cfg = load_config(cfg_file)
    model_cfg = model_config_for(cfg)
    if dtype is not None:
        model_cfg = model_cfg.replace(dtype=jax.numpy.dtype(dtype).name)
    ckpt = RunCheckpointer(run_dir, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoints in {ckpt.directory}")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {ckpt.directory}; saved steps: {sorted(steps)}")
        graphdef, abstract = nnx.split(abstract_model(model_cfg))
        if mesh is not None:
            shardings = shd.state_shardings(abstract, mesh, shd.TRAIN_RULES)
        else:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            shardings = jax.tree.map(lambda _: device, abstract)
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        params, _, _ = ckpt.restore(step, abstract, None)
    finally:
        ckpt.close()
    model = nnx.merge(graphdef, params)
    if mesh is not None:
        model.set_sharding(mesh, shd.TRAIN_RULES)
    tokenizer = load_tokenizer(cfg.model.tokenizer_path)
    return model, tokenizer, step
