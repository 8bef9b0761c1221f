"""The `last_number` reward on strings."""

from openrs_jax.rewards import get_reward
from openrs_jax.rewards.text_rewards import final_number


def test_final_number_extraction():
    assert final_number("8 + 6 = 14.") == "14"
    assert final_number("It is 1,400 or -3") == "-3"
    assert final_number("about 2.50") == "2.50"
    assert final_number("no digits") is None


def test_reward_scores_the_last_number():
    fn = get_reward("last_number")
    completions = ["8 + 6 = 14.", "To add 8 and 6, you simply add", "14.0", "14 is 8 + 6", "", "x"]
    assert fn(completions, answer=["14"] * 6) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
