"""DAPO dynamic sampling (`grpo.drop_zero_std_groups`): which groups make the batch.

DAPO (arXiv 2503.14476, §3.2) over-samples prompts and keeps only groups whose rewards are
not all equal: a group whose G completions score the same has advantage 0 everywhere and only
adds the KL term. The trainer samples P prompts, and while fewer than P groups carry signal,
samples up to `MAX_DYNAMIC_SAMPLING_ROUNDS` more rounds of P; then the batch is

    the first P groups with signal, in sampling order, topped up (if too few were found) with
    the first groups without signal, in sampling order

so a step always trains on exactly P groups. A group carries signal when its reward std, as
the advantages compute it (`advantages.nanstd`: unscorable NaN rows left out, NaN with fewer
than two scorable rows), is above 0.

Departures from DAPO: its reference code (verl) keeps sampling until the batch is full, up to
`max_num_gen_batches` rounds, and then errs; we stop after the extra rounds and top the batch
up with zero-std groups, so a run never stops on a hard prompt set. The rows to drop are
counted in the `num_completions_dropped` metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_DYNAMIC_SAMPLING_ROUNDS = 3  # extra rounds of P prompts after the first


def group_has_signal(rewards: np.ndarray, num_generations: int) -> np.ndarray:
    """[P·G] weighted rewards (NaN = unscorable) -> [P] bool: the group's std is > 0.

    The std is TRL's `nanstd` (see `advantages.nanstd`): NaN, hence no signal, for a group
    with fewer than two scorable completions.
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 1 or num_generations < 1 or rewards.shape[0] % num_generations:
        raise ValueError(
            f"rewards must be 1-D with a multiple of num_generations={num_generations} rows, "
            f"got shape {rewards.shape}"
        )
    grouped = rewards.reshape(-1, num_generations)  # [P, G]
    scorable = ~np.isnan(grouped)
    count = scorable.sum(axis=1)
    # max - min over the scorable rows: > 0 exactly when their std is > 0 (no rounding).
    hi = np.where(scorable, grouped, -np.inf).max(axis=1)
    lo = np.where(scorable, grouped, np.inf).min(axis=1)
    return (count >= 2) & (hi > lo)


def select_groups(
    rewards_per_round: Sequence[np.ndarray], num_prompts: int, num_generations: int
) -> tuple[list[tuple[int, int]], int]:
    """Pick the batch's groups from one or more sampling rounds (see the module docstring).

    rewards_per_round: for each round k, its [P_k·G] weighted rewards (NaN = unscorable).
    Returns ([(round, group index within the round)] of length num_prompts, in batch order;
    the number of completions left out). Raises if the rounds hold fewer than num_prompts groups.
    """
    with_signal, without = [], []
    for k, rewards in enumerate(rewards_per_round):
        for i, signal in enumerate(group_has_signal(rewards, num_generations)):
            (with_signal if signal else without).append((k, i))
    available = len(with_signal) + len(without)
    if available < num_prompts:
        raise ValueError(f"need {num_prompts} groups, the rounds hold {available}")
    chosen = (with_signal + without)[:num_prompts]
    return chosen, (available - num_prompts) * num_generations


def enough_signal(rewards_per_round: Sequence[np.ndarray], num_prompts: int, num_generations: int) -> bool:
    """True when the rounds so far hold at least num_prompts groups with signal."""
    found = sum(int(group_has_signal(r, num_generations).sum()) for r in rewards_per_round)
    return found >= num_prompts
