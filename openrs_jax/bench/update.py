"""The JAX side of the update benchmark (`python -m openrs_jax.bench`): the trainer's GRPO update
and reference forward, measured at the shape and on the batch of `bench.spec`; the PyTorch
reference they are compared with is `bench.torch_trl`, the FLOP count `bench.flops`, and
`bench.workers` runs each worker in its own process.

- `jax_update`: exactly the trainer's update. The model is built as the trainer builds it
  (float32 master weights, bfloat16 compute, `create_sharded` on one device), the step
  is `trainer.step.build_train_step(..., num_micro=1)` with `make_optimizer` (global-norm clip
  1.0 + AdamW) and `LossSettings` as the trainer fills them (β = 0.04, "openrs" loss, entropy
  logged), params and optimizer state donated. Variants: `remat` ("none" | "dots" | "full")
  and `chunk` (`LossSettings.logprob_chunk`). The step runs its forward over all T tokens,
  right-padded, with no attention mask (cuDNN's causal flash kernel). Its first version ran
  over T − 1 tokens with an explicit mask: cuDNN rejected the odd length, and the mask cost
  13 % (the what-if rows that led to the change: docs/BENCHMARKS-update-notes.md).
- `jax_reference`: `trainer.step.build_logps_fn(graphdef, loss, 1)` on bfloat16 parameters
  (the trainer's frozen reference copy).
- `ceiling`: the run's environment and JAX's bf16 matmul rate, the MFU denominator.

Batch: B rows of T = prompt + C tokens, random ids, full masks, random advantages; all T
tokens of every row count in tokens/s (as the PyTorch anchors in docs/design.md do).
MFU = model FLOPs (`bench.flops.model_flops`) / (time × bf16 matmul rate measured in the same
run by `ceiling`).

Peak memory: JAX `memory_stats()['peak_bytes_in_use']` of the worker process (weights,
optimizer state and the step's buffers). XLA's own plan for the compiled step
(`memory_analysis`) is recorded too.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from openrs_jax.bench.spec import BETA, SEED, Spec, model_config, num_generations, synthetic_batch


def _mesh(spec: Spec):
    """None for one device; else a one-axis mesh of `spec.devices` GPUs with rows split over
    them: "data" (the trainer's default mesh: state replicated, gradients all-reduced) or
    "fsdp" (parameters, gradients and Adam state sharded too; `mesh: {data: 1, fsdp: -1}`)."""
    import jax

    from openrs_jax import sharding as shd

    if spec.devices == 1:
        return None
    if jax.device_count() < spec.devices:
        raise ValueError(f"devices={spec.devices} but this machine has {jax.device_count()} {jax.default_backend()} device(s)")
    axes = {"data": 1, "fsdp": 1, "tensor": 1, spec.parallel: spec.devices}
    return shd.make_mesh(axes, jax.devices()[: spec.devices])


def _jax_model(spec: Spec, param_dtype: str, remat: str):
    """(cfg, graphdef, params, mesh) of the policy built as the trainer builds it."""
    import jax
    from flax import nnx

    from openrs_jax import sharding as shd
    from openrs_jax.model import create_sharded

    cfg = model_config(spec.model).replace(dtype="bfloat16", param_dtype=param_dtype, remat=remat)
    # Created eagerly on one device and then placed: `create_sharded` with a mesh jits the
    # random init, which takes XLA minutes to compile for the 1.5B shape (the eager init
    # takes seconds). On one device the trainer's mesh constrains nothing, so none is set.
    model = create_sharded(cfg, None, seed=SEED)
    mesh = _mesh(spec)
    if mesh is not None:
        model.set_sharding(mesh, shd.TRAIN_RULES)  # activation constraints, as the trainer's model
    graphdef, params = nnx.split(model, nnx.Param)[:2]
    if mesh is not None:
        params = jax.device_put(params, shd.state_shardings(params, mesh, shd.TRAIN_RULES))
    return cfg, graphdef, params, mesh


def _jax_loss_settings(spec: Spec):
    """The loss settings the trainer builds for the openrs3 recipe (`trainer.step.loss_settings`,
    the one place they are read from a config), at this benchmark's shape."""
    import dataclasses

    from openrs_jax.config import load_config
    from openrs_jax.trainer.step import loss_settings

    cfg = load_config("openrs3", [f"grpo.beta={BETA}", f"grpo.num_generations={num_generations(spec.batch)}",
                                  f"rollout.max_completion_length={spec.completion}",
                                  "optim.micro_batch_size=null", "optim.gradient_accumulation_steps=null",
                                  f"optim.num_prompts_per_step={max(1, spec.batch // num_generations(spec.batch))}"])
    return dataclasses.replace(loss_settings(cfg), logprob_chunk=spec.chunk)


def _jax_batch(spec: Spec, cfg, with_ref: bool, mesh=None):
    import jax
    import jax.numpy as jnp

    from openrs_jax import grpo
    from openrs_jax import sharding as shd
    from openrs_jax.trainer.step import TrainBatch

    host = synthetic_batch(cfg.vocab_size, spec.rows, spec.seq, spec.prompt)
    seq_w = np.asarray(
        grpo.sequence_weights(jnp.asarray(host["completion_mask"]), loss_type="openrs",
                              num_generations=num_generations(spec.batch)),
        np.float32,
    )
    batch = TrainBatch(
        tokens=host["tokens"],
        prompt_lengths=np.full((spec.rows,), spec.prompt, np.int32),
        completion_mask=host["completion_mask"],
        advantages=host["advantages"],
        seq_weights=seq_w,
        ref_logps=host["ref_logps"] if with_ref else None,
    )
    if mesh is None:
        return jax.device_put(batch, jax.devices()[0])
    return jax.tree.map(lambda x: jax.device_put(x, shd.batch_sharding(mesh, shd.TRAIN_RULES, x.ndim)), batch)


def _memory_plan(compiled) -> dict[str, float]:
    """XLA's buffer plan of a compiled program in GiB (absent where the backend has none)."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 — not every backend implements it
        return {}
    if ma is None:
        return {}
    gib = 2**30
    args, out = ma.argument_size_in_bytes, ma.output_size_in_bytes
    alias, temp = ma.alias_size_in_bytes, ma.temp_size_in_bytes
    return {"plan_args_GiB": args / gib, "plan_temp_GiB": temp / gib, "plan_total_GiB": (args + out - alias + temp) / gib}


def _jax_peak_gib() -> float | None:
    from openrs_jax.bench import common

    peak = common.peak_bytes()
    return None if peak is None else peak / 2**30


def build_jax_update(spec: Spec):
    """The trainer's update for `spec`, compiled: (cfg, compiled step, params, opt_state, batch,
    compile seconds). Shared by `jax_update` and scripts/profile_gpu.py."""
    import jax

    from openrs_jax.trainer.step import (
        build_train_step, init_optimizer, lr_schedule, make_optimizer, optimizer_shardings,
    )

    cfg, graphdef, params, mesh = _jax_model(spec, "float32", spec.remat)
    loss = _jax_loss_settings(spec)
    schedule = lr_schedule(1e-6, 500, 50)
    optimizer = make_optimizer(schedule, max_grad_norm=1.0)
    if mesh is None:
        opt_state = init_optimizer(optimizer, params)
        step = build_train_step(graphdef, optimizer, schedule, loss, 1)
    else:  # as the trainer: outputs keep the inputs' shardings
        param_sh = jax.tree.map(lambda x: x.sharding, params)
        opt_sh = optimizer_shardings(optimizer, params)
        opt_state = init_optimizer(optimizer, params, opt_sh)
        step = build_train_step(graphdef, optimizer, schedule, loss, 1, param_shardings=param_sh, opt_shardings=opt_sh)
    batch = _jax_batch(spec, cfg, with_ref=True, mesh=mesh)
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, batch).compile()
    return cfg, compiled, params, opt_state, batch, time.perf_counter() - t0


def jax_update(spec: Spec) -> dict[str, Any]:
    """Median step time of the trainer's jitted update (see module docstring)."""
    import jax

    cfg, compiled, params, opt_state, batch, compile_s = build_jax_update(spec)
    plan = _memory_plan(compiled)

    # The warm-up runs at least once (Spec.warmup >= 1): `metrics` below is that run's.
    params, opt_state, metrics = compiled(params, opt_state, batch)
    for _ in range(spec.warmup - 1):
        params, opt_state, metrics = compiled(params, opt_state, batch)
    jax.block_until_ready((params, opt_state, metrics))
    times = []
    for _ in range(spec.repeats):
        t0 = time.perf_counter()
        params, opt_state, metrics = compiled(params, opt_state, batch)
        jax.block_until_ready((params, opt_state, metrics))
        times.append(time.perf_counter() - t0)
    loss_value = float(metrics["loss"])
    applied = float(metrics["update_applied"])
    if not np.isfinite(loss_value) or applied != 1.0:
        raise RuntimeError(f"jax_update: non-finite step (loss {loss_value}, update_applied {applied})")
    return {
        "step_s": statistics.median(times), "min_s": min(times), "compile_s": compile_s,
        "peak_GiB": _jax_peak_gib(), "loss": loss_value, **plan,
        "attention_impl": _attention_impl(cfg),
    }


