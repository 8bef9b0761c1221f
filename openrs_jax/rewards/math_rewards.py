r"""Math-verification rewards: `accuracy`, `cosine` (Open-RS) and `cosine_tokens`.

Layer L0 (plain Python, never imports JAX). math-verify is imported lazily, inside the tasks,
so `import openrs_jax.rewards` stays cheap.

Semantics (knoveleng/open-rs `src/open_r1/rewards.py`, as it ran; read from its forks
ShuoZheLi/open-rs and colinpannikkat/open-rs, identical in these functions, with grpo.py and
the README of knoveleng/open-rs):
- gold = math-verify `parse(solution, extraction_mode="first_match",
  extraction_config=[LatexExtractionConfig()])`; if it is empty the example is skipped with
  reward 1.0 (both `accuracy` and `cosine`).
- answer = `parse(completion, extraction_config=[LatexExtractionConfig(normalization_config=
  NormalizationConfig(nits=False, malformed_operators=False, basic_latex=True, equations=True,
  boxed="all", units=True), boxed_match_priority=0, try_extract_without_anchor=False)],
  extraction_mode="first_match")`: boxed answers first, LaTeX only (no bare expressions).
- correct = `verify(answer, gold)`. Note the argument ORDER: Open-RS passes the parsed answer
  as math-verify's `gold` argument and the parsed gold as `target`. math-verify is not
  symmetric (assignment simplification, equation/interval conversion), so we keep it: the
  answer `1 < x < 2` against the gold `(1,2)` is correct in this order and wrong in the
  documented one, and the answer `(1,2)` against the gold `1<x<2` the other way round.
- `accuracy` = 1.0 if correct else 0.0; 0.0 if `verify` raises.
- `cosine`: L = len(completion) in characters, M = max_len, c = cos(pi L / M) with no clamp,
  r = lo + (hi - lo)(1 + c)/2 with (lo, hi) = (min_value_correct, max_value_correct) =
  (0.5, 1.0) if correct and (max_value_wrong, min_value_wrong) = (-0.5, 0.0) if wrong.
  So correct: 0.75 + 0.25c, wrong: -0.25 + 0.25c. Open-RS's defaults for the wrong pair are
  min_value_wrong=0.0 and max_value_wrong=-0.5 (grpo.py script arguments; exp 3 only sets
  `--cosine_max_len 3584`). The names are inverted on purpose: for a wrong answer the
  "min" value is the reward at L=0 and the "max" value the reward at L=M.

Measured with the installed math-verify 0.9 / latex2sympy2_extended 1.11: the MATH-500 gold
solutions scored against themselves are 492/500 correct; the 8 misses are non-braced forms
such as `\frac43`, `\frac 59`, `11\sqrt2` that `malformed_operators=False` refuses
(tests/rewards/test_math500.py lists them).

Departures from Open-RS (numbered):
1. Verification runs in a `VerifyPool` (worker processes, hard per-completion timeout that
   kills a stuck worker; see verify_pool.py). A completion that times out, or whose worker
   crashes, is scored like a `verify` exception: `accuracy` 0.0, `cosine` as a wrong answer.
   Open-RS ran math-verify inline with its 5 s signal timeouts only (those still apply inside
   each task, so the hard timeout, 10 s by default, is the backstop for code they cannot
   interrupt). Worst case a batch costs B x ~5 s / workers.
2. `cosine` uses `boxed="all"` like `accuracy`. Open-RS's cosine passed `boxed=True`. The
   field has been a string ("all"/"last"/"none") since latex2sympy2_extended 1.0.1; with the
   installed 1.11, True matches neither "all" nor "last", so the extracted text is not
   un-boxed and 271 of the 500 MATH-500 gold solutions then fail to match themselves
   (`\boxed{3}.` stays wrapped). We take "all" so that cosine's notion of correct equals
   accuracy's; `boxed="last"` is selectable.
3. `cosine` treats a `verify` exception as a wrong answer; Open-RS had no try/except there
   (math-verify catches its own errors by default, so this only matters for crashes).
4. `cosine_tokens` is not in Open-RS: open-r1's later variant with L = number of completion
   tokens (`completion_ids`), clamped to M, so long completions are never re-rewarded as the
   cosine cycles.
5. The gold column is configurable (`gold_column`, default "solution"); a missing gold
   (None) is an error naming the row, not a silent 1.0.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Callable, Literal, Sequence

from openrs_jax.rewards._common import column, completion_texts, token_lengths
from openrs_jax.rewards.verify_pool import VerifyPool, shared_pool

# Verdicts of one (completion, gold) judgement.
CORRECT = "correct"
WRONG = "wrong"
NO_GOLD = "no_gold"  # the gold did not parse: Open-RS skips the example with reward 1.0
FAILED = "failed"  # verify raised, timed out, or its worker crashed

BoxedMode = Literal["all", "last"]

_LOGGING_TAMED = False


class _ShortenFilter(logging.Filter):
    """math-verify logs the whole prediction on a timeout (100k characters for a runaway
    completion); latex2sympy2_extended warns on every call that `equations=True` is deprecated
    (Open-RS sets it, and it still changes normalisation, so we keep it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("equations=True in NormalizationConfig is deprecated"):
            return False
        if len(message) > 300:
            record.msg, record.args = message[:300] + " ...[truncated]", None
        return True


def tame_logging() -> None:
    """Shortens math-verify's log records (a failed parse logs the whole completion)."""
    global _LOGGING_TAMED
    if _LOGGING_TAMED:
        return
    for name in (
        "latex2sympy2_extended.math_normalization",
        "math_verify.parser",
        "math_verify.grader",
    ):
        logging.getLogger(name).addFilter(_ShortenFilter())
    _LOGGING_TAMED = True


def alarm_timeout(seconds: int | None) -> int | None:
    """math-verify's timeouts use signal.alarm, which raises outside the main thread: there
    we must pass None (no inner timeout) and rely on the pool's hard timeout."""
    if threading.current_thread() is threading.main_thread():
        return seconds
    return None


def judge(
    completion: str,
    solution: str,
    boxed: BoxedMode = "all",
    parse_timeout_s: int | None = 5,
    verify_timeout_s: int | None = 5,
) -> str:
    """One Open-RS judgement: CORRECT, WRONG, NO_GOLD or FAILED (see the module docstring).

    This is the task the verification workers run; it is a top-level function so that it
    pickles by reference.
    """
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    tame_logging()
    parse_timeout = alarm_timeout(parse_timeout_s)
    gold = parse(
        solution,
        extraction_mode="first_match",
        extraction_config=[LatexExtractionConfig()],
        parsing_timeout=parse_timeout,
    )
    if len(gold) == 0:
        return NO_GOLD
    answer = parse(
        completion,
        extraction_config=[
            LatexExtractionConfig(
                normalization_config=NormalizationConfig(
                    nits=False,
                    malformed_operators=False,
                    basic_latex=True,
                    equations=True,
                    boxed=boxed,
                    units=True,
                ),
                boxed_match_priority=0,
                try_extract_without_anchor=False,
            )
        ],
        extraction_mode="first_match",
        parsing_timeout=parse_timeout,
    )
    try:
        # Open-RS's order: the answer goes in math-verify's `gold` slot.
        correct = verify(answer, gold, timeout_seconds=alarm_timeout(verify_timeout_s))
    except Exception:  # noqa: BLE001 - Open-RS scores a verify exception as 0.0
        return FAILED
    return CORRECT if correct else WRONG


def warm_up() -> None:
    """Worker initializer: the first math-verify call builds its regexes and the ANTLR
    parser (~0.5 s); pay that before the worker reports ready, not inside a task's timeout."""
    judge("$\\boxed{1}$", "$1$")


def judge_batch(
    completions: Sequence[str],
    solutions: Sequence[str],
    pool: VerifyPool,
    boxed: BoxedMode = "all",
    parse_timeout_s: int | None = 5,
    verify_timeout_s: int | None = 5,
) -> list[str]:
    """B verdicts, computed in `pool`; a task that errs, times out or crashes is FAILED."""
    args = [
        (text, gold, boxed, parse_timeout_s, verify_timeout_s)
        for text, gold in zip(completions, solutions, strict=True)
    ]
    return [o.value if o.ok else FAILED for o in pool.map(judge, args)]


def cosine_scaled(
    length: float,
    correct: bool,
    max_len: float,
    min_value_wrong: float = 0.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
) -> float:
    """r = lo + (hi - lo)(1 + cos(pi L / M)) / 2, (lo, hi) = (min_value_correct,
    max_value_correct) if correct else (max_value_wrong, min_value_wrong). No clamp on L."""
    c = math.cos(math.pi * length / max_len)
    if correct:
        lo, hi = min_value_correct, max_value_correct
    else:
        lo, hi = max_value_wrong, min_value_wrong
    return float(lo + 0.5 * (hi - lo) * (1.0 + c))


def _resolve_pool(pool: VerifyPool | None, workers: int, timeout_s: float) -> VerifyPool:
    if pool is not None:
        return pool
    if workers == 0:
        return VerifyPool(0, timeout_s)
    return shared_pool(
        workers,
        timeout_s,
        preload=("math_verify", "latex2sympy2_extended", __name__),
        initializer=warm_up,
    )


def _golds(columns: dict[str, Any], gold_column: str, reward: str, size: int) -> list[str]:
    golds = column(columns, gold_column, reward, size)
    for i, gold in enumerate(golds):
        if not isinstance(gold, str):
            raise ValueError(
                f"reward {reward!r}: column {gold_column!r} row {i} is "
                f"{type(gold).__name__}, expected a string"
            )
    return golds


def _check_math_params(workers: int, timeout_s: float, boxed: str) -> None:
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if boxed not in ("all", "last"):
        raise ValueError(f"boxed must be 'all' or 'last', got {boxed!r}")


def make_accuracy(
    *,
    gold_column: str = "solution",
    boxed: BoxedMode = "all",
    workers: int = 2,
    timeout_s: float = 10.0,
    parse_timeout_s: int | None = 5,
    verify_timeout_s: int | None = 5,
    pool: VerifyPool | None = None,
) -> Callable[..., list[float]]:
    """`accuracy`: 1.0 correct, 0.0 wrong / failed / timed out, 1.0 if the gold does not parse.

    workers, timeout_s: the verification pool (shared by rewards with the same settings);
    workers=0 verifies inline. pool: an explicit VerifyPool (overrides workers/timeout_s).
    parse_timeout_s, verify_timeout_s: math-verify's own (signal) timeouts inside a task.
    """
    _check_math_params(workers, timeout_s, boxed)

    def accuracy(completions, **columns) -> list[float]:
        texts = completion_texts(completions)
        golds = _golds(columns, gold_column, "accuracy", len(texts))
        verdicts = judge_batch(
            texts, golds, _resolve_pool(pool, workers, timeout_s), boxed,
            parse_timeout_s, verify_timeout_s,
        )
        return [1.0 if v in (CORRECT, NO_GOLD) else 0.0 for v in verdicts]

    return accuracy


def _make_cosine(
    name: str,
    use_tokens: bool,
    max_len: int,
    min_value_wrong: float,
    max_value_wrong: float,
    min_value_correct: float,
    max_value_correct: float,
    gold_column: str,
    boxed: BoxedMode,
    workers: int,
    timeout_s: float,
    parse_timeout_s: int | None,
    verify_timeout_s: int | None,
    pool: VerifyPool | None,
) -> Callable[..., list[float]]:
    _check_math_params(workers, timeout_s, boxed)
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    values = dict(
        min_value_wrong=min_value_wrong,
        max_value_wrong=max_value_wrong,
        min_value_correct=min_value_correct,
        max_value_correct=max_value_correct,
    )

    def reward(completions, **columns) -> list[float]:
        texts = completion_texts(completions)
        golds = _golds(columns, gold_column, name, len(texts))
        if use_tokens:
            lengths = [min(n, max_len) for n in token_lengths(columns, name, len(texts))]
        else:
            lengths = [len(text) for text in texts]
        verdicts = judge_batch(
            texts, golds, _resolve_pool(pool, workers, timeout_s), boxed,
            parse_timeout_s, verify_timeout_s,
        )
        return [
            1.0 if v == NO_GOLD else cosine_scaled(length, v == CORRECT, max_len, **values)
            for v, length in zip(verdicts, lengths)
        ]

    reward.__name__ = reward.__qualname__ = name
    return reward


def make_cosine(
    *,
    max_len: int = 3584,
    min_value_wrong: float = 0.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    gold_column: str = "solution",
    boxed: BoxedMode = "all",
    workers: int = 2,
    timeout_s: float = 10.0,
    parse_timeout_s: int | None = 5,
    verify_timeout_s: int | None = 5,
    pool: VerifyPool | None = None,
) -> Callable[..., list[float]]:
    """`cosine` (Open-RS exp 3): L in characters, c = cos(pi L / max_len), no clamp.

    Correct: 0.75 + 0.25c (1.0 at L=0, 0.5 at L=M, 1.0 again at L=2M); wrong: -0.25 + 0.25c
    (0.0, -0.5, 0.0); 1.0 if the gold does not parse. max_len=3584 is exp 3's cosine_max_len.
    """
    return _make_cosine(
        "cosine", False, max_len, min_value_wrong, max_value_wrong, min_value_correct,
        max_value_correct, gold_column, boxed, workers, timeout_s, parse_timeout_s,
        verify_timeout_s, pool,
    )


def make_cosine_tokens(
    *,
    max_len: int = 3584,
    min_value_wrong: float = 0.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    gold_column: str = "solution",
    boxed: BoxedMode = "all",
    workers: int = 2,
    timeout_s: float = 10.0,
    parse_timeout_s: int | None = 5,
    verify_timeout_s: int | None = 5,
    pool: VerifyPool | None = None,
) -> Callable[..., list[float]]:
    """`cosine_tokens`: as `cosine` with L = min(len(completion_ids[b]), max_len) tokens.

    Needs the `completion_ids` column (list of B token-id lists, padding removed).
    """
    return _make_cosine(
        "cosine_tokens", True, max_len, min_value_wrong, max_value_wrong, min_value_correct,
        max_value_correct, gold_column, boxed, workers, timeout_s, parse_timeout_s,
        verify_timeout_s, pool,
    )
