"""The jitted phases of a GRPO step: reference/old log-probs and the update.

    TrainBatch (host numpy, B = P·G rows)
      tokens [B, T] = prompt ++ completion ++ padding (right only), T ≥ longest prompt + C (bucketed)
      ─► logps_fn(params, batch)                 one jit: per-token log-probs [B, C]
      ─► train_step(params, opt_state, batch)    one jit: A micro-batches under lax.scan
             (forward → chunked log-probs → grpo_loss → backward, float32 gradient sum),
             global-norm clip, AdamW; a non-finite loss or gradient is not applied.

Every row starts at position 0 and all padding sits at the right end, so the forward needs no
attention mask at all: causal attention is exact for the real tokens (padding comes after
them), and on GPU it runs cuDNN's mask-free causal flash kernel. Row b's completion token j is
predicted by the hidden state at position p_b − 1 + j (p_b = its prompt length); those C
states are gathered per row.

Gradient accumulation is exact for every loss type: `seq_weights` come from the full batch's
mask (`grpo.sequence_weights`), so the sum of the micro-batch losses is the full-batch loss.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from openrs_jax import grpo


# A TrainBatch's arrays: host numpy as `build_train_batch` makes it, device arrays once it is
# placed on the mesh (and inside the jitted phases).
ArrayT = TypeVar("ArrayT", np.ndarray, jax.Array)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainBatch(Generic[ArrayT]):
    """One optimizer step's data. Optional fields are None when unused (static in the jit)."""

    tokens: ArrayT  # [B, T] int32: prompt ++ completion ++ pad
    prompt_lengths: ArrayT  # [B] int32
    completion_mask: ArrayT  # [B, C] float32
    advantages: ArrayT  # [B] float32
    seq_weights: ArrayT  # [B] float32
    ref_logps: ArrayT | None = None  # [B, C]
    old_logps: ArrayT | None = None  # [B, C]
    sampling_logps: ArrayT | None = None  # [B, C]

    @property
    def completion_length(self) -> int:
        return self.completion_mask.shape[1]


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Static settings of the loss (from the grpo config section)."""

    beta: float = 0.04
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    loss_type: str = "openrs"
    num_generations: int = 6
    max_completion_length: int | None = None
    logprob_temperature: float = 1.0
    importance_sampling_level: str = "token"
    sampling_is_mode: str = "sequence_mask"
    sampling_is_cap: float = 3.0
    logprob_chunk: int = 512
    log_entropy: bool = True


def loss_settings(cfg) -> LossSettings:
    """The one place the loss settings are read from a run config (`openrs_jax.config.RunConfig`):
    the trainer and the benchmarks both call it."""
    g = cfg.grpo
    return LossSettings(
        beta=g.beta,
        epsilon_low=g.epsilon,
        epsilon_high=g.resolved_epsilon_high,
        loss_type=g.loss_type,
        num_generations=g.num_generations,
        max_completion_length=cfg.rollout.max_completion_length,
        logprob_temperature=g.logprob_temperature,
        importance_sampling_level=g.importance_sampling_level,
        sampling_is_mode=g.vllm_importance_sampling_mode,
        sampling_is_cap=g.vllm_importance_sampling_cap,
    )


# ---------------------------------------------------------------------- host-side batch
def build_train_batch(
    prompt_ids: list[list[int]],
    completion_ids: np.ndarray,
    completion_mask: np.ndarray,
    advantages: np.ndarray,
    *,
    num_generations: int,
    pad_token_id: int,
    loss: LossSettings,
    total_length: int,
    completion_length: int,
    sampling_logps: np.ndarray | None = None,
) -> TrainBatch[np.ndarray]:
    """Lays out B = P·G rows: row b = prompt b // G, then its completion, then padding up to
    T = `total_length`; the completion-aligned arrays are `completion_length` wide. Both are
    bucketed by the caller so the update compiles once per bucket, not once per step. Rows
    keep their own prompt length (no left padding), so T need only cover the longest
    prompt + completion; completion columns past a row's end are masked (see
    `completion_logps`)."""
    b = completion_ids.shape[0]
    c_in = completion_ids.shape[1]
    if c_in > completion_length:
        raise ValueError(f"completions of width {c_in} exceed completion_length {completion_length}")
    longest = max(len(prompt_ids[row // num_generations]) for row in range(b)) + c_in
    if longest > total_length:
        raise ValueError(f"prompt + completion of {longest} tokens exceed total_length {total_length}")
    tokens = np.full((b, total_length), pad_token_id, np.int32)
    lengths = np.zeros((b,), np.int32)
    completions = np.where(completion_mask > 0, completion_ids, pad_token_id)
    for row in range(b):
        p = prompt_ids[row // num_generations]
        lengths[row] = len(p)
        tokens[row, : len(p)] = p
        tokens[row, len(p) : len(p) + c_in] = completions[row]
    cmask = np.zeros((b, completion_length), np.float32)
    cmask[:, :c_in] = completion_mask
    seq_w = np.asarray(
        grpo.sequence_weights(
            jnp.asarray(cmask), loss_type=loss.loss_type, num_generations=num_generations,
            max_completion_length=loss.max_completion_length,
        ),
        np.float32,
    )
    samp = None
    if sampling_logps is not None:
        samp = np.zeros((b, completion_length), np.float32)
        samp[:, :c_in] = sampling_logps
    return TrainBatch(
        tokens=tokens,
        prompt_lengths=lengths,
        completion_mask=cmask,
        advantages=np.asarray(advantages, np.float32),
        seq_weights=seq_w,
        sampling_logps=samp,
    )


# ---------------------------------------------------------------------- optimizer
def lr_schedule(
    learning_rate: float,
    max_steps: int,
    warmup_steps: int,
    kind: str = "cosine_with_min_lr",
    min_lr_rate: float = 0.1,
) -> optax.Schedule:
    """HF's schedules as a function of the optimizer step count (0 at the first update, as
    HF's LambdaLR): linear warmup 0 → lr over `warmup_steps`, then
    cosine_with_min_lr: lr·(r + (1 − r)·½(1 + cos(π·progress))), r = min_lr_rate;
    cosine: r = 0; linear: lr·(1 − progress); constant(_with_warmup)."""

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm = jnp.float32(max(warmup_steps, 1))
        progress = jnp.clip((count - warmup_steps) / max(max_steps - warmup_steps, 1), 0.0, 1.0)
        if kind == "constant":
            return jnp.full_like(count, learning_rate)
        if kind == "constant_with_warmup":
            decay = 1.0
        elif kind == "linear":
            decay = 1.0 - progress
        elif kind in ("cosine", "cosine_with_min_lr"):
            floor = min_lr_rate if kind == "cosine_with_min_lr" else 0.0
            decay = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        else:
            raise ValueError(f"unknown lr_scheduler_type {kind!r}")
        warmup = count / warm
        return learning_rate * jnp.where(count < warmup_steps, warmup, decay)

    return schedule


def make_optimizer(
    schedule: optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (torch.optim.AdamW semantics: decoupled weight decay,
    ε outside the square root)."""
    parts = []
    if max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)


