"""accuracy / cosine / cosine_tokens on hand-written completions, and adversarial inputs."""

from __future__ import annotations

import math
import signal

import pytest
from reward_test_utils import pid_alive

from openrs_jax.rewards import (
    CORRECT,
    NO_GOLD,
    WRONG,
    VerifyPool,
    cosine_scaled,
    get_reward,
    judge,
    math_rewards,
)

GOLD = "Adding, we get $1 + 1 = \\boxed{2}$."
RIGHT = "So 1+1=2.\n</think>\nThe answer is $\\boxed{2}$."
WRONG_ANSWER = "So 1+1=3.\n</think>\nThe answer is $\\boxed{3}$."
NOT_BOXED = "So the sum is 2.\n</think>\n$2$"  # no \boxed and no "answer is" anchor
UNPARSEABLE_GOLD = "The answer is two apples."  # no LaTeX at all


def test_judge_branches():
    assert judge(RIGHT, GOLD) == CORRECT
    assert judge(WRONG_ANSWER, GOLD) == WRONG
    assert judge(NOT_BOXED, GOLD) == WRONG  # LaTeX anchors only, as Open-RS configured it
    assert judge("The final answer is $2$", GOLD) == CORRECT  # an anchored, unboxed answer
    assert judge(RIGHT, UNPARSEABLE_GOLD) == NO_GOLD
    assert judge("$\\boxed{0.5}$", "$\\frac{1}{2}$") == CORRECT


def test_judge_keeps_open_rs_argument_order():
    # Open-RS calls verify(answer, gold). math-verify only compares a relation with an
    # interval when its second argument is the set, so the order is observable:
    assert judge("$\\boxed{1 < x < 2}$", "$(1,2)$") == CORRECT  # verify(gold, answer): False
    assert judge("$\\boxed{(1,2)}$", "$1<x<2$") == WRONG  # verify(gold, answer): True


def test_judge_open_rs_refuses_malformed_operators():
    # malformed_operators=False: `\frac43` in the answer is not repaired to \frac{4}{3}.
    assert judge("$\\boxed{\\frac43}$", "$\\frac{4}{3}$") == WRONG
    assert judge("$\\boxed{\\frac{4}{3}}$", "$\\frac{4}{3}$") == CORRECT


@pytest.mark.parametrize("workers", [0, 2])
def test_accuracy_branches(workers):
    acc = get_reward("accuracy", workers=workers)
    completions = [RIGHT, WRONG_ANSWER, NOT_BOXED, RIGHT, ""]
    golds = [GOLD, GOLD, GOLD, UNPARSEABLE_GOLD, GOLD]
    # correct, wrong, no extractable answer, gold does not parse (skip -> 1.0), empty.
    assert acc(completions, solution=golds) == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_accuracy_column_errors():
    acc = get_reward("accuracy", workers=0)
    with pytest.raises(KeyError, match="needs the column 'solution'"):
        acc([RIGHT], answer=["2"])
    with pytest.raises(ValueError, match="column 'solution' row 1 is NoneType"):
        acc([RIGHT, RIGHT], solution=[GOLD, None])
    # A dataset whose gold lives elsewhere.
    assert get_reward("accuracy", workers=0, gold_column="answer")([RIGHT], answer=["$2$"]) == [1.0]


def test_cosine_scaled_values():
    m = 3584
    for length, correct, expected in [
        (0, True, 1.0), (m / 2, True, 0.75), (m, True, 0.5), (2 * m, True, 1.0),
        (0, False, 0.0), (m / 2, False, -0.25), (m, False, -0.5), (2 * m, False, 0.0),
    ]:  # fmt: skip
        assert math.isclose(cosine_scaled(length, correct, m), expected, abs_tol=1e-12)


def _pad(text: str, length: int) -> str:
    """`text` with spaces appended up to `length` characters (spaces do not change the answer)."""
    assert len(text) <= length
    return text + " " * (length - len(text))


