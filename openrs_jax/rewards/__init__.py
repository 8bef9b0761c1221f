"""Rule-based rewards with TRL's signature, registered by name (layer L0: never imports JAX).

    from openrs_jax import rewards
    fns = [rewards.get_reward("format"), rewards.get_reward("cosine", max_len=3584)]
    per_reward, total = rewards.combine_rewards(fns, [1.0, 2.0], completions, solution=golds)

Modules: `registry` (names, TRL-style combination), `math_rewards` (math-verify rewards as
Open-RS ran them), `text_rewards` (format, tags, repetition, length, exact match, language),
`verify_pool` (worker processes with a hard per-task timeout).
"""

from openrs_jax.rewards.math_rewards import CORRECT, FAILED, NO_GOLD, WRONG, cosine_scaled, judge
from openrs_jax.rewards.registry import (
    ALIASES,
    combine_rewards,
    get_reward,
    is_reward,
    list_rewards,
    register_reward,
    reward_name,
    reward_params,
)
from openrs_jax.rewards.text_rewards import (
    final_answer_text,
    foreign_letter_fraction,
    overlong_penalty,
    repetition_score,
)
from openrs_jax.rewards.verify_pool import Outcome, VerifyPool, close_shared_pools, shared_pool

__all__ = [
    "ALIASES",
    "CORRECT",
    "FAILED",
    "NO_GOLD",
    "WRONG",
    "Outcome",
    "VerifyPool",
    "close_shared_pools",
    "combine_rewards",
    "cosine_scaled",
    "final_answer_text",
    "foreign_letter_fraction",
    "get_reward",
    "is_reward",
    "judge",
    "list_rewards",
    "overlong_penalty",
    "register_reward",
    "repetition_score",
    "reward_name",
    "reward_params",
    "shared_pool",
]
