"""GRPO math (layer L3): advantages, per-token log-probs, the clipped-surrogate loss.

Takes hidden states + an lm_head matrix, or logits, and per-token arrays; never imports the
model or a rollout engine. Each equation is in its module's docstring.
"""

from openrs_jax.grpo.advantages import (
    SCALES,
    group_advantages,
    reward_stats,
    weighted_reward_sum,
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
    "LOSS_TYPES",
    "SAMPLING_IS_MODES",
    "SCALES",
    "clipped_surrogate",
    "group_advantages",
    "grpo_loss",
    "importance_ratio",
    "kl_k3",
    "reward_stats",
    "sampling_is_weights",
    "sequence_weights",
    "token_logprobs",
    "token_logprobs_from_logits",
    "weighted_reward_sum",
]
