"""Text and length rewards on hand-written completions: every branch."""

from __future__ import annotations

import math
import time

import pytest

from openrs_jax.rewards import final_answer_text, foreign_letter_fraction, get_reward

# Completions start inside the think block: the prompt ends with "<think>\n".
GOOD = "Let me think.\n</think>\nThe answer is $\\boxed{2}$."


def test_format_counts_the_closing_tag_exactly_once():
    fmt = get_reward("format")
    completions = [
        GOOD,
        "no closing tag at all",
        "a\n</think>\nb\n</think>\nc",  # twice
        "a</think>\nb",  # no newline before
        "a\n</think>",  # no newline after (truncated right at the tag)
        "<think>\na\n</think>\n",  # an extra opening tag does not matter
        "",
    ]
    assert fmt(completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_format_accepts_trl_conversational_completions():
    fmt = get_reward("format")
    assert fmt([[{"role": "assistant", "content": GOOD}], {"content": "x"}]) == [1.0, 0.0]
    with pytest.raises(TypeError, match="completion 0 is a int"):
        fmt([3])


def test_tag_count_scores_a_quarter_per_tag():
    tag_count = get_reward("tag_count")
    full = "<think>\nreason\n</think>\n<answer>\n42\n</answer>"
    assert tag_count(
        [
            full,
            GOOD,  # only the closing think tag
            "reason\n</think>\n<answer>\n42\n</answer>",  # our prompts hold <think>: max 0.75
            full + full,  # every tag twice
            "nothing",
        ]
    ) == [1.0, 0.25, 0.75, 0.0, 0.0]


def test_repetition_penalty():
    rep = get_reward("repetition_penalty", ngram_size=3, max_penalty=-1.0)
    # "a b a b a b": 3-grams (a b a) (b a b) (a b a) (b a b) -> 2 distinct of 4 -> -0.5.
    assert rep(["a b a b a b", "A B a b A b", "one two three four", "one two", ""]) == [
        -0.5,
        -0.5,  # lower-cased before counting
        0.0,
        0.0,  # fewer words than n
        0.0,
    ]
    assert get_reward("repetition_penalty", ngram_size=1, max_penalty=-2.0)(["x x x x"]) == [-1.5]
    with pytest.raises(ValueError, match="max_penalty"):
        get_reward("repetition_penalty", max_penalty=0.5)
    with pytest.raises(ValueError, match="ngram_size"):
        get_reward("repetition_penalty", ngram_size=0)


def test_soft_overlong_on_token_lengths():
    fn = get_reward("soft_overlong", max_len=100, cache=20)
    lengths = [0, 80, 81, 90, 100, 101, 500]
    ids = [[7] * n for n in lengths]
    assert fn(["x"] * len(ids), completion_ids=ids) == [0.0, 0.0, -0.05, -0.5, -1.0, -1.0, -1.0]
    with pytest.raises(KeyError, match="needs the column 'completion_ids'"):
        fn(["x"])
    with pytest.raises(ValueError, match="cache"):
        get_reward("soft_overlong", max_len=10, cache=11)


def test_exact_match_after_the_think_block():
    fn = get_reward("exact_match")
    completions = [
        "count: 1 2 3\n</think>\n 42 \n",
        "count\n</think>\n42 is it",
        "42",  # no think block: the whole text is the answer
        "a</think>b</think> 42",  # everything up to the last </think> is thinking
        "41\n</think>\n",
    ]
    assert fn(completions, answer=["42", "42", "42 ", "42", "41"]) == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert final_answer_text("x</think>\n y \n") == "y"
    with pytest.raises(ValueError, match="column 'answer' has 1 rows, but there are 2"):
        fn(["a", "b"], answer=["a"])


ENGLISH = (
    "First, we compute the discriminant. Since it is positive, there are two real roots, "
    "so the answer is 2."
)
CHINESE = "首先，我们计算判别式。因为它是正数，所以有两个实数根，答案是2。"
LATEX_ENGLISH = (
    r"We have $\frac{\alpha + \beta}{2} = \sqrt{\pi}$ and \[ \int_0^1 x^2 \, dx = \frac13 \]"
    r" so \(\theta = \frac{\pi}{4}\). \begin{align} a &= b \\ c &= d \end{align} Hence "
    r"$\boxed{\frac{1}{3}}$; with Greek in prose: α + β = π, and ℝ, 𝑥, café, Erdős."
)


def test_language_reward_on_english_chinese_mixed_and_latex():
    lang = get_reward("language")
    mixed = ENGLISH + " " + CHINESE
    out = lang([ENGLISH, CHINESE, mixed, LATEX_ENGLISH, "$1+1=2$", ""])
    assert out[0] == 1.0
    assert out[1] == 0.0
    # Letters only: the CJK share of all letters in `mixed`.
    cjk = sum(1 for ch in CHINESE if ch.isalpha())
    latin = sum(1 for ch in ENGLISH if ch.isalpha())
    assert math.isclose(out[2], 1.0 - cjk / (cjk + latin))
    assert 0.0 < out[2] < 1.0
    assert out[3] == 1.0  # LaTeX-heavy English with Greek, math letters and accents
    assert out[4:] == [1.0, 1.0]  # no letters outside math: nothing to penalise


def test_language_threshold_variant():
    lang = get_reward("language", threshold=0.1)
    one_cjk_word = ENGLISH + " 答案"  # 2 foreign letters among ~90
    assert foreign_letter_fraction(one_cjk_word) < 0.1
    assert lang([ENGLISH, one_cjk_word, CHINESE, ENGLISH + " " + CHINESE]) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="threshold"):
        get_reward("language", threshold=1.5)


def test_language_counts_cyrillic_and_text_inside_latex_text_commands():
    assert foreign_letter_fraction("Привет") == 1.0
    # \text{...} is prose: its argument counts, the command name does not.
    assert foreign_letter_fraction(r"\text{答案}") == 1.0
    assert foreign_letter_fraction(r"\textbf{answer}") == 0.0


def _cpu_seconds(fn, arg, repeats: int = 2):
    """(least CPU seconds of this process over `repeats` calls, the last result): other
    processes' load does not count."""
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        out = fn(arg)
        best = min(best, time.process_time() - start)
    return best, out


@pytest.mark.parametrize("unit,reward", [(r"\(", 1.0), ("$", 1.0), (r"\begin{x}", 1.0), ("好", 0.0)])
def test_language_is_linear_on_runaway_completions(unit, reward):
    # Unclosed math openers are the backtracking risk: each one starts a scan for its closer.
    # Four times the text must cost about four times the CPU (5x here, as the texts are 2 and
    # 8 times the math regex's 4,000-character window; a quadratic scan costs 16x).
    lang = get_reward("language")
    small, large = unit * (8_000 // len(unit) + 1), unit * (32_000 // len(unit) + 1)
    t_small, _ = _cpu_seconds(lang, [small])
    t_large, out = _cpu_seconds(lang, [large])
    assert out == [reward]
    assert t_large / max(t_small, 1e-4) < 8.0, (t_small, t_large)
