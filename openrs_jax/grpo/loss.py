"""The GRPO objective: clipped surrogate + β·k3 KL, aggregated over tokens.

Inputs are per-token arrays over the completion tokens ([B, C]; B = P·G rows, row b belongs to
prompt b // G, C the padded completion length, indexed by t) and a mask m (1 up to and
including the first EOS; truncated completions keep all their tokens). Notation: logp = log π_θ (differentiated),
old = log π_old (the policy that scored the rollouts), ref = log π_ref, samp = the sampler's
log-probs (vLLM or our JAX sampler), A_b the advantage of row b, sg = stop-gradient.

Importance ratio (TRL `importance_sampling_level`):

    "token":    ρ[b, t] = exp(logp[b, t] − old[b, t])
    "sequence": ρ[b]    = exp(Σ_t m·(logp − old) / max(Σ_t m, 1))              (GSPO)

    old = None means one update per batch (Open-RS: μ = 1): old := sg(logp), so ρ ≡ 1 in
    value and ∇ρ = ∇logp.

Per-token loss (ε_high defaults to ε_low):

    ℓ[b, t] = −min(ρ·A_b, clip(ρ, 1 − ε_low, 1 + ε_high)·A_b) · w_IS[b, t] + β·k3[b, t]
    k3[b, t] = exp(ref − logp) − (ref − logp) − 1                        (only when β ≠ 0)

Sampler importance-sampling correction (only when `sampling_logps` is given; any engine that
returns sampling log-probs, not only vLLM), a constant weight (no gradient). TRL's names map
to ours as `vllm_importance_sampling_mode` → `sampling_is_mode`,
`vllm_importance_sampling_clip_max` (formerly `_cap`) → `sampling_is_cap`, `_clip_min` →
`sampling_is_cap_min`:

    δ[b, t] = nan_to_num(m·(sg(old) − samp), nan=0)      (a NaN sampler log-prob → no correction)
    "token_*":    r[b, t] = exp(δ[b, t])
    "sequence_*": r[b]    = exp(Σ_t δ[b, t])
    "*_truncate": w_IS = clip(r, cap_min, cap)           "*_mask": w_IS = r·[cap_min ≤ r ≤ cap]

Aggregation (`loss_type`), with n_b = Σ_t m[b, t], N = Σ_b n_b, n_g = Σ_{b∈g} n_b:

    "openrs":  L = (1/P) Σ_g (Σ_{b∈g} Σ_t m·ℓ) / max(n_g, 1)    token mean per group, mean of groups
    "grpo":    L = (1/B) Σ_b (Σ_t m·ℓ) / max(n_b, 1)            token mean per sequence, then mean
    "bnpo":    L = Σ_b Σ_t m·ℓ / max(N, 1)                      token mean over the batch
    "dapo":    L = Σ_b Σ_t m·ℓ / max(N, 1)                      same on a full batch (see 2. below)
    "dr_grpo": L = Σ_b Σ_t m·ℓ / (B · C_max)                    C_max = max_completion_length

Why "openrs" (the aggregation of our openrs presets; docs/design.md, "Semantics to reproduce"): Open-RS trained with the TRL
of open-r1 in March 2025 (0.16), whose loss was `(per_token_loss * mask).sum() / mask.sum()`
over each device's micro-batch. Its launch had per_device_train_batch_size = 6 = G, and TRL's
`RepeatRandomSampler` puts the G completions of a prompt next to each other, so every
micro-batch was exactly one group; gradient accumulation (4 steps, loss / 4) and DDP (3 GPUs,
gradient mean) then averaged those 12 group token-means with equal weight.

Gradient accumulation. Every aggregation above is L = Σ_b w_b Σ_t m[b, t]·ℓ[b, t] with a
per-sequence weight w_b that depends only on the masks of the *whole* batch
(`sequence_weights`). So: compute w = sequence_weights(full mask) once, then for each
micro-batch (any split of the rows, whole groups or not) call
`grpo_loss(..., seq_weights=w[rows])`: it returns Σ_{b∈rows} w_b Σ_t m·ℓ, and the sum over
micro-batches of these losses (and of their gradients) equals the full-batch loss (gradient)
exactly. `seq_weights=None` computes w from the batch passed, i.e. treats it as the full batch.
The same holds across data-parallel shards: compute w on the global mask and shard it with the
rows. (This is TRL's `num_items_in_batch` idea applied to every loss type.)

Where we depart from the paper / TRL:
1. "openrs" is not a TRL loss_type: it names what the Open-RS run computed (above). It equals
   TRL-0.16's loss only when each micro-batch is one group, which we no longer require.
2. TRL's "bnpo" divides by the token count of each micro-batch (and of each process) and then
   averages the micro-batches, so a token's weight depends on how the batch was split; ours is
   the token mean over the full batch, identical to "dapo" (TRL's global `num_items_in_batch`).
   TRL's "bnpo" on one micro-batch equals ours.
3. "dr_grpo" uses max_completion_length if given, else the padded width C of the mask passed
   to `sequence_weights` (TRL always uses the config's max_completion_length).
4. The log-probs that enter here are computed at temperature 1 by default (Open-RS), where
   newer TRL divides the logits by the sampling temperature (see `logprobs.py`).
5. The paper's GRPO (DeepSeekMath) averages per-sequence token means ("grpo"); Open-RS (and we,
   by default) weight every token of a group equally ("openrs").
6. Not implemented: TRL's cispo/sapo/vespo/luspo losses, two-sided clipping (`delta`),
   entropy masks, off-policy masks, the KL bias correction, and the entropy bonus.
7. Metric `sampling/sampling_logp_difference/*` ignores NaN sampler log-probs (TRL lets a NaN
   propagate into the metric).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

# A completion mask as callers hold it: 0/1 floats or bools, on the host or the device.
Mask = Float[Array | np.ndarray, "B C"] | Bool[Array | np.ndarray, "B C"]

LossType = Literal["openrs", "grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES = ("openrs", "grpo", "bnpo", "dr_grpo", "dapo")
IS_LEVELS = ("token", "sequence")
SAMPLING_IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def kl_k3(logps: Float[Array, "B C"], ref_logps: Float[Array, "B C"]) -> Float[Array, "B C"]:
    """k3 = exp(ref − logp) − (ref − logp) − 1 ≥ 0, an unbiased estimate of KL(π_θ ‖ π_ref)."""
    diff = ref_logps - logps
    return jnp.exp(diff) - diff - 1.0


def importance_ratio(
    logps: Float[Array, "B C"],
    old_logps: Float[Array, "B C"] | None,
    mask: Float[Array, "B C"],
    level: str = "token",
) -> Float[Array, " B #C"]:
    """ρ = exp(logp − old) per token ([B, C]), or the GSPO per-sequence ratio ([B, 1])."""
    if old_logps is None:
        old_logps = jax.lax.stop_gradient(logps)
    log_ratio = logps - old_logps
    if level == "token":
        return jnp.exp(log_ratio)
    if level == "sequence":
        mean = (log_ratio * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
        return jnp.exp(mean)[:, None]
    raise ValueError(f"importance_sampling_level must be one of {IS_LEVELS}, got {level!r}")


def clipped_surrogate(
    ratio: Float[Array, " B #C"],
    advantages: Float[Array, " B #C"],
    epsilon_low: float,
    epsilon_high: float,
) -> Float[Array, " B #C"]:
    """−min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) (PPO's pessimistic clipped objective); ρ
    per token [B, C] or per sequence [B, 1], A per sequence [B, 1] or per token [B, C]."""
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    return -jnp.minimum(ratio * advantages, clipped * advantages)


def sampling_is_weights(
    old_logps: Float[Array, "B C"],
    sampling_logps: Float[Array, "B C"],
    mask: Float[Array, "B C"],
    mode: str = "sequence_mask",
    cap: float | None = 3.0,
    cap_min: float | None = None,
) -> Float[Array, " B #C"]:
    """The sampler-mismatch weight w_IS of the module docstring ([B, C] or [B, 1]), no gradient.

    Defaults are TRL's (`vllm_importance_sampling_mode="sequence_mask"`, clip_max 3.0).
    """
    if mode not in SAMPLING_IS_MODES:
        raise ValueError(f"sampling_is_mode must be one of {SAMPLING_IS_MODES}, got {mode!r}")
    diff = jnp.nan_to_num((jax.lax.stop_gradient(old_logps) - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdims=True)
    ratio = jnp.exp(diff)
    if mode.endswith("truncate"):
        return jnp.clip(ratio, cap_min, cap)
    keep = jnp.ones_like(ratio, dtype=bool)
    if cap is not None:
        keep &= ratio <= cap
    if cap_min is not None:
        keep &= ratio >= cap_min
    return jnp.where(keep, ratio, 0.0)


def sequence_weights(
    mask: Mask,
    *,
    loss_type: str,
    num_generations: int | None = None,
    max_completion_length: int | None = None,
) -> Float[Array, " B"]:
    """w_b such that the `loss_type` aggregation of the batch is Σ_b w_b Σ_t m[b, t]·ℓ[b, t].

    Compute it on the full (global) batch mask, then slice it with the rows of each
    micro-batch / data shard (module docstring, "Gradient accumulation").
    """
    mask = jnp.asarray(mask, jnp.float32)
    batch, width = mask.shape
    lengths = mask.sum(-1)  # [B]
    if loss_type == "openrs":
        if not num_generations or batch % num_generations:
            raise ValueError(
                f"loss_type='openrs' needs num_generations dividing the batch; got "
                f"num_generations={num_generations} for {batch} rows"
            )
        num_groups = batch // num_generations
        group_tokens = lengths.reshape(num_groups, num_generations).sum(-1)  # [P]
        per_group = 1.0 / (num_groups * jnp.maximum(group_tokens, 1.0))
        return jnp.repeat(per_group, num_generations)
    if loss_type == "grpo":
        return 1.0 / (batch * jnp.maximum(lengths, 1.0))
    if loss_type in ("bnpo", "dapo"):
        return jnp.full((batch,), 1.0) / jnp.maximum(lengths.sum(), 1.0)
    if loss_type == "dr_grpo":
        max_len = width if max_completion_length is None else max_completion_length
        return jnp.full((batch,), 1.0 / (batch * max_len))
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def _seq_extreme(x: Float[Array, " B #C"], mask: Float[Array, "B C"], reduce) -> Float[Array, ""]:
    """TRL's `nanmin` / `nanmax` of the per-sequence token mean (`masked_seq_mean`): rows
    without tokens are skipped; NaN when no row has tokens. Sequence-level x is [B, 1]."""
    if x.shape[-1] == 1:
        per_seq, valid = x[:, 0], jnp.ones(x.shape[0], bool)
    else:
        tokens = mask.sum(-1)
        per_seq, valid = (x * mask).sum(-1) / jnp.maximum(tokens, 1.0), tokens > 0
    fill = jnp.inf if reduce is jnp.min else -jnp.inf
    return jnp.where(valid.any(), reduce(jnp.where(valid, per_seq, fill)), jnp.nan)


def _masked_mean(x: Float[Array, " B #C"], mask: Float[Array, "B C"]) -> Float[Array, ""]:
    """TRL's `global_masked_mean`: token mean for [B, C], row mean for per-sequence [B, 1]."""
    if x.shape[-1] == 1:
        return x.mean()
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def grpo_loss(
    logps: Float[Array, "B C"],
    old_logps: Float[Array, "B C"] | None,
    ref_logps: Float[Array, "B C"] | None,
    advantages: Float[Array, " B"] | Float[Array, "B C"],
    mask: Mask,
    *,
    beta: float,
    epsilon_low: float,
    loss_type: str,
    epsilon_high: float | None = None,
    num_generations: int | None = None,
    max_completion_length: int | None = None,
    importance_sampling_level: str = "token",
    sampling_logps: Float[Array, "B C"] | None = None,
    sampling_is_mode: str = "sequence_mask",
    sampling_is_cap: float | None = 3.0,
    sampling_is_cap_min: float | None = None,
    entropy: Float[Array, "B C"] | None = None,
    seq_weights: Float[Array, " B"] | None = None,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """The GRPO loss of the module docstring, and TRL's metrics.

    logps: log π_θ of the completion tokens (the only differentiated input).
    old_logps: log π_old, or None for one update per batch (ρ ≡ 1 with the right gradient).
    ref_logps: log π_ref; required when beta ≠ 0 (also used for the `kl` metric if given).
    advantages: [B] (or [B, C]) from `group_advantages`.
    mask: [B, C] completion mask (bool or 0/1).
    sampling_logps: the sampler's log-probs; given → the IS correction of the docstring.
    entropy: per-token entropies, only for the `entropy` metric.
    seq_weights: [B] slice of `sequence_weights(full mask)` for gradient accumulation; None →
      this batch is the full batch (`num_generations` / `max_completion_length` are then used).

    Returns (loss, metrics). Metrics are means over this call's rows (stop-gradient):
    `kl`, `entropy`, `clip_ratio/{low,high,region}_mean` (TRL), `clip_ratio/low_min` and
    `clip_ratio/high_max` (TRL: the least / most clipped sequence's fraction of clipped tokens;
    NaN without tokens), `advantages/{mean,std,min,max}`,
    `sampling/importance_sampling_ratio/{min,mean,max}` and
    `sampling/sampling_logp_difference/{mean,max}` (with sampling_logps), and
    `completion_tokens` (Σ m, to weight micro-batch metrics when combining them).
    """
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = jnp.asarray(mask, jnp.float32)
    logps = logps.astype(jnp.float32)
    advantages = jnp.asarray(advantages, jnp.float32)
    adv = advantages[:, None] if advantages.ndim == 1 else advantages  # [B, 1] or [B, C]
    if beta != 0.0 and ref_logps is None:
        raise ValueError("beta != 0 needs ref_logps (the reference model's log-probs)")
    if seq_weights is None:
        seq_weights = sequence_weights(
            mask,
            loss_type=loss_type,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
        )
    elif loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")

    ratio = importance_ratio(logps, old_logps, mask, importance_sampling_level)
    per_token = clipped_surrogate(ratio, adv, epsilon_low, epsilon_high)  # [B, C]

    metrics: dict[str, Float[Array, ""]] = {}
    if sampling_logps is not None:
        old_or_current = logps if old_logps is None else old_logps
        is_weights = sampling_is_weights(
            old_or_current,
            sampling_logps,
            mask,
            sampling_is_mode,
            sampling_is_cap,
            sampling_is_cap_min,
        )
        per_token = per_token * is_weights
        metrics.update(_sampling_metrics(old_or_current, sampling_logps, mask, is_weights))

    if ref_logps is not None:
        kl = kl_k3(logps, ref_logps.astype(jnp.float32))
        if beta != 0.0:
            per_token = per_token + beta * kl
        metrics["kl"] = _masked_mean(kl, mask)

    loss = jnp.sum(seq_weights * jnp.sum(per_token * mask, axis=-1))

    low = (ratio < 1.0 - epsilon_low) & (adv < 0)
    high = (ratio > 1.0 + epsilon_high) & (adv > 0)
    metrics["clip_ratio/low_mean"] = _masked_mean(low.astype(jnp.float32), mask)
    metrics["clip_ratio/high_mean"] = _masked_mean(high.astype(jnp.float32), mask)
    metrics["clip_ratio/region_mean"] = _masked_mean((low | high).astype(jnp.float32), mask)
    metrics["clip_ratio/low_min"] = _seq_extreme(low.astype(jnp.float32), mask, jnp.min)
    metrics["clip_ratio/high_max"] = _seq_extreme(high.astype(jnp.float32), mask, jnp.max)
    if entropy is not None:
        metrics["entropy"] = _masked_mean(entropy.astype(jnp.float32), mask)
    metrics["advantages/mean"] = advantages.mean()
    metrics["advantages/std"] = advantages.std()
    metrics["advantages/min"] = advantages.min()
    metrics["advantages/max"] = advantages.max()
    metrics["completion_tokens"] = mask.sum()
    return loss, jax.tree.map(jax.lax.stop_gradient, metrics)


def _sampling_metrics(old_logps, sampling_logps, mask, is_weights) -> dict[str, Float[Array, ""]]:
    """TRL's `sampling/*` metrics over masked tokens (NaN sampler log-probs skipped)."""
    old_logps = jax.lax.stop_gradient(old_logps)
    delta = jnp.abs(old_logps - sampling_logps)
    valid = (mask > 0) & jnp.isfinite(delta)
    count = jnp.maximum(valid.sum(), 1)
    if is_weights.shape[-1] == 1:  # sequence modes: one weight per row
        flat, flat_valid = is_weights[:, 0], jnp.ones(is_weights.shape[0], bool)
    else:
        flat, flat_valid = is_weights, mask > 0
    flat_count = jnp.maximum(flat_valid.sum(), 1)
    return {
        "sampling/sampling_logp_difference/mean": jnp.where(valid, delta, 0.0).sum() / count,
        "sampling/sampling_logp_difference/max": jnp.where(valid, delta, 0.0).max(),
        "sampling/importance_sampling_ratio/min": jnp.where(flat_valid, flat, jnp.inf).min(),
        "sampling/importance_sampling_ratio/mean": jnp.where(flat_valid, flat, 0.0).sum()
        / flat_count,
        "sampling/importance_sampling_ratio/max": jnp.where(flat_valid, flat, -jnp.inf).max(),
    }
