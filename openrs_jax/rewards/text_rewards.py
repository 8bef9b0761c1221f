r"""Rewards on the completion text or its length: `format`, `tag_count`, `repetition_penalty`,
`soft_overlong`, `exact_match`, `language`.

Layer L0 (plain Python, never imports JAX). Every factory returns a function with TRL's
signature `f(completions, **columns) -> list[float]` (B completions in, B rewards out).
Completions are decoded with special tokens skipped, so they start inside the think block
(the prompt ends with `<think>\n`).

Sources:
- `format`: knoveleng/open-rs `src/open_r1/rewards.py` `format_reward`, as it ran: only the
  closing tag is counted, because `<think>` is in the prompt:
  1.0 if text.count("\n</think>\n") == 1 else 0.0. (open-r1's own format reward is the regex
  `^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$`; Open-RS replaced it.)
- `tag_count`: huggingface/open-r1 `tag_count_reward`: +0.25 each when "<think>\n",
  "\n</think>\n", "\n<answer>\n" and "\n</answer>" each occur exactly once. (Open-RS's copy
  scores only the two think tags, 0.5 each; no Open-RS recipe uses it.)
- `repetition_penalty`: open-r1 `get_repetition_penalty_reward` (Appendix C.2 of
  arXiv 2502.03373): words = text.lower().split(); r = (1 - #distinct n-grams / #n-grams) *
  max_penalty; 0.0 for an empty text or fewer than n words.
- `soft_overlong`: DAPO (arXiv 2503.14476) / TRL `get_soft_overlong_punishment`, on the token
  length L: 0 if L <= max_len - cache; (max_len - cache - L) / cache if L <= max_len; else -1.

Ours (not in Open-RS):
1. `exact_match`: the answer after the think block, stripped, equals the `answer` column.
   For the CPU quickstart task, whose tiny model cannot write LaTeX.
2. `language`: penalises non-Latin script (the paper's language drift, its open question 2).
   Open-RS only asks for English in the exp-3 system prompt (a commented-out `english_reward`
   in its rewards.py used langdetect; it never ran).
"""

from __future__ import annotations

import re
from typing import Callable

from openrs_jax.rewards._common import column, completion_texts, token_lengths

THINK_CLOSE = "</think>"


def make_format() -> Callable[..., list[float]]:
    r"""`format`: 1.0 if the completion contains "\n</think>\n" exactly once, else 0.0."""

    def format(completions, **columns) -> list[float]:  # noqa: A001 - the registry name
        return [1.0 if t.count("\n</think>\n") == 1 else 0.0 for t in completion_texts(completions)]

    return format


def make_tag_count() -> Callable[..., list[float]]:
    r"""`tag_count`: 0.25 for each of "<think>\n", "\n</think>\n", "\n<answer>\n",
    "\n</answer>" that occurs exactly once (so 0.0 to 1.0; at most 0.75 when the prompt
    already holds `<think>`)."""
    tags = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")

    def tag_count(completions, **columns) -> list[float]:
        return [
            sum(0.25 for tag in tags if text.count(tag) == 1)
            for text in completion_texts(completions)
        ]

    return tag_count


def repetition_score(text: str, ngram_size: int, max_penalty: float) -> float:
    """(1 - distinct/total word n-grams) * max_penalty; 0.0 if fewer than n words."""
    words = text.lower().split()
    if len(words) < ngram_size:
        return 0.0
    ngrams = list(zip(*[words[i:] for i in range(ngram_size)]))
    return (1.0 - len(set(ngrams)) / len(ngrams)) * max_penalty


def make_repetition_penalty(
    *, ngram_size: int = 3, max_penalty: float = -1.0
) -> Callable[..., list[float]]:
    """`repetition_penalty`: open-r1's n-gram penalty, in [max_penalty, 0]."""
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0, got {max_penalty}")

    def repetition_penalty(completions, **columns) -> list[float]:
        return [
            repetition_score(text, ngram_size, max_penalty)
            for text in completion_texts(completions)
        ]

    return repetition_penalty


def overlong_penalty(length: int, max_len: int, cache: int) -> float:
    """DAPO soft overlong punishment of a completion of `length` tokens:
    0 if L <= max_len - cache; (max_len - cache - L) / cache if max_len - cache < L <= max_len;
    -1 if L > max_len."""
    if length <= max_len - cache:
        return 0.0
    if length <= max_len:
        return (max_len - cache - length) / cache
    return -1.0


def make_soft_overlong(*, max_len: int = 3584, cache: int = 512) -> Callable[..., list[float]]:
    """`soft_overlong`: DAPO's length penalty on the token count (`completion_ids` column).

    max_len: the longest completion without the hard -1 (the rollout's max_new_tokens, so
    the -1 branch only fires for ids longer than the budget); cache: width of the linear ramp.
    """
    if not 0 < cache <= max_len:
        raise ValueError(f"need 0 < cache <= max_len, got cache={cache}, max_len={max_len}")

    def soft_overlong(completions, **columns) -> list[float]:
        size = len(completions)
        return [
            overlong_penalty(n, max_len, cache)
            for n in token_lengths(columns, "soft_overlong", size)
        ]

    return soft_overlong


