"""Building a run from its RunConfig (layer L5): mesh, tokenizer, prompts, model, optimizer,
the compiled phases, rewards, the rollout engine, checkpoints and metric sinks.

`build_run(cfg, ...)` returns the run's fixed parts (`Run`) and its initial `TrainState`
(restored from the newest checkpoint with `resume`). Everything that changes from step to step
lives in the state; everything here is built once. The order is chosen so that bad input fails
before anything slow or irreversible happens: the config, the run directory lock and the
dataset are checked before the model is loaded, and nothing in the run directory is changed
until the state has been restored.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from openrs_jax import distributed as dist
from openrs_jax import sharding as shd
from openrs_jax.checkpoint import RunCheckpointer, abstract_with_shardings
from openrs_jax.config import ConfigError, RunConfig
from openrs_jax.model import CausalLM, ModelConfig, create_sharded
from openrs_jax.rollout.base import RolloutEngine
from openrs_jax.rollout.build import EngineSpec, build_engine
from openrs_jax.trainer.state import TrainState
from openrs_jax.trainer.step import (
    LossSettings,
    build_logps_fn,
    build_train_step,
    init_optimizer,
    loss_settings,
    lr_schedule,
    make_optimizer,
    optimizer_shardings,
)
from openrs_jax.weights.resolve import model_config_for, resolve_model_dir


@dataclasses.dataclass
class Policy:
    """The trained model's compiled phases and layouts (built once per run).

    train_step(params, opt_state, batch) -> (params, opt_state, metrics): one jit, donated.
    logps_fn(params, batch) -> [B, C] log-probs: the reference (and old-policy) pass.
    ref_params: the frozen initial policy in the compute dtype (None when β = 0).
    """

    graphdef: nnx.GraphDef
    model_config: ModelConfig
    param_shardings: Any
    opt_shardings: Any
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    loss: LossSettings
    num_micro: int
    train_step: Callable
    logps_fn: Callable
    ref_params: Any | None

    def model(self, params) -> CausalLM:
        return nnx.merge(self.graphdef, params)

    def sampler_params(self, params) -> Any:
        """New buffers holding `params` in the compute dtype, on the training mesh: what a
        sampler keeps while the update donates (deletes) the trainer's own buffers, and half
        the bytes to move when the sampler has devices of its own (bf16 from fp32 masters)."""
        compute = jnp.dtype(self.model_config.dtype)
        if all(x.dtype == compute for x in jax.tree.leaves(params)):
            return jax.tree.map(lambda x: x.copy(), params)
        return _cast(params, compute)


@functools.partial(jax.jit, static_argnums=1)
def _cast(params, dtype):
    return jax.tree.map(lambda x: x.astype(dtype), params)


@dataclasses.dataclass
class Rewards:
    """The configured reward functions, their names and weights (`combine_rewards` order)."""

    fns: list[Any]
    names: list[str]
    weights: list[float]


@dataclasses.dataclass
class Run:
    """A run's fixed parts. `closers` release them in reverse order (engine, servers, pools,
    writers, the run-directory lock)."""

    cfg: RunConfig
    run_dir: pathlib.Path
    mesh: jax.sharding.Mesh
    rollout_mesh: jax.sharding.Mesh | None
    tokenizer: Any
    eos_ids: list[int]
    pad_id: int
    data: Any  # PromptIterator
    policy: Policy
    rewards: Rewards
    engine: RolloutEngine
    checkpointer: RunCheckpointer
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)


def samples_in_a_thread(cfg: RunConfig) -> bool:
    """True when JAX programs run from two threads: an overlapped mode with the jax engine (a
    vLLM server samples in its own process; its client thread only waits on HTTP)."""
    return cfg.rollout.mode != "sync" and cfg.rollout.engine == "jax"


def build_meshes(cfg: RunConfig) -> tuple[jax.sharding.Mesh, jax.sharding.Mesh | None]:
    """(training mesh, sampling mesh or None). With `mesh.rollout_devices` = r > 0 the last r
    devices sample (data-parallel rows, `SAMPLE_RULES`) and the others train.

    Several processes: the mesh spans every process, each giving the same number of its own
    devices (`mesh.num_devices` / N), process by process, so the inner mesh axes (tensor, then
    fsdp) stay within a host."""
    check_multiprocess(cfg)
    groups = dist.devices_by_process(jax.devices())
    k, local = len(groups), min(len(g) for g in groups)
    n = cfg.mesh.num_devices if cfg.mesh.num_devices is not None else k * local
    r = cfg.mesh.rollout_devices
    if n > k * local:
        raise ConfigError(f"mesh.num_devices {n} > {k * local} visible devices")
    if k > 1 and n % k:
        raise ConfigError(f"with {k} processes, mesh.num_devices ({n}) must be a multiple of {k}: every "
                          "process gives the same number of its devices")
    if r == 0:
        devices = [d for g in groups for d in g[: n // k]]
        if samples_in_a_thread(cfg) and len(devices) > 1:
            # Two threads would launch collective programs on the same devices in no fixed
            # order: XLA:CPU aborted the process when a rendezvous waited too long (seen under
            # load in CI), and NCCL can deadlock the same way. One device has no collectives.
            raise ConfigError(
                f"rollout.mode {cfg.rollout.mode!r} with the jax engine samples on devices of its own: "
                f"set mesh.rollout_devices (e.g. {max(1, len(devices) // 4)} of the {len(devices)}), "
                "or use rollout.engine: vllm, or rollout.mode: sync"
            )
        return shd.make_mesh(cfg.mesh.axis_sizes(len(devices)), devices=devices), None
    if r >= n:
        raise ConfigError(
            f"mesh.rollout_devices {r} leaves no device to train on ({n} devices); "
            "use 0 to sample on the training mesh"
        )
    if cfg.rollout.engine != "jax":
        raise ConfigError("mesh.rollout_devices needs rollout.engine: jax (a vLLM server has its own GPUs)")
    devices = groups[0][:n]  # one process (check_multiprocess)
    train, roll = devices[: n - r], devices[n - r :]
    train_mesh = shd.make_mesh(cfg.mesh.axis_sizes(len(train)), devices=train)
    return train_mesh, shd.make_mesh({"data": r, "fsdp": 1, "tensor": 1}, devices=roll)


def check_multiprocess(cfg: RunConfig) -> None:
    """Refuses what several processes cannot run yet (ConfigError; no-op for one process)."""
    if dist.process_count() == 1:
        return
    if cfg.rollout.mode != "sync":
        # An overlapped schedule issues the sampler's device programs from a second thread,
        # interleaved with the update's; every process must issue collectives in the same
        # order, which two threads per process do not guarantee.
        raise ConfigError(f"rollout.mode {cfg.rollout.mode!r} runs in one process only; with "
                          f"{dist.process_count()} processes use rollout.mode: sync")
    if cfg.mesh.rollout_devices:
        # The weight sync copies the parameters device to device between the two meshes; JAX
        # (0.10, 0.11) reshards across processes only within one set of devices.
        raise ConfigError(f"mesh.rollout_devices runs in one process only; with {dist.process_count()} "
                          "processes the jax engine samples on the training mesh (mesh.rollout_devices: 0)")


def build_model(cfg: RunConfig, mesh: jax.sharding.Mesh) -> CausalLM:
    """The initial policy, created or loaded straight into its shards (TRAIN_RULES)."""
    model_cfg = model_config_for(cfg)
    if cfg.model.name_or_path is None:
        return create_sharded(model_cfg, mesh, shd.TRAIN_RULES, seed=cfg.seed)
    from openrs_jax.weights import load_hf

    overrides = {k: v for k, v in cfg.model.model_config_overrides().items() if k not in ("dtype", "param_dtype")}
    return load_hf(
        resolve_model_dir(cfg.model.name_or_path),
        dtype=jnp.dtype(model_cfg.dtype),
        param_dtype=jnp.dtype(model_cfg.param_dtype),
        mesh=mesh,
        rules=shd.TRAIN_RULES,
        **overrides,
    )


def eos_and_pad(tokenizer, model_cfg: ModelConfig) -> tuple[list[int], int]:
    """EOS ids and the pad id by the one rule of `openrs_jax.data.eos_and_pad`."""
    from openrs_jax.data import eos_and_pad as rule

    try:
        return rule(tokenizer, model_cfg.eos_token_id)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_rewards(cfg: RunConfig) -> Rewards:
    """The configured reward functions; pool settings passed to the rewards that take them."""
    from openrs_jax.rewards import get_reward, reward_params

    fns = []
    for name in cfg.rewards.reward_funcs:
        kwargs = dict(cfg.rewards.reward_kwargs.get(name, {}))
        accepted = reward_params(name)
        if "workers" in accepted:
            kwargs.setdefault("workers", cfg.rewards.num_workers)
        if "timeout_s" in accepted:
            kwargs.setdefault("timeout_s", cfg.rewards.timeout_s)
        fns.append(get_reward(name, **kwargs))
    return Rewards(fns=fns, names=list(cfg.rewards.reward_funcs), weights=list(cfg.rewards.resolved_weights))


def reward_columns(cfg: RunConfig) -> list[str]:
    """Dataset columns the configured rewards read besides problem/solution."""
    cols = []
    if "exact_match" in cfg.rewards.reward_funcs:
        cols.append(cfg.rewards.reward_kwargs.get("exact_match", {}).get("answer_column", "answer"))
    return cols


def build_policy(cfg: RunConfig, model: CausalLM) -> tuple[Policy, Any, Any]:
    """(policy, params, initial optimizer state) for `model` (already on the training mesh)."""
    graphdef, params = nnx.split(model, nnx.Param)[:2]
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    o = cfg.optim
    schedule = lr_schedule(o.learning_rate, o.max_steps, o.num_warmup_steps, o.lr_scheduler_type, o.min_lr_rate)
    optimizer = make_optimizer(schedule, b1=o.adam_beta1, b2=o.adam_beta2, eps=o.adam_epsilon,
                               weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm)
    opt_shardings = optimizer_shardings(optimizer, params)
    opt_state = init_optimizer(optimizer, params, opt_shardings)
    loss = loss_settings(cfg)
    num_micro = cfg.gradient_accumulation_steps
    compute = jnp.dtype(model.config.dtype)
    # The reference model: the initial policy in the compute dtype (frozen).
    ref_params = (
        jax.jit(lambda p: jax.tree.map(lambda x: x.astype(compute), p), out_shardings=param_shardings)(params)
        if cfg.grpo.beta != 0.0 else None
    )
    policy = Policy(
        graphdef=graphdef, model_config=model.config, param_shardings=param_shardings, opt_shardings=opt_shardings,
        optimizer=optimizer, schedule=schedule, loss=loss, num_micro=num_micro,
        train_step=build_train_step(graphdef, optimizer, schedule, loss, num_micro,
                                    param_shardings=param_shardings, opt_shardings=opt_shardings),
        logps_fn=build_logps_fn(graphdef, loss, num_micro),
        ref_params=ref_params,
    )
    return policy, params, opt_state


def restore_state(checkpointer: RunCheckpointer, initial: TrainState, log: Callable[[str], None]) -> TrainState:
    """The newest intact checkpoint (checksums verified; a damaged newer step is skipped with
    a note) restored into the layout of `initial` (which it replaces), or `initial` when there
    is none."""
    restored = checkpointer.restore_latest_intact(abstract_with_shardings(initial.params),
                                                  abstract_with_shardings(initial.opt_state))
    if restored is None:
        log(f"[openrs] --resume: no checkpoint in {checkpointer.directory}; starting at step 0")
        return initial
    for note in restored.notes:
        log(f"[openrs] warning: {note}")
    log(f"[openrs] resumed from {checkpointer.directory}/{restored.step} (step {int(restored.meta['step'])})")
    return TrainState.from_checkpoint(restored.params, restored.opt_state, restored.meta)


def learning_rate_at(cfg: RunConfig, step: int) -> float:
    """The learning rate of optimizer step `step` + 1 (the schedule at count `step`)."""
    o = cfg.optim
    schedule = lr_schedule(o.learning_rate, o.max_steps, o.num_warmup_steps, o.lr_scheduler_type, o.min_lr_rate)
    return float(jnp.asarray(schedule(step)))


def build_run(cfg: RunConfig, *, meshes: tuple[jax.sharding.Mesh, jax.sharding.Mesh | None], run_dir: pathlib.Path,
              resume: bool, log: Callable[[str], None], closers: list[Callable[[], None]]) -> tuple[Run, TrainState]:
    """The run's parts and its initial (or restored) state on `meshes` (`build_meshes`).
    `Run.cfg` is `cfg` with its epoch-based settings resolved (`RunConfig.for_dataset`).
    Everything started is appended to `closers` as soon as it exists, so a failure half-way
    releases what was built."""
    from openrs_jax.data import build_prompt_iterator, load_tokenizer

    mesh, rollout_mesh = meshes
    layout = "" if rollout_mesh is None else f", sampling on {len(rollout_mesh.devices.flat)} more"
    log(f"[openrs] devices: {len(mesh.devices.flat)} x {jax.devices()[0].device_kind} training, "
        f"mesh {dict(mesh.shape)}{layout}")
    tokenizer = load_tokenizer(cfg.model.tokenizer_path)
    # The prompts are read and checked before the model loads: a bad dataset fails in seconds.
    data = build_prompt_iterator(cfg.data, tokenizer, cfg.seed, required_columns=reward_columns(cfg),
                                 bad_rows=cfg.data.bad_rows, warn=lambda msg: log(f"[openrs] warning: {msg}"))
    resolved = cfg.for_dataset(data.num_rows)  # epoch-based length / saving (TRL's max_steps: -1)
    if resolved is not cfg:
        log(f"[openrs] {data.num_rows} prompts, {max(data.num_rows // cfg.optim.num_prompts_per_step, 1)} steps per "
            f"epoch: max_steps {resolved.optim.max_steps}, save_steps {resolved.checkpoint.save_steps}")
        cfg = resolved

    t0 = time.perf_counter()
    model = build_model(cfg, mesh)
    log(f"[openrs] model: {model.config.num_params() / 1e6:.1f}M parameters ({model.config.param_dtype} weights, "
        f"{model.config.dtype} compute) in {time.perf_counter() - t0:.1f} s")
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(f"tokenizer {cfg.model.tokenizer_path} has {len(tokenizer)} tokens but the model's "
                          f"vocab_size is {model.config.vocab_size}")
    eos_ids, pad_id = eos_and_pad(tokenizer, model.config)
    policy, params, opt_state = build_policy(cfg, model)

    checkpointer = RunCheckpointer(run_dir, keep=cfg.checkpoint.save_total_limit)
    closers.append(checkpointer.close)
    state = TrainState(step=0, params=params, opt_state=opt_state, data=data.state_dict())
    if resume:
        state = restore_state(checkpointer, state, log)

    engine, close_engine = build_engine(
        EngineSpec.from_run_config(cfg),
        policy.model(state.params),
        eos_token_ids=eos_ids, pad_token_id=pad_id, work_dir=run_dir, tokenizer=tokenizer,
        mesh=rollout_mesh or mesh, rules=shd.SAMPLE_RULES, log=log,
    )
    closers.append(close_engine)
    run = Run(cfg=cfg, run_dir=run_dir, mesh=mesh, rollout_mesh=rollout_mesh, tokenizer=tokenizer, eos_ids=eos_ids,
              pad_id=pad_id, data=data, policy=policy, rewards=build_rewards(cfg), engine=engine,
              checkpointer=checkpointer, closers=closers)
    return run, state