@pytest.mark.parametrize("workers", [0, 2])
def test_cosine_on_character_length(workers):
    m = 100
    cos = get_reward("cosine", max_len=m, workers=workers)
    completions = [
        _pad(RIGHT, m // 2), _pad(RIGHT, m), _pad(RIGHT, 2 * m),
        _pad(WRONG_ANSWER, m // 2), _pad(WRONG_ANSWER, m), _pad(WRONG_ANSWER, 2 * m),
        _pad(NOT_BOXED, m), _pad(RIGHT, m),
    ]  # fmt: skip
    golds = [GOLD] * 7 + [UNPARSEABLE_GOLD]
    expected = [0.75, 0.5, 1.0, -0.25, -0.5, 0.0, -0.5, 1.0]
    assert cos(completions, solution=golds) == pytest.approx(expected, abs=1e-12)


def test_cosine_defaults_are_open_rs_exp3():
    cos = get_reward("cosine", workers=0)
    assert cos([_pad(RIGHT, 3584), _pad(WRONG_ANSWER, 3584)], solution=[GOLD, GOLD]) == (
        pytest.approx([0.5, -0.5])
    )


def test_cosine_tokens_uses_token_length_and_clamps():
    m = 10
    cos_tok = get_reward("cosine_tokens", max_len=m, workers=0)
    ids = [[1] * n for n in (0, 5, 10, 20, 35, 20)]
    completions = [RIGHT] * 5 + [WRONG_ANSWER]
    out = cos_tok(completions, solution=[GOLD] * 6, completion_ids=ids)
    # Past M the length is clamped: 20 and 35 tokens score like 10, not like 0 or 5.
    assert out == pytest.approx([1.0, 0.75, 0.5, 0.5, 0.5, -0.5], abs=1e-12)
    with pytest.raises(KeyError, match="completion_ids"):
        cos_tok([RIGHT], solution=[GOLD])


def test_bad_parameters():
    with pytest.raises(ValueError, match="max_len"):
        get_reward("cosine", max_len=0)
    with pytest.raises(ValueError, match="boxed"):
        get_reward("accuracy", boxed=True)
    with pytest.raises(ValueError, match="workers"):
        get_reward("accuracy", workers=-1)


ADVERSARIAL = {
    "tower": "So\n</think>\n$\\boxed{10^{10^{10^{10}}}}$",
    "factorial": "$\\boxed{(10^{10})!}$",
    "long": "x " * 50_000 + "$\\boxed{2}$",  # 100k characters, correct at the end
    "nested": "$\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}$",
    "many_boxed": "\\boxed{1} " * 10_000,
}


@pytest.fixture(scope="module")
def kill_pool():
    """2 workers with a 2 s hard timeout."""
    with VerifyPool(
        2, 2.0, preload=("math_verify", "latex2sympy2_extended"), initializer=math_rewards.warm_up
    ) as pool:
        yield pool


def test_adversarial_completions_finish_within_the_hard_timeout(kill_pool):
    pool = kill_pool
    timeouts_before = pool.num_timeouts
    acc = get_reward("accuracy", pool=pool)
    acc([RIGHT, RIGHT], solution=[GOLD, GOLD])  # start the workers outside the timed region
    completions = list(ADVERSARIAL.values()) + [RIGHT, WRONG_ANSWER]
    out = acc(completions, solution=[GOLD] * len(completions))
    # The tower and the factorial are killed at 2 s (math-verify's own alarm would wait 5 s
    # per comparison); the 100k-character completion is still graded; "nested" falls back to
    # a string (sympy recursion) and "many_boxed" becomes the set {1}: both wrong. The two
    # ordinary completions are unaffected.
    assert dict(zip(list(ADVERSARIAL) + ["right", "wrong"], out)) == {
        "tower": 0.0,
        "factorial": 0.0,
        "long": 1.0,
        "nested": 0.0,
        "many_boxed": 0.0,
        "right": 1.0,
        "wrong": 0.0,
    }
    assert pool.num_timeouts - timeouts_before >= 2  # the tower and the factorial were killed
    workers = pool.pids
    pool.close()
    assert pool.pids == [] and not any(pid_alive(pid) for pid in workers)


def test_adversarial_cosine_is_a_wrong_answer_not_a_crash(kill_pool):
    cos = get_reward("cosine", max_len=100, pool=kill_pool)
    out = cos([_pad(ADVERSARIAL["tower"], 100), _pad(RIGHT, 100)], solution=[GOLD, GOLD])
    assert out == pytest.approx([-0.5, 0.5])
    workers = kill_pool.pids
    kill_pool.close()
    assert kill_pool.pids == [] and not any(pid_alive(pid) for pid in workers)


def test_inline_mode_uses_math_verify_alarms_in_the_main_thread(monkeypatch):
    armed = []
    real_alarm = signal.alarm

    def alarm(seconds):
        armed.append(seconds)
        return real_alarm(seconds)

    monkeypatch.setattr(signal, "alarm", alarm)
    acc = get_reward("accuracy", workers=0, parse_timeout_s=1, verify_timeout_s=1)
    # The unbounded computation is cut by math-verify's 1 s alarms (armed, then cleared with 0).
    assert acc([ADVERSARIAL["tower"]], solution=[GOLD]) == [0.0]
    assert armed and set(armed) == {1, 0}


def test_inline_verification_off_the_main_thread_is_right_or_refuses():
    # math-verify 0.5.2 (the pin) can only set its signal timeouts from the main thread; it
    # would then silently read nothing (accuracy 0.0). We refuse instead; 0.9 just works.
    import threading

    out = {}

    def run():
        try:
            out["r"] = get_reward("accuracy", workers=0)(["$\\boxed{1}$"], solution=["$1$"])
        except RuntimeError as e:
            out["r"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert out["r"] == [1.0] or "main thread" in out["r"], out


def test_no_timeout_is_accepted_by_every_pinned_math_verify():
    acc = get_reward("accuracy", workers=0, parse_timeout_s=None, verify_timeout_s=None)
    assert acc(["$\\boxed{\\frac{1}{2}}$", "$\\boxed{3}$"], solution=["$0.5$", "$4$"]) == [1.0, 0.0]
