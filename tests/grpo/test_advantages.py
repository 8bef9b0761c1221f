"""Advantages beyond the golden values: invariants and argument checks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.grpo import group_advantages, reward_stats, weighted_reward_sum


def test_group_advantages_are_centred_and_scaled_per_group():
    rewards = jnp.array([0.0, 1.0, 3.0, 3.0, 3.0, 3.0, 1.0, 5.0, 2.0])
    adv = np.asarray(group_advantages(rewards, 3)).reshape(3, 3)
    np.testing.assert_allclose(adv.sum(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(adv[1], 0.0)  # equal rewards: no signal, no NaN
    r = np.asarray(rewards).reshape(3, 3)
    np.testing.assert_allclose(adv[0], (r[0] - r[0].mean()) / (r[0].std(ddof=1) + 1e-4), rtol=1e-6)
    np.testing.assert_allclose(group_advantages(rewards, 3, "none"),
                               (r - r.mean(1, keepdims=True)).reshape(-1), rtol=1e-6)
    stats = reward_stats(rewards, 3)
    np.testing.assert_allclose(stats["frac_reward_zero_std"], 1 / 3)


def test_single_generation_has_zero_std():
    adv = group_advantages(jnp.array([1.0, 2.0]), 1)
    np.testing.assert_allclose(adv, 0.0)


def test_all_none_rewards_are_unscorable():
    r = weighted_reward_sum(jnp.array([[jnp.nan, jnp.nan], [1.0, jnp.nan]]), jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(r, [np.nan, 1.0])


def test_an_unscorable_row_does_not_move_the_baseline():
    # Group [1, 0, NaN]: the baseline is mean(1, 0) = 0.5 and the std that of (1, 0); counting
    # the NaN as 0 (TRL < 1.6) would give mean 1/3 and different advantages.
    rewards = jnp.array([1.0, 0.0, jnp.nan])
    adv = np.asarray(group_advantages(rewards, 3))
    s = np.std([1.0, 0.0], ddof=1)
    np.testing.assert_allclose(adv, [0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.0], rtol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch"])
def test_epsilon_is_the_one_added_to_the_std(scale):
    rewards = jnp.array([0.0, 1.0, 3.0, 1.0, 5.0, 2.0])
    r = np.asarray(rewards).reshape(2, 3)
    std = r.std(1, ddof=1)[:, None] if scale == "group" else r.std(ddof=1)
    for eps in (0.0, 1e-4, 0.5):
        np.testing.assert_allclose(
            np.asarray(group_advantages(rewards, 3, scale, epsilon=eps)).reshape(2, 3),
            (r - r.mean(1, keepdims=True)) / (std + eps), rtol=1e-6,
        )
    # epsilon 0 and a zero-std group: 0/0 is no signal, not NaN (TRL's nan_to_num)
    np.testing.assert_array_equal(group_advantages(jnp.ones(3), 3, scale, epsilon=0.0), 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        group_advantages(rewards, 3, scale, epsilon=-1.0)


def test_bad_arguments_are_named(unchecked):
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(jnp.zeros(5), 2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(jnp.zeros(4), 2, "rank")
    with pytest.raises(ValueError, match="weights"):
        weighted_reward_sum(jnp.zeros((4, 2)), jnp.zeros(3))
