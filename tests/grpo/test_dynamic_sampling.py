"""DAPO dynamic sampling: which groups carry signal, and which make the batch."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.grpo import enough_signal, group_advantages, group_has_signal, select_groups

nan = np.nan


def test_signal_means_two_scorable_rewards_that_differ():
    rewards = np.array([
        1, 1, 1,        # all equal: no signal
        0, 1, 0,        # signal
        nan, 1, nan,    # one scorable completion: no std, no signal
        nan, nan, nan,  # unscorable group
        1, nan, 0,      # the unscorable row is left out; 1 vs 0 is signal
        0.5, 0.5 + 1e-12, nan,  # any difference counts
    ])
    np.testing.assert_array_equal(group_has_signal(rewards, 3), [False, True, False, False, True, True])


def test_signal_is_where_the_advantages_are_not_all_zero():
    rng = np.random.default_rng(0)
    rewards = rng.integers(0, 3, 40 * 4).astype(np.float64)  # many all-equal groups
    rewards[rng.random(rewards.size) < 0.2] = nan
    adv = np.asarray(group_advantages(jnp.asarray(rewards, jnp.float32), 4)).reshape(40, 4)
    np.testing.assert_array_equal(group_has_signal(rewards, 4), (adv != 0).any(axis=1))


def test_groups_with_signal_first_in_sampling_order_then_the_top_up():
    g = 2
    round0 = np.array([0, 1, 1, 1, 0, 0, 1, 0])  # groups: signal, none, none, signal
    round1 = np.array([1, 1, 0, 1])              # groups: none, signal
    chosen, dropped = select_groups([round0, round1], 3, g)
    assert chosen == [(0, 0), (0, 3), (1, 1)] and dropped == 3 * g
    # Too few groups with signal: topped up with the first groups without, in sampling order.
    chosen, dropped = select_groups([round0, round1], 5, g)
    assert chosen == [(0, 0), (0, 3), (1, 1), (0, 1), (0, 2)] and dropped == 1 * g
    assert enough_signal([round0, round1], 3, g) and not enough_signal([round0], 3, g)


def test_too_few_groups_is_an_error():
    with pytest.raises(ValueError, match="need 3 groups"):
        select_groups([np.zeros(4)], 3, 2)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        group_has_signal(np.zeros(5), 2)