def _attention_impl(cfg) -> str:
    from openrs_jax.model import abstract_model

    return abstract_model(cfg).attention_impl()


def jax_reference(spec: Spec) -> dict[str, Any]:
    """Median time of the trainer's reference log-prob pass on bfloat16 parameters."""
    import jax

    from openrs_jax.trainer.step import build_logps_fn

    if spec.devices != 1:
        raise ValueError("the reference benchmark runs on one device (devices=1)")
    cfg, graphdef, params, _ = _jax_model(spec, "bfloat16", "none")
    fn = build_logps_fn(graphdef, _jax_loss_settings(spec), 1)
    batch = _jax_batch(spec, cfg, with_ref=False)
    t0 = time.perf_counter()
    compiled = fn.lower(params, batch).compile()
    compile_s = time.perf_counter() - t0
    plan = _memory_plan(compiled)
    out = None
    for _ in range(spec.warmup):
        out = compiled(params, batch)
    jax.block_until_ready(out)
    times = []
    for _ in range(spec.repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(params, batch))
        times.append(time.perf_counter() - t0)
    if not np.isfinite(np.asarray(out)).all():
        raise RuntimeError("jax_reference: non-finite log-probs")
    return {"step_s": statistics.median(times), "min_s": min(times), "compile_s": compile_s,
            "peak_GiB": _jax_peak_gib(), **plan, "attention_impl": _attention_impl(cfg)}


def ceiling(spec: Spec) -> dict[str, Any]:
    """The run's environment and the bf16 matmul rate (n = spec.ceiling_n), the MFU
    denominator, measured by JAX on this device."""
    from openrs_jax.bench import common

    env = common.environment()
    try:
        import torch

        env["torch"] = torch.__version__
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    import flax

    env["flax"] = flax.__version__
    return {"env": env, "matmul_flops": common.matmul_flops(spec.ceiling_n), "matmul_n": spec.ceiling_n}
