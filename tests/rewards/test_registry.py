"""Registry (names, parameters, errors) and TRL's weighted combination."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from openrs_jax.rewards import (
    combine_rewards,
    registry,
    get_reward,
    list_rewards,
    register_reward,
    reward_name,
    reward_params,
)

ALL = [
    "accuracy",
    "cosine",
    "cosine_tokens",
    "exact_match",
    "format",
    "language",
    "last_number",
    "repetition_penalty",
    "soft_overlong",
    "tag_count",
]


def test_every_reward_is_listed_and_named():
    assert list_rewards() == ALL
    for name in ALL:
        assert get_reward(name).__name__ == name  # TRL logs rewards/<__name__>/mean


def test_unknown_name_lists_known_names_and_closest_matches():
    with pytest.raises(ValueError) as info:
        get_reward("acuracy")
    message = str(info.value)
    assert "unknown reward 'acuracy' (did you mean 'accuracy'?)" in message
    assert all(name in message for name in ALL)
    with pytest.raises(ValueError, match=r"unknown reward 'zzz'; known rewards: \['accuracy'"):
        get_reward("zzz")


def test_unknown_parameter_is_named():
    with pytest.raises(TypeError, match=r"reward 'cosine' got unknown parameter\(s\) \['maxlen'\]"):
        get_reward("cosine", maxlen=3584)


def test_reward_params_defaults():
    params = reward_params("cosine")
    assert params["max_len"] == 3584
    assert (params["min_value_wrong"], params["max_value_wrong"]) == (0.0, -0.5)
    assert (params["min_value_correct"], params["max_value_correct"]) == (0.5, 1.0)
    assert reward_params("format") == {}


def test_register_reward(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))  # keep it local

    def make_const(*, value=1.0):
        def const(completions, **columns):
            return [value] * len(completions)

        return const

    register_reward("test_const_reward", make_const)
    assert get_reward("test_const_reward", value=2.0)(["a", "b"]) == [2.0, 2.0]
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_const_reward", make_const)


def _sometimes_none(completions, **columns):
    return [None if c.startswith("skip") else 0.5 for c in completions]


def test_combine_rewards_is_trl_nansum():
    completions = ["a\n</think>\nx", "skip\n</think>\ny", "skip no tag"]
    per_reward, total = combine_rewards(
        ["format", _sometimes_none], [1.0, 2.0], completions
    )
    assert per_reward.shape == (3, 2) and per_reward.dtype == np.float64
    np.testing.assert_array_equal(per_reward[:, 0], [1.0, 1.0, 0.0])
    assert per_reward[0, 1] == 0.5 and math.isnan(per_reward[1, 1]) and math.isnan(per_reward[2, 1])
    # torch.nansum(rewards_per_func * weights, dim=1)
    np.testing.assert_array_equal(total, [1.0 * 1.0 + 2.0 * 0.5, 1.0, 0.0])
    assert reward_name(_sometimes_none) == "_sometimes_none" and reward_name("format") == "format"


def test_combine_rewards_all_none_row_is_unscorable_and_default_weights():
    # TRL >= 1.6: a row where every reward answered None is NaN (not nansum's 0), so that the
    # advantages leave it out of the baseline (tests/grpo/test_golden.py checks that part).
    per_reward, total = combine_rewards([_sometimes_none], None, ["skip", "take"])
    assert math.isnan(per_reward[0, 0]) and math.isnan(total[0]) and total[1] == 0.5
    per_reward, total = combine_rewards([_sometimes_none, _sometimes_none], [1.0, 3.0], ["skip", "take"])
    assert math.isnan(total[0]) and total[1] == 2.0


def test_combine_rewards_open_rs_exp3():
    fns = [get_reward("format"), get_reward("cosine", max_len=3584, workers=0)]
    completions = ["2\n</think>\n$\\boxed{2}$", "3\n</think>\n$\\boxed{3}$", "$\\boxed{2}$"]
    per_reward, total = combine_rewards(fns, [1.0, 2.0], completions, solution=["$2$"] * 3)
    cos = [0.75 + 0.25 * math.cos(math.pi * len(c) / 3584) for c in completions]
    expected = [1.0 + 2.0 * cos[0], 1.0 + 2.0 * (cos[1] - 1.0), 2.0 * cos[2]]
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-12)


def test_combine_rewards_checks_shapes():
    with pytest.raises(ValueError, match="got 1 weights for 2 rewards"):
        combine_rewards(["format", "tag_count"], [1.0], ["a"])

    def short(completions, **columns):
        return [1.0]

    with pytest.raises(ValueError, match="reward 'short' returned 1 values for 2 completions"):
        combine_rewards([short], None, ["a", "b"])


def test_rewards_never_import_jax():
    # Layer L0: importing and running every reward must not pull in JAX (directly or not).
    code = (
        "import sys\n"
        "import openrs_jax.rewards as R\n"
        "for name in R.list_rewards():\n"
        "    fn = R.get_reward(name, **({'workers': 0} if name in ('accuracy', 'cosine', "
        "'cosine_tokens') else {}))\n"
        "    fn(['1\\n</think>\\n$\\\\boxed{1}$'], solution=['$1$'], answer=['1'], "
        "completion_ids=[[1, 2]])\n"
        "bad = sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax')))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_open_r1_function_names_are_aliases_logged_as_written():
    from openrs_jax.rewards import ALIASES, is_reward

    for alias, _name in ALIASES.items():
        assert is_reward(alias) and alias not in list_rewards()
        fn = get_reward(alias)
        assert fn.__name__ == alias  # rewards/<alias>/mean, as TRL logs open-r1's functions
    texts = ["x\n</think>\ny", "no"]
    assert get_reward("format_reward")(texts) == get_reward("format")(texts)
    assert get_reward("cosine_scaled_reward", max_len=10, workers=0)(["\\boxed{1}"], solution=["$1$"]) == \
        get_reward("cosine", max_len=10, workers=0)(["\\boxed{1}"], solution=["$1$"])
