"""Fixtures for the reward tests."""

from __future__ import annotations

import pytest

from openrs_jax.rewards import VerifyPool, close_shared_pools


@pytest.fixture(scope="module")
def pool():
    """2 workers, math-verify preloaded and warmed up, 10 s hard timeout (the default)."""
    from openrs_jax.rewards import math_rewards

    with VerifyPool(
        2, 10.0, preload=("math_verify", "latex2sympy2_extended"), initializer=math_rewards.warm_up
    ) as p:
        yield p


@pytest.fixture(scope="module", autouse=True)
def _no_shared_pool_leaks():
    """Rewards built with workers>0 use process-wide shared pools: stop them after each module."""
    yield
    close_shared_pools()