# ---------------------------------------------------------------------- log-probs
def completion_logps(
    model, batch: TrainBatch[jax.Array], loss: LossSettings, *, entropy: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Per-token log-probs [B, C] of the completion tokens under `model` (float32)."""
    c = batch.completion_length
    t = batch.tokens.shape[1]
    hidden = model.hidden_states(batch.tokens)  # [B, T, D]: positions 0..T-1, causal, no mask
    # Row b's completion token j sits at position p_b + j and is predicted from p_b - 1 + j.
    # Columns past the row's completion may point beyond T (C and T are bucketed separately):
    # clip them into range, their mask is 0. Valid columns are never clipped because
    # p_b + len(completion_b) <= T (build_train_batch checks it).
    idx = batch.prompt_lengths[:, None] - 1 + jnp.arange(c, dtype=jnp.int32)[None]  # [B, C]
    idx = jnp.minimum(idx, t - 2)
    h = jnp.take_along_axis(hidden, idx[:, :, None], axis=1)  # [B, C, D]
    targets = jnp.take_along_axis(batch.tokens, idx + 1, axis=1)  # [B, C]
    return grpo.token_logprobs(
        h,
        model.lm_head_weight(),
        targets,
        temperature=loss.logprob_temperature,
        chunk_size=loss.logprob_chunk,
        return_entropy=entropy,
        compute_dtype=model.dtype,
    )


def _split_micro(tree: Any, num_micro: int) -> Any:
    """[B, ...] leaves → [A, B/A, ...], strided: micro-batch a holds rows a, a + A, a + 2A, …

    Rows are sharded over the data axes in contiguous blocks, so a strided micro-batch spans
    every device (a contiguous one would sit on one). The loss does not care which rows share
    a micro-batch: `seq_weights` make the accumulated sum exact for any split.
    """
    return jax.tree.map(
        lambda x: x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:]).swapaxes(0, 1), tree
    )


def _merge_micro(x: jax.Array) -> jax.Array:
    """Inverse of `_split_micro` for one [A, B/A, ...] array."""
    return x.swapaxes(0, 1).reshape((-1,) + x.shape[2:])


def build_logps_fn(graphdef: nnx.GraphDef, loss: LossSettings, num_micro: int) -> jax.stages.Wrapped:
    """jit(params, batch) → log-probs [B, C] in `num_micro` sequential micro-batches (the
    reference pass, and the old-policy pass when μ > 1)."""

    def logprob_pass(params, batch: TrainBatch[jax.Array]):  # the name compile lines show
        model = nnx.merge(graphdef, params)
        micro = _split_micro(dataclasses.replace(batch, ref_logps=None, old_logps=None, sampling_logps=None), num_micro)
        return _merge_micro(jax.lax.map(lambda mb: completion_logps(model, mb, loss), micro))

    return jax.jit(logprob_pass)


# ---------------------------------------------------------------------- the update
_SUM_METRICS = ("completion_tokens",)
# Averaged over micro-batches, NaN skipped (TRL logs one value per micro-batch and averages the
# non-NaN ones); the other metrics are token-weighted means.
_MICRO_MEAN_METRICS = ("clip_ratio/low_min", "clip_ratio/high_max")


def build_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    loss: LossSettings,
    num_micro: int,
    *,
    param_shardings: Any = None,
    opt_shardings: Any = None,
) -> jax.stages.Wrapped:
    """jit(params, opt_state, batch) → (params, opt_state, metrics), params and optimizer state
    donated; with shardings given, outputs keep the inputs' layout."""

    def micro_loss(params, mb: TrainBatch[jax.Array]):
        model = nnx.merge(graphdef, params)
        out = completion_logps(model, mb, loss, entropy=loss.log_entropy)
        logps, ent = out if isinstance(out, tuple) else (out, None)  # a pair when loss.log_entropy
        return grpo.grpo_loss(
            logps,
            mb.old_logps,
            mb.ref_logps,
            mb.advantages,
            mb.completion_mask,
            beta=loss.beta,
            epsilon_low=loss.epsilon_low,
            epsilon_high=loss.epsilon_high,
            loss_type=loss.loss_type,
            num_generations=loss.num_generations,
            max_completion_length=loss.max_completion_length,
            importance_sampling_level=loss.importance_sampling_level,
            sampling_logps=mb.sampling_logps,
            sampling_is_mode=loss.sampling_is_mode,
            sampling_is_cap=loss.sampling_is_cap,
            entropy=ent,
            seq_weights=mb.seq_weights,
        )

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def grpo_update(params, opt_state, batch: TrainBatch[jax.Array]):  # the name compile lines show
        micro = _split_micro(batch, num_micro)
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

        def body(carry, mb):
            gsum, lsum, msum = carry
            (l, m), g = grad_fn(params, mb)
            gsum = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), gsum, g)
            w = m["completion_tokens"]
            msum = dict(msum)
            for k, v in m.items():
                if k in _MICRO_MEAN_METRICS:
                    seen = jnp.isfinite(v)
                    msum[k] = msum[k] + jnp.where(seen, v, 0.0)
                    msum[k + "#n"] = msum[k + "#n"] + seen.astype(jnp.float32)
                else:
                    msum[k] = msum[k] + (v if k in _SUM_METRICS else v * w)
            return (gsum, lsum + l, msum), None

        _, m0 = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro))[0])
        msum0 = {k: jnp.zeros((), jnp.float32) for k in m0}
        msum0.update({k + "#n": jnp.zeros((), jnp.float32) for k in m0 if k in _MICRO_MEAN_METRICS})
        (grads, loss_value, msum), _ = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32), msum0), micro)
        tokens = jnp.maximum(msum["completion_tokens"], 1.0)
        metrics = {}
        for k, v in msum.items():
            if k.endswith("#n"):
                continue
            if k in _MICRO_MEAN_METRICS:
                n = msum[k + "#n"]
                metrics[k] = jnp.where(n > 0, v / jnp.maximum(n, 1.0), jnp.nan)
            else:
                metrics[k] = v if k in _SUM_METRICS else v / tokens
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        grad_norm = _global_norm(grads)
        count = _opt_count(opt_state)
        updates, new_opt = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # A non-finite step is not applied: parameters and optimizer state stay as they were.
        # The updates are checked too (not only loss and gradient): a NaN learning rate or Adam
        # state turns finite gradients into NaN weights that every later checkpoint would keep.
        # Counted, not and-ed: XLA:CPU simplifies `all(stack(flags))` into a chain of scalar ands
        # and then copies that chain into the fused `where` of every leaf below, so its compile
        # time grew with the square of the leaf count (SmolLM2-135M, 272 leaves: 104 s for
        # this part alone; counted: 5 s; docs/BENCHMARKS.md, "CI time, fifth pass").
        leaf_finite = jnp.stack([jnp.isfinite(u).all() for u in jax.tree.leaves(updates)])
        updates_finite = leaf_finite.astype(jnp.int32).sum() == leaf_finite.shape[0]
        finite = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm) & updates_finite
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        metrics.update(
            loss=loss_value,
            grad_norm=grad_norm,
            learning_rate=schedule(count),
            update_applied=finite.astype(jnp.float32),
        )
        return keep(new_params, params), keep(new_opt, opt_state), metrics

    kwargs: dict[str, Any] = {"donate_argnums": (0, 1)}
    if param_shardings is not None:
        kwargs["out_shardings"] = (param_shardings, opt_shardings, None)
    return jax.jit(grpo_update, **kwargs)


