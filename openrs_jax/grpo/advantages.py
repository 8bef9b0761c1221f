"""Rewards → group-relative advantages (TRL `GRPOTrainer._generate_and_score_completions`).

Rows are laid out as in `RolloutBatch`: B = P·G, row b belongs to prompt b // G, so the G
completions of a prompt are contiguous.

Equations (r the weighted reward of a completion, groups of G rows):

    r_b       = Σ_j w_j · R[b, j]            over the j with R[b, j] not NaN   (nansum)
    μ_b       = mean_{g(b)} r                 (the mean of b's group)
    σ_b       = std_{g(b)}(r, ddof=1)         scale="group" (and logged for "none")
              = std_batch(r, ddof=1)          scale="batch"
    A_b       = (r_b − μ_b) / (σ_b + 1e-4)    scale ∈ {"group", "batch"}
              =  r_b − μ_b                    scale="none" (Dr. GRPO)

TRL computes the std with `torch.Tensor.std`, which is unbiased (Bessel, ddof=1); so do we.
A NaN reward stands for a reward function that answered None for that completion; TRL's
`nansum` then drops that function from the sum for that row (a row whose every function
answered None gets 0).

Departures from TRL: none in the arithmetic. With G = 1 TRL sets σ = 0 (and batch σ = 0 for a
single row) rather than NaN; we do the same.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, Float

STD_EPS = 1e-4  # TRL adds this to the std before dividing

Scale = Literal["group", "batch", "none"]
SCALES = ("group", "batch", "none")


def weighted_reward_sum(
    rewards_per_func: Float[Array, "B R"], weights: Float[Array, "R"]
) -> Float[Array, "B"]:
    """r_b = nansum_j(w_j · R[b, j]); NaN marks a reward function that answered None."""
    rewards_per_func = jnp.asarray(rewards_per_func, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if rewards_per_func.ndim != 2 or weights.shape != rewards_per_func.shape[1:]:
        raise ValueError(
            f"rewards_per_func must be [B, R] and weights [R]; got {rewards_per_func.shape} "
            f"and {weights.shape}"
        )
    return jnp.nansum(rewards_per_func * weights[None, :], axis=1)


def _grouped(rewards: Float[Array, "B"], num_generations: int) -> Float[Array, "P G"]:
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [P*G], got shape {rewards.shape}")
    if num_generations < 1 or rewards.shape[0] % num_generations:
        raise ValueError(
            f"len(rewards)={rewards.shape[0]} is not a multiple of "
            f"num_generations={num_generations}"
        )
    return rewards.reshape(-1, num_generations)


def _std_per_row(rewards: Float[Array, "B"], num_generations: int, scale: str) -> Float[Array, "B"]:
    """σ_b as defined in the module docstring (group std for "group" and "none")."""
    grouped = _grouped(rewards, num_generations)
    if scale in ("group", "none"):
        if num_generations == 1:
            return jnp.zeros_like(rewards, dtype=jnp.float32)
        std = jnp.std(grouped, axis=1, ddof=1)  # [P]
        return jnp.repeat(std, num_generations)
    if scale == "batch":
        if grouped.size == 1:
            return jnp.zeros((1,), jnp.float32)
        return jnp.broadcast_to(jnp.std(grouped, ddof=1), (grouped.size,))
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def group_advantages(
    rewards: Float[Array, "B"], num_generations: int, scale: Scale = "group"
) -> Float[Array, "B"]:
    """A_b = (r_b − mean_group) / (σ_b + 1e-4), or without the division for scale="none".

    rewards: [P·G] weighted rewards (see `weighted_reward_sum`), groups contiguous.
    scale: "group" (GRPO, Open-RS), "batch" (TRL scale_rewards="batch"), "none" (Dr. GRPO).
    """
    grouped = _grouped(rewards, num_generations)
    centred = (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)  # [B]
    std = _std_per_row(rewards, num_generations, scale)
    if scale == "none":
        return centred
    return centred / (std + STD_EPS)


def reward_stats(
    rewards: Float[Array, "B"], num_generations: int, scale: Scale = "group"
) -> dict[str, Float[Array, ""]]:
    """TRL's reward metrics for one batch.

    reward: mean of r; reward_std: std of r over the batch (ddof=1; current TRL's
    `nanstd(rewards)`); reward_group_std: mean over rows of the group std (TRL < 0.27 called
    this reward_std); frac_reward_zero_std: fraction of rows whose σ_b is 0 (torch.isclose
    with its default tolerances: |σ| ≤ 1e-8), i.e. rows whose group carries no signal.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    std = _std_per_row(rewards, num_generations, scale)
    return {
        "reward": rewards.mean(),
        "reward_std": _std_per_row(rewards, rewards.shape[0], "batch")[0],
        "reward_group_std": _std_per_row(rewards, num_generations, "group").mean(),
        "frac_reward_zero_std": (jnp.abs(std) <= 1e-8).astype(jnp.float32).mean(),
    }
