r"""Grading benchmark completions as lighteval graded them for Open-RS (layer L0, no JAX).

Open-RS evaluated with lighteval's `multilingual_extractive_match_metric` (knoveleng/open-rs
`src/open_r1/evaluate.py`, the same as open-r1's): two metrics that differ only in how the
gold is read,

    latex_gold_metric: gold = parse(gold, [LatexExtractionConfig()])   MATH-500, Minerva, OlympiadBench
    expr_gold_metric:  gold = parse(gold, [ExprExtractionConfig()])    AIME24, AMC23

and one way of reading the prediction (the decoded completion):

    pred = parse(completion, [ExprExtractionConfig(), LatexExtractionConfig(boxed_match_priority=0)],
                 fallback_mode="first_match", extraction_mode="any_match")

with `precision=5` (math-verify's `float_rounding`) and 5 s timeouts. correct = math-verify
`verify(gold, pred, float_rounding=5)`: gold first, as lighteval calls it (the Open-RS
*reward* passes them the other way round; see rewards/math_rewards.py). If the gold yields
nothing, lighteval compares the raw gold string instead; we do the same.

Departures from lighteval (numbered):
1. A gold to be read as LaTeX that has no math delimiter at all (`$`, `\(`, `\[`, `\boxed`)
   is wrapped in `$…$` first. Our offline OlympiadBench answers had their `$…$` stripped
   (../shared/data/README.md); without the wrap math-verify's LaTeX extraction finds nothing
   in a bare `2` and only 13% of boxed gold answers grade correct. The hub copy Open-RS used
   keeps its delimiters, so the wrap changes nothing there.
2. Grading runs in a `VerifyPool` (worker processes with a hard per-task timeout; see
   rewards/verify_pool.py). A task that times out or crashes is graded wrong and recorded
   with `error` set; lighteval would have waited.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from openrs_jax.eval.benchmarks import GoldMode
from openrs_jax.rewards.math_rewards import alarm_timeout, float_rounding_kwargs, tame_logging
from openrs_jax.rewards.verify_pool import VerifyPool, shared_pool

GOLD_MODES = ("latex", "expr")

PRECISION = 5  # lighteval's `precision` = math-verify's `float_rounding`
TIMEOUT_S = 5  # lighteval's `timeout_seconds` (per parse / per comparison)

# Any of these means the gold already says where its LaTeX is.
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed")


@dataclasses.dataclass(frozen=True)
class Grade:
    """One graded completion. `extracted`: the prediction math-verify read (its text form),
    None if nothing was extracted; `gold_extracted`: likewise for the gold; `error`: why the
    task failed (timeout, crash), else None."""

    correct: bool
    extracted: str | None
    gold_extracted: str | None
    error: str | None = None


def prepare_gold(gold: str, mode: GoldMode) -> str:
    """The gold text handed to math-verify: bare LaTeX golds wrapped in `$…$` (departure 1)."""
    if mode not in GOLD_MODES:
        raise ValueError(f"gold mode must be one of {GOLD_MODES}, got {mode!r}")
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"gold must be a non-empty string, got {gold!r}")
    if mode == "latex" and not _DELIMITED.search(gold):
        return f"${gold.strip()}$"
    return gold


def _as_text(parsed: list) -> str | None:
    """math-verify returns [sympy object, matched string]; the string is what a reader wants."""
    if not parsed:
        return None
    return str(parsed[-1]) if isinstance(parsed[-1], str) else str(parsed[0])


def grade(completion: str, gold: str, mode: GoldMode) -> tuple[bool, str | None, str | None]:
    """lighteval's extractive match for one (completion, gold): (correct, pred text, gold text).

    A top-level function of plain values so that `VerifyPool` workers can run it.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    tame_logging()
    timeout = alarm_timeout(TIMEOUT_S)
    gold_config = [LatexExtractionConfig()] if mode == "latex" else [ExprExtractionConfig()]
    gold_text = prepare_gold(gold, mode)
    golds: list[Any] = parse(gold_text, gold_config, fallback_mode="first_match", extraction_mode="any_match",
                             parsing_timeout=timeout)  # pyright: ignore[reportArgumentType]  # None: math-verify 0.9 only, which takes it
    if not golds:
        golds = [gold_text]  # lighteval: compare against the raw gold string
    preds = parse(
        completion,
        [ExprExtractionConfig(), LatexExtractionConfig(boxed_match_priority=0)],
        fallback_mode="first_match",
        extraction_mode="any_match",
        parsing_timeout=timeout,  # pyright: ignore[reportArgumentType]  # None: math-verify 0.9 only, which takes it
    )
    correct = bool(preds) and verify(golds, preds, timeout_seconds=timeout,  # pyright: ignore[reportArgumentType]  # None: math-verify 0.9 only, which takes it
                                     **float_rounding_kwargs(PRECISION))
    return bool(correct), _as_text(preds), _as_text(golds)


def warm_up() -> None:
    """Worker initializer: build math-verify's regexes and parser before the first task."""
    grade("$\\boxed{1}$", "1", "expr")
    grade("$\\boxed{1}$", "$1$", "latex")


def grading_pool(workers: int = 2, timeout_s: float = 20.0) -> VerifyPool:
    """The process-wide pool for grading (created lazily; `workers=0` grades inline).

    timeout_s: hard limit per completion. lighteval allows 5 s per parse and per comparison,
    so a legitimate task can take ~15 s; the default leaves room for that.
    """
    if workers == 0:
        return VerifyPool(0, timeout_s)
    return shared_pool(
        workers, timeout_s, preload=("math_verify", "latex2sympy2_extended", __name__), initializer=warm_up
    )


def grade_batch(
    completions: Sequence[str], golds: Sequence[str], modes: Sequence[GoldMode], pool: VerifyPool
) -> list[Grade]:
    """B grades, computed in `pool`, in input order. A failed task is a wrong answer with
    `error` set (departure 2)."""
    if not len(completions) == len(golds) == len(modes):
        raise ValueError(f"grade_batch: {len(completions)} completions, {len(golds)} golds, {len(modes)} modes")
    for mode in set(modes):
        if mode not in GOLD_MODES:
            raise ValueError(f"gold mode must be one of {GOLD_MODES}, got {mode!r}")
    outcomes = pool.map(grade, list(zip(completions, golds, modes)))
    grades = []
    for outcome in outcomes:
        if outcome.ok:
            correct, extracted, gold_extracted = outcome.value
            grades.append(Grade(correct, extracted, gold_extracted))
        else:
            grades.append(Grade(False, None, None, error=f"{outcome.status}: {outcome.error}"))
    return grades
