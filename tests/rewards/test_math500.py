"""Real data: MATH-500 gold solutions graded by `accuracy` (Open-RS parse settings).

Self-consistency: each gold solution, used as the completion, against itself. 492 of 500
match; the 8 misses are non-braced LaTeX (`\\frac43`, `\\frac 59`, `11\\sqrt2`, ...) in the
solution's `\\boxed{}`, which the answer parser refuses because Open-RS sets
`malformed_operators=False` (the gold parser, with default settings, repairs them). The exact
ids are pinned so that a math-verify / latex2sympy upgrade that changes them is noticed.

Discrimination: problem i's solution against problem i+1's gold. 3 of 500 "match", and all
three are genuine coincidences of equal final answers (5 / x=5, 7 / 7, 3 / 3).
"""

from __future__ import annotations

import json

import pytest

from openrs_jax.rewards import VerifyPool, get_reward, math_rewards

SELF_MISSES = {
    "test/prealgebra/1302.json": "11\\sqrt2",
    "test/intermediate_algebra/515.json": "\\frac43",
    "test/intermediate_algebra/1410.json": "\\frac65",
    "test/prealgebra/1003.json": "\\frac{270}7\\text{ degrees}",
    "test/prealgebra/153.json": "\\frac 59",
    "test/algebra/2257.json": "\\frac9{19}",
    "test/counting_and_probability/14.json": "\\frac14",
    "test/algebra/518.json": "\\frac 34",
}

# Pairs (i, i+1) whose final answers coincide: id of problem i -> (answer i, answer i+1).
SHIFTED_MATCHES = {
    "test/algebra/1837.json": ("5", "x=5"),
    "test/number_theory/978.json": ("7", "7"),
    "test/number_theory/928.json": ("3", "3"),
}


@pytest.fixture(scope="module")
def math500(shared_data):
    with open(shared_data / "math500.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 500
    return rows


@pytest.fixture(scope="module")
def accuracy():
    with VerifyPool(
        2, 10.0, preload=("math_verify", "latex2sympy2_extended"), initializer=math_rewards.warm_up
    ) as pool:
        yield get_reward("accuracy", pool=pool)


def test_gold_solutions_match_themselves(math500, accuracy):
    solutions = [row["solution"] for row in math500]
    scores = accuracy(solutions, solution=solutions)
    misses = {row["id"]: row["answer"] for row, s in zip(math500, scores) if s != 1.0}
    assert misses == SELF_MISSES
    assert sum(scores) / len(scores) >= 0.98
    assert set(scores) == {0.0, 1.0}


def test_a_different_problems_solution_does_not_match(math500, accuracy):
    solutions = [row["solution"] for row in math500]
    shifted = solutions[1:] + solutions[:1]
    scores = accuracy(shifted, solution=solutions)
    matches = {
        row["id"]: (row["answer"], math500[(i + 1) % 500]["answer"])
        for i, (row, s) in enumerate(zip(math500, scores))
        if s != 0.0
    }
    assert matches == SHIFTED_MATCHES
    assert sum(scores) / len(scores) <= 0.01
