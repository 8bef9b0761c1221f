"""Rewards by name, and TRL's weighted combination of several rewards.

Layer L0 (plain Python + numpy, never imports JAX).

    fn = get_reward("cosine", max_len=3584)      # fn(completions, **columns) -> list[float|None]
    per_reward, total = combine_rewards([get_reward("format"), fn], [1.0, 2.0],
                                        completions, solution=solutions)

`combine_rewards` reproduces TRL's GRPOTrainer (≥ 1.6): a reward may return None for a sample
it does not apply to; None becomes NaN in the [B, R] matrix, and the total is
`nansum(rewards_per_func * weights, axis=1)` over the rewards that answered. A completion
for which every reward answered None is unscorable: its total is NaN (not nansum's 0), and
`openrs_jax.grpo.group_advantages` leaves it out of its group's mean and std and gives it
advantage 0 (TRL huggingface/trl#5902). TRL 0.16.0 to 1.5 summed such a row to 0 and counted
it in the baseline; no Open-RS reward ever answers None, so the recipes are unaffected.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable, Sequence

import numpy as np

from openrs_jax.rewards import math_rewards, text_rewards

RewardFn = Callable[..., list]

_FACTORIES: dict[str, Callable[..., RewardFn]] = {
    "format": text_rewards.make_format,
    "accuracy": math_rewards.make_accuracy,
    "cosine": math_rewards.make_cosine,
    "cosine_tokens": math_rewards.make_cosine_tokens,
    "tag_count": text_rewards.make_tag_count,
    "repetition_penalty": text_rewards.make_repetition_penalty,
    "soft_overlong": text_rewards.make_soft_overlong,
    "exact_match": text_rewards.make_exact_match,
    "last_number": text_rewards.make_last_number,
    "language": text_rewards.make_language,
}


# The names open-r1's and TRL's reward functions carry (their `__name__`, and open-r1's registry
# keys), for the rewards here that compute the same thing. A reward is logged under the name
# the config gives it (`rewards/format_reward/mean`), as TRL logs its functions' `__name__`.
ALIASES = {
    "format_reward": "format",
    "accuracy_reward": "accuracy",
    "cosine_scaled_reward": "cosine",
    "tag_count_reward": "tag_count",
    "repetition_penalty_reward": "repetition_penalty",
    "soft_overlong_punishment": "soft_overlong",
    "soft_overlong_punishment_reward": "soft_overlong",
}


def list_rewards() -> list[str]:
    """The rewards' own names, sorted (`get_reward` also takes the `ALIASES`)."""
    return sorted(_FACTORIES)


def is_reward(name: str) -> bool:
    """Whether `get_reward(name)` knows `name` (its own name or an alias)."""
    return name in _FACTORIES or name in ALIASES


def reward_params(name: str) -> dict[str, Any]:
    """The parameters of reward `name` with their defaults."""
    factory = _factory(name)
    return {p.name: p.default for p in inspect.signature(factory).parameters.values()}


def register_reward(name: str, factory: Callable[..., RewardFn]) -> None:
    """Add a reward: `factory(**params)` must return `f(completions, **columns) -> list`."""
    if name in _FACTORIES or name in ALIASES:
        raise ValueError(f"reward {name!r} is already registered")
    _FACTORIES[name] = factory


def _factory(name: str) -> Callable[..., RewardFn]:
    name = ALIASES.get(name, name)
    if name not in _FACTORIES:
        close = difflib.get_close_matches(name, list(_FACTORIES), n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown reward {name!r}{hint}; known rewards: {list_rewards()}")
    return _FACTORIES[name]


def get_reward(name: str, **params: Any) -> RewardFn:
    """The reward function `name` configured with `params`.

    The result has TRL's signature `f(completions, **columns) -> list[float | None]` and its
    `__name__` is `name` (TRL logs `rewards/<__name__>/mean`). Unknown names raise ValueError
    with the closest known names; unknown parameters raise TypeError naming them.
    """
    factory = _factory(name)
    allowed = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(
            f"reward {name!r} got unknown parameter(s) {unknown}; it accepts {sorted(allowed)}"
        )
    fn = factory(**params)
    fn.__name__ = fn.__qualname__ = name
    return fn


def _as_fn(reward: str | RewardFn) -> RewardFn:
    return get_reward(reward) if isinstance(reward, str) else reward


def reward_name(reward: str | RewardFn) -> str:
    """Metric name of a reward: its registry name or its `__name__`."""
    return reward if isinstance(reward, str) else getattr(reward, "__name__", type(reward).__name__)


def combine_rewards(
    rewards: Sequence[str | RewardFn],
    weights: Sequence[float] | None,
    completions: Sequence[Any],
    **columns: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate R rewards on B completions and combine them as TRL does.

    Args:
      rewards: R reward functions (or registry names, built with default parameters).
      weights: R weights, or None for all 1.0.
      completions: B completion texts; columns: the dataset columns and `completion_ids`.

    Returns:
      per_reward: float64 [B, R], NaN where a reward returned None.
      total: float64 [B], sum_r w_r * per_reward[:, r] skipping NaN; NaN where every reward
        returned None (an unscorable completion: see the module docstring).
    """
    fns = [_as_fn(r) for r in rewards]
    weights = [1.0] * len(fns) if weights is None else [float(w) for w in weights]
    if len(weights) != len(fns):
        raise ValueError(f"got {len(weights)} weights for {len(fns)} rewards")
    num = len(completions)
    per_reward = np.full((num, len(fns)), np.nan, dtype=np.float64)  # [B, R]
    for r, fn in enumerate(fns):
        values = fn(completions, **columns)
        if len(values) != num:
            raise ValueError(
                f"reward {reward_name(fn)!r} returned {len(values)} values for {num} completions"
            )
        per_reward[:, r] = [math.nan if v is None else float(v) for v in values]
    total = np.nansum(per_reward * np.asarray(weights, dtype=np.float64)[None, :], axis=1)
    total[np.isnan(per_reward).all(axis=1)] = np.nan  # unscorable: TRL >= 1.6
    return per_reward, total
