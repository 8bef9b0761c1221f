"""GRPO math (layer L3): advantages, DAPO's group selection, per-token log-probs, the loss.

Takes hidden states + an lm_head matrix, or logits, and per-token arrays; never imports the
model or a rollout engine. Each equation is in its module's docstring.
"""

from openrs_jax.grpo.advantages import (
    SCALES,
    STD_EPS,
    group_advantages,
    nanstd,
    reward_stats,
    weighted_reward_sum,
    zero_std_rows,
)
from openrs_jax.grpo.dynamic_sampling import (
    MAX_DYNAMIC_SAMPLING_ROUNDS,
    enough_signal,
    group_has_signal,
    select_groups,
)
from openrs_jax.grpo.logprobs import token_logprobs, token_logprobs_from_logits
from openrs_jax.grpo.loss import (
    IS_LEVELS,
    LOSS_TYPES,
    SAMPLING_IS_MODES,
    clipped_surrogate,
    grpo_loss,
    importance_ratio,
    kl_k3,
    sampling_is_weights,
    sequence_weights,
)

__all__ = [
    "IS_LEVELS",
    "MAX_DYNAMIC_SAMPLING_ROUNDS",
    "LOSS_TYPES",
    "SAMPLING_IS_MODES",
    "SCALES",
    "STD_EPS",
    "clipped_surrogate",
    "enough_signal",
    "group_advantages",
    "group_has_signal",
    "grpo_loss",
    "importance_ratio",
    "kl_k3",
    "nanstd",
    "reward_stats",
    "sampling_is_weights",
    "select_groups",
    "sequence_weights",
    "token_logprobs",
    "token_logprobs_from_logits",
    "weighted_reward_sum",
    "zero_std_rows",
]