def final_answer_text(text: str) -> str:
    """The text after the last `</think>` (the whole text if there is none), stripped."""
    head, sep, tail = text.rpartition(THINK_CLOSE)
    return (tail if sep else text).strip()


def make_exact_match(*, answer_column: str = "answer") -> Callable[..., list[float]]:
    """`exact_match`: 1.0 if `final_answer_text(completion) == answer.strip()`, else 0.0.

    The completion starts inside the think block, so removing the think block means dropping
    everything up to and including the last `</think>`.
    """

    def exact_match(completions, **columns) -> list[float]:
        texts = completion_texts(completions)
        answers = column(columns, answer_column, "exact_match", len(texts))
        return [
            1.0 if final_answer_text(text) == str(answer).strip() else 0.0
            for text, answer in zip(texts, answers)
        ]

    return exact_match


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last decimal number in `text` (thousands separators "," removed), or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def make_last_number(*, answer_column: str = "answer") -> Callable[..., list[float]]:
    """`last_number`: 1.0 if the last number in the completion equals `answer` as a number
    ("12", "12.0"), else 0.0. For short-answer arithmetic: the model may explain, but the last
    number it writes is its answer, and a completion cut off before it scores 0."""

    def _equal(got: str | None, want: str) -> bool:
        if got is None:
            return False
        try:
            return float(got) == float(want)
        except ValueError:
            return False

    def last_number(completions, **columns) -> list[float]:
        texts = completion_texts(completions)
        answers = column(columns, answer_column, "last_number", len(texts))
        return [1.0 if _equal(final_number(t), str(a).strip()) else 0.0 for t, a in zip(texts, answers)]

    return last_number


# LaTeX math regions and command names are not prose: drop them before counting letters.
# The lazy spans are bounded (4000 characters) so that a runaway completion full of unmatched
# `\(` cannot make the scan quadratic. Text inside `\text{...}` stays prose.
_LATEX_MATH = re.compile(
    r"\$\$.{0,4000}?\$\$|\$[^$]*\$|\\\(.{0,4000}?\\\)|\\\[.{0,4000}?\\\]"
    r"|\\begin\{(\w+\*?)\}.{0,4000}?\\end\{\1\}",
    re.DOTALL,
)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")


def _is_latin_or_math_letter(code: int) -> bool:
    """Letters we accept in English mathematical prose."""
    return (
        code < 0x0250  # Basic Latin, Latin-1 Supplement, Latin Extended-A/B (café, naïve, Erdős)
        or 0x0370 <= code <= 0x03FF  # Greek: alpha, pi, theta are math symbols in prose
        or 0x1E00 <= code <= 0x1EFF  # Latin Extended Additional
        or 0x2100 <= code <= 0x214F  # Letterlike symbols: ℝ, ℕ, ℓ
        or 0x1D400 <= code <= 0x1D7FF  # Mathematical alphanumeric symbols: 𝑥, 𝐀
    )


def foreign_letter_fraction(text: str) -> float:
    """Fraction of letters outside Latin/Greek/math alphabets, after removing LaTeX.

    Steps: delete math regions ($...$, $$...$$, \\(...\\), \\[...\\], \\begin{env}...\\end{env})
    and LaTeX commands (\\frac, \\text, ...); letters = characters with str.isalpha() (so
    digits, punctuation, operators and whitespace never count); foreign = letters outside
    `_is_latin_or_math_letter` (CJK, Cyrillic, Arabic, Thai, Hangul, ...).
    Returns 0.0 when no letter is left (pure math is not a language problem).
    """
    prose = _LATEX_COMMAND.sub(" ", _LATEX_MATH.sub(" ", text))
    letters = foreign = 0
    for ch in prose:
        if ch.isalpha():
            letters += 1
            if not _is_latin_or_math_letter(ord(ch)):
                foreign += 1
    return foreign / letters if letters else 0.0


def make_language(*, threshold: float | None = None) -> Callable[..., list[float]]:
    """`language`: discourages language drift (the paper's open question 2).

    Default (threshold=None): r = 1 - f, f = `foreign_letter_fraction(completion)` in [0, 1].
    With a threshold: r = 1.0 if f <= threshold else 0.0.

    Why letters and scripts, not a language detector: it is deterministic, needs no model or
    package, is cheap for 72 completions x 3584 tokens, and catches the drift seen in R1-distill
    models (Chinese mid-reasoning). It does not catch drift into another Latin-script
    language (French, Vietnamese) or into Greek prose; it is a per-character measure, so a
    few CJK characters (about 2 letters' worth of English each) weigh less than their meaning.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1] or None, got {threshold}")

    def language(completions, **columns) -> list[float]:
        fractions = [foreign_letter_fraction(text) for text in completion_texts(completions)]
        if threshold is None:
            return [1.0 - f for f in fractions]
        return [1.0 if f <= threshold else 0.0 for f in fractions]

    return language
