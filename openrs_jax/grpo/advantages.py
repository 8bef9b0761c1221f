"""Rewards → group-relative advantages (TRL `GRPOTrainer._generate_and_score_completions`).

Rows are laid out as in `RolloutBatch`: B = P·G, row b belongs to prompt b // G, so the G
completions of a prompt are contiguous.

Equations (R[b, j] reward function j on completion b, NaN where it answered None; groups of
G rows; S = the scorable rows, those with at least one R[b, j] not NaN):

    r_b       = Σ_j w_j · R[b, j]  over the j with R[b, j] not NaN, if b ∈ S   (nansum)
              = NaN                 if b ∉ S (every function answered None)
    μ_b       = mean of r over the rows of b's group in S
    σ_b       = std of r over the rows of b's group in S, ddof=1    scale="group" (and "none")
              = std of r over all rows in S, ddof=1                 scale="batch"
              (NaN when fewer than two rows count)
    A_b       = (r_b − μ_b) / (σ_b + ε)    scale ∈ {"group", "batch"},  ε = 1e-4 by default
              =  r_b − μ_b                  scale="none" (Dr. GRPO)
    A_b       = 0 wherever the above is NaN

So an unscorable completion gets advantage 0 and does not move its group's baseline, and a
group with fewer than two scorable completions carries no signal (all its advantages are 0).
This is TRL ≥ 1.6 (huggingface/trl#5902, "Exclude None reward completions from GRPO/RLOO
advantage baseline"; `nanstd` from trl/trainer/utils.py, then `nan_to_num(nan=0)`). TRL
0.16.0 to 1.5 summed an unscorable row to 0 and kept it in the baseline. The TRL commit
Open-RS ran (69ad852, before 0.16.0) accepted no None at all (`torch.tensor` of a None
fails), and Open-RS's rewards never answer None, so its run is the same under every rule. The
std is unbiased (Bessel), as `torch.Tensor.std` and TRL's `nanstd`.

Departures from TRL: none in the arithmetic. ε is a parameter (`grpo.advantage_epsilon`);
TRL hard-codes 1e-4. With G = 1 TRL sets σ = 0 (and the batch σ = 0 for a single row) rather
than NaN; we do the same.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

STD_EPS = 1e-4  # TRL adds this to the std before dividing

Scale = Literal["group", "batch", "none"]
SCALES = ("group", "batch", "none")


def weighted_reward_sum(
    rewards_per_func: Float[Array, "B R"], weights: Float[Array, " R"]
) -> Float[Array, " B"]:
    """r_b = nansum_j(w_j · R[b, j]); NaN where every R[b, j] is NaN (an unscorable row)."""
    rewards_per_func = jnp.asarray(rewards_per_func, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if rewards_per_func.ndim != 2 or weights.shape != rewards_per_func.shape[1:]:
        raise ValueError(
            f"rewards_per_func must be [B, R] and weights [R]; got {rewards_per_func.shape} "
            f"and {weights.shape}"
        )
    total = jnp.nansum(rewards_per_func * weights[None, :], axis=1)
    return jnp.where(jnp.isnan(rewards_per_func).all(axis=1), jnp.nan, total)


def _grouped(rewards: Float[Array, " B"], num_generations: int) -> Float[Array, "P G"]:
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [P*G], got shape {rewards.shape}")
    if num_generations < 1 or rewards.shape[0] % num_generations:
        raise ValueError(
            f"len(rewards)={rewards.shape[0]} is not a multiple of "
            f"num_generations={num_generations}"
        )
    return rewards.reshape(-1, num_generations)


def nanstd(x: Float[Array, "..."], axis: int | None = None) -> Float[Array, "..."]:
    """TRL's `nanstd`: the unbiased std of the non-NaN entries, NaN if fewer than two.

    Computed as TRL does, nanmean((x − nanmean x)²) · n / (n − 1), not as a sum over n − 1.
    """
    mean = jnp.nanmean(x, axis=axis, keepdims=True)
    variance = jnp.nanmean((x - mean) ** 2, axis=axis)
    count = jnp.sum(~jnp.isnan(x), axis=axis)
    correction = jnp.where(count > 1, count / jnp.maximum(count - 1, 1), jnp.nan)
    return jnp.sqrt(variance * correction)


def _std_per_row(rewards: Float[Array, " B"], num_generations: int, scale: str) -> Float[Array, " B"]:
    """σ_b as defined in the module docstring (group std for "group" and "none")."""
    grouped = _grouped(rewards, num_generations)
    if scale in ("group", "none"):
        if num_generations == 1:
            return jnp.zeros_like(rewards, dtype=jnp.float32)
        return jnp.repeat(nanstd(grouped, axis=1), num_generations)  # [P] -> [B]
    if scale == "batch":
        if grouped.size == 1:
            return jnp.zeros((1,), jnp.float32)
        return jnp.broadcast_to(nanstd(grouped), (grouped.size,))
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def group_advantages(
    rewards: Float[Array, " B"],
    num_generations: int,
    scale: Scale = "group",
    epsilon: float = STD_EPS,
) -> Float[Array, " B"]:
    """A_b = (r_b − μ_b) / (σ_b + ε), or r_b − μ_b for scale="none"; 0 where that is NaN.

    rewards: [P·G] weighted rewards (see `weighted_reward_sum`), groups contiguous; NaN marks
      an unscorable completion (left out of its group's mean and std, advantage 0).
    scale: "group" (GRPO, Open-RS), "batch" (TRL scale_rewards="batch"), "none" (Dr. GRPO).
    epsilon: added to the std before dividing (TRL: 1e-4; `grpo.advantage_epsilon`).
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    grouped = _grouped(rewards, num_generations)
    centred = (grouped - jnp.nanmean(grouped, axis=1, keepdims=True)).reshape(-1)  # [B]
    std = _std_per_row(rewards, num_generations, scale)
    advantages = centred if scale == "none" else centred / (std + epsilon)
    return jnp.nan_to_num(advantages, nan=0.0)  # as TRL: also ±inf -> ±float max


def zero_std_rows(
    rewards: Float[Array, " B"], num_generations: int, scale: Scale = "group"
) -> Bool[Array, " B"]:
    """Rows whose σ_b is 0 (torch.isclose's default tolerance, |σ| ≤ 1e-8): no signal.

    A NaN σ (fewer than two scorable rows) is not "zero", as in TRL's `is_std_zero`.
    """
    return jnp.abs(_std_per_row(rewards, num_generations, scale)) <= 1e-8


def reward_stats(
    rewards: Float[Array, " B"], num_generations: int, scale: Scale = "group"
) -> dict[str, Float[Array, ""]]:
    """Reward metrics for one batch, unscorable (NaN) rows left out as TRL ≥ 1.6 leaves them.

    reward: mean of r over scorable rows; reward_std: the std of r over the batch (ddof=1;
    current TRL's `nanstd(rewards)`); reward_group_std: mean of σ_b over the rows where it is
    defined (the group std averaged: TRL < 0.27 called this reward_std); frac_reward_zero_std:
    fraction of all rows whose σ_b is 0 (`zero_std_rows`), i.e. rows whose group carries no signal.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    return {
        "reward": jnp.nanmean(rewards),
        "reward_std": nanstd(rewards),
        "reward_group_std": jnp.nanmean(_std_per_row(rewards, num_generations, "group")),
        "frac_reward_zero_std": zero_std_rows(rewards, num_generations, scale).astype(jnp.float32).mean(),
    }