def _global_norm(tree) -> jax.Array:
    """√(Σ g²) over a pytree (optax.tree.norm where it exists; older optax: global_norm)."""
    norm = getattr(getattr(optax, "tree", None), "norm", None)
    return norm(tree) if norm is not None else optax.global_norm(tree)


def _opt_count(opt_state) -> jax.Array:
    """The optimizer's step count (optax keeps it in the Adam state)."""
    has_count = lambda x: hasattr(x, "_fields") and "count" in x._fields
    counts = [s.count for s in jax.tree.leaves(opt_state, is_leaf=has_count) if has_count(s)]
    return counts[0] if counts else jnp.zeros((), jnp.int32)


def init_optimizer(optimizer: optax.GradientTransformation, params, shardings: Any = None):
    """Optimizer state created on device with the parameters' layout."""
    fn = jax.jit(optimizer.init) if shardings is None else jax.jit(optimizer.init, out_shardings=shardings)
    return fn(params)


def optimizer_shardings(optimizer: optax.GradientTransformation, params) -> Any:
    """Shardings of the optimizer state: every param-shaped subtree (Adam's moments) takes the
    parameters' shardings, everything else (step counts) is replicated."""
    abstract = jax.eval_shape(optimizer.init, params)
    mesh = jax.tree.leaves(params)[0].sharding.mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return _map_state(abstract, params, replicated)


def _map_state(state, params, replicated):
    param_struct = jax.tree.structure(params)
    if jax.tree.structure(state) == param_struct:
        return jax.tree.map(lambda p: p.sharding, params)
    if hasattr(state, "_fields"):  # namedtuple states (ScaleByAdamState, ...)
        return type(state)(*(_map_state(v, params, replicated) for v in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(v, params, replicated) for v in state)
    return jax.tree.map(lambda _: replicated, state)


def num_micro_batches(batch_size: int, micro_batch_size: int) -> int:
    if batch_size % micro_batch_size:
        raise ValueError(f"micro_batch_size {micro_batch_size} does not divide the batch {batch_size}")
    return batch_size // micro_batch_size


def round_up(x: int, m: int) -> int:
    return int(math.ceil(x / m) * m)
