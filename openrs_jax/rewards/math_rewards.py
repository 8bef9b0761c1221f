r"""Math-verification rewards: `accuracy`, `cosine` (Open-RS) and `cosine_tokens`.

Layer L0 (plain Python, never imports JAX). math-verify is imported lazily, inside the tasks,
so `import openrs_jax.rewards` stays cheap.

Semantics (knoveleng/open-rs `src/open_r1/rewards.py` at 2889c47, as it ran, with its pinned
math-verify 0.5.2 and the latex2sympy2_extended 1.0.6 that version pins; pyproject.toml pins
the same):
- gold = math-verify `parse(solution, extraction_mode="first_match",
  extraction_config=[LatexExtractionConfig()])`; if it is empty the example is skipped with
  reward 1.0 (both `accuracy` and `cosine`).
- answer = `parse(completion, extraction_config=[LatexExtractionConfig(normalization_config=
  NormalizationConfig(nits=False, malformed_operators=False, basic_latex=True, equations=True,
  boxed=B, units=True), boxed_match_priority=0, try_extract_without_anchor=False)],
  extraction_mode="first_match")`: boxed answers first, LaTeX only (no bare expressions).
  `accuracy` passed B = "all"; `cosine` passed B = True, which latex2sympy2_extended does not
  recognise (it un-boxes only for "all" and "last"), so the extracted `\boxed{...}` is not
  unwrapped: that is our `boxed="none"` (departure 2).
- correct = `verify(answer, gold)`. Note the argument ORDER: Open-RS passes the parsed answer
  as math-verify's `gold` argument and the parsed gold as `target`. math-verify is not
  symmetric (assignment simplification, equation/interval conversion), so we keep it: the
  answer `1 < x < 2` against the gold `(1,2)` is correct in this order and wrong in the
  documented one, and the answer `(1,2)` against the gold `1<x<2` the other way round.
- Open-RS left math-verify's timeouts at their defaults, 3 s per parse and per comparison in
  0.5.2 (signal alarms); so do our defaults (`parse_timeout_s`, `verify_timeout_s`).
- `accuracy` = 1.0 if correct else 0.0; 0.0 if `verify` raises.
- `cosine`: L = len(completion) in characters, M = max_len, c = cos((L / M) pi) with no clamp
  (in that floating-point order), r = lo + (hi - lo)(1 + c)/2 with (lo, hi) =
  (min_value_correct, max_value_correct) = (0.5, 1.0) if correct and (max_value_wrong,
  min_value_wrong) = (-0.5, 0.0) if wrong. So correct: 0.75 + 0.25c, wrong: -0.25 + 0.25c.
  Open-RS's defaults for the wrong pair are min_value_wrong=0.0 and max_value_wrong=-0.5
  (grpo.py script arguments; exp 3 only sets `--cosine_max_len 3584`). The names are inverted
  on purpose: for a wrong answer the "min" value is the reward at L=0 and the "max" value the
  reward at L=M.

Checked case for case against Open-RS's own code: tests/golden/make_reward_golden.py runs its
rewards.py (in a throwaway venv with math-verify 0.5.2) on 9,062 cases built from the five
benchmarks (gold solutions against themselves, right, wrong and unboxed answers, with and
without the think tag, padded to 0-2.6 M characters), and tests/rewards/test_openrs_golden.py
asserts that `format`, `accuracy`, `cosine` with `boxed="none"` and `repetition_penalty`
reproduce every value, floats bit for bit. With math-verify 0.9.0 instead of 0.5.2, Open-RS's
own code grades 45 `accuracy` and 61 `cosine` cases of the 8,709 both runs kept differently (a
second golden file; our rewards reproduce that one too). The 0.5.2 values were made with sympy
1.13.1 (torch 2.5.1's pin, as the run had); ours match them under sympy 1.14.

Measured on MATH-500 (gold solutions scored against themselves, math-verify 0.5.2): `accuracy`
492/500 correct; the 8 misses are non-braced forms such as `\frac43`, `\frac 59`, `11\sqrt2`
that `malformed_operators=False` refuses (tests/rewards/test_math500.py lists them). The
as-ran cosine (`boxed="none"`) calls 229/500 correct.

Departures from Open-RS (numbered):
1. Verification runs in a `VerifyPool` (worker processes, hard per-completion timeout that
   kills a stuck worker; see verify_pool.py). A completion that times out, or whose worker
   crashes, is scored like a `verify` exception: `accuracy` 0.0, `cosine` as a wrong answer.
   Open-RS ran math-verify inline with its signal timeouts only (those still apply inside
   each task, so the hard timeout, 10 s by default, is the backstop for code they cannot
   interrupt). Worst case a batch costs B x ~3 s / workers.
2. `cosine`'s `boxed` defaults to "all", like `accuracy`, so that cosine's notion of correct
   equals accuracy's. Open-RS's cosine passed `boxed=True` (see above), which un-boxes
   nothing: `\boxed{3}.` stays wrapped and often fails to parse or match, and its verdict
   contradicts its own accuracy reward (229 against 492 of the MATH-500 gold solutions).
   `boxed="none"` reproduces it exactly, and the `openrs3` recipe, which reproduces the
   paper's experiment 3, sets it; `configs/openrs3_intended.yaml` is the same recipe with
   "all". `boxed="last"` is also selectable.
3. `cosine` treats a `verify` exception as a wrong answer; Open-RS had no try/except there
   (math-verify catches its own errors by default, so this only matters for crashes).
4. `cosine_tokens` is not in Open-RS: open-r1's later variant with L = number of completion
   tokens (`completion_ids`), clamped to M, so long completions are never re-rewarded as the
   cosine cycles.
5. The gold column is configurable (`gold_column`, default "solution"); a missing gold
   (None) is an error naming the row, not a silent 1.0.
"""

from __future__ import annotations

import functools
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

# How the answer parser un-boxes `\boxed{...}` while normalising (latex2sympy2_extended's
# NormalizationConfig.boxed): "all" (Open-RS's accuracy), "last", or "none" (nothing is
# un-boxed: what Open-RS's cosine did by passing boxed=True; see departure 2).
BoxedMode = Literal["all", "last", "none"]
BOXED_MODES = ("all", "last", "none")

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


@functools.cache
def _timeout_none_supported() -> bool:
    """Whether math-verify's `timeout(None)` runs without signals (0.9 does; 0.5.2 always
    installs a SIGALRM handler, which only the main thread may do)."""
    from math_verify.utils import timeout

    try:  # 0.5.2: signal.alarm(None) raises TypeError (off the main thread, signal.signal fails)
        return bool(timeout(None)(lambda: True)())  # pyright: ignore[reportArgumentType]  # the probe
    except Exception:  # noqa: BLE001
        return False


def alarm_timeout(seconds: int | None) -> int | None:
    """The timeout to hand math-verify: `seconds` in the main thread (None: no timeout, passed
    as 0, which both 0.5.2 and 0.9 read as "no alarm"; 0.5.2 fails on None).

    math-verify's timeouts use signal.alarm, which only the main thread may arm. Elsewhere
    0.9 takes None (no inner timeout; the pool's hard timeout still applies), but 0.5.2 sets a
    signal handler whatever it is given, fails, and would silently score the answer as
    unparsed: we raise instead.
    """
    if threading.current_thread() is threading.main_thread():
        return 0 if seconds is None else seconds
    if _timeout_none_supported():
        return None
    import importlib.metadata

    raise RuntimeError(
        f"math-verify {importlib.metadata.version('math-verify')} can only run in the main thread "
        "(it installs signal handlers); verify in worker processes (workers >= 1)"
    )


@functools.cache
def float_rounding_kwargs(digits: int) -> dict[str, Any]:
    """math-verify `verify`'s rounding of floats to `digits` places: the argument is
    `float_rounding` in 0.9 and `precision` in 0.5.2 (the pinned version)."""
    import inspect

    from math_verify import verify

    name = "float_rounding" if "float_rounding" in inspect.signature(verify).parameters else "precision"
    return {name: digits}


def judge(
    completion: str,
    solution: str,
    boxed: BoxedMode = "all",
    parse_timeout_s: int | None = 3,
    verify_timeout_s: int | None = 3,
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
        parsing_timeout=parse_timeout,  # pyright: ignore[reportArgumentType]  # None: math-verify 0.9 only, which takes it
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
        parsing_timeout=parse_timeout,  # pyright: ignore[reportArgumentType]  # None: math-verify 0.9 only, which takes it
    )
    try:
        # Open-RS's order: the answer goes in math-verify's `gold` slot.
        timeout = alarm_timeout(verify_timeout_s)
        correct = verify(answer, gold, timeout_seconds=timeout)  # pyright: ignore[reportArgumentType]  # None: math-verify 0.9 only, which takes it
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
    parse_timeout_s: int | None = 3,
    verify_timeout_s: int | None = 3,
) -> list[str]:
    """B verdicts, computed in `pool`; a task that errs, times out or crashes is FAILED."""
    if pool.workers == 0:
        alarm_timeout(parse_timeout_s)  # raises here, not as a silent FAILED inside each task
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
    """r = lo + (hi - lo)(1 + cos((L / M) pi)) / 2, (lo, hi) = (min_value_correct,
    max_value_correct) if correct else (max_value_wrong, min_value_wrong). No clamp on L.

    The floating-point order is Open-RS's, `cos((L / M) * pi)`: `cos(pi * L / M)` rounds
    differently in the last bit for about 3% of lengths.
    """
    c = math.cos((length / max_len) * math.pi)
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
    if boxed not in BOXED_MODES:
        raise ValueError(f"boxed must be one of {BOXED_MODES}, got {boxed!r}")


def make_accuracy(
    *,
    gold_column: str = "solution",
    boxed: BoxedMode = "all",
    workers: int = 2,
    timeout_s: float = 10.0,
    parse_timeout_s: int | None = 3,
    verify_timeout_s: int | None = 3,
    pool: VerifyPool | None = None,
) -> Callable[..., list[float]]:
    """`accuracy`: 1.0 correct, 0.0 wrong / failed / timed out, 1.0 if the gold does not parse.

    workers, timeout_s: the verification pool (shared by rewards with the same settings);
    workers=0 verifies inline. pool: an explicit VerifyPool (overrides workers/timeout_s).
    parse_timeout_s, verify_timeout_s: math-verify's own (signal) timeouts inside a task;
      3 s each, math-verify 0.5.2's defaults, which Open-RS's calls used.
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
    parse_timeout_s: int | None = 3,
    verify_timeout_s: int | None = 3,
    pool: VerifyPool | None = None,
) -> Callable[..., list[float]]:
    """`cosine` (Open-RS exp 3): L in characters, c = cos((L / max_len) pi), no clamp.

    Correct: 0.75 + 0.25c (1.0 at L=0, 0.5 at L=M, 1.0 again at L=2M); wrong: -0.25 + 0.25c
    (0.0, -0.5, 0.0); 1.0 if the gold does not parse. max_len=3584 is exp 3's cosine_max_len.
    boxed: the answer parse's un-boxing, "all" (default, as `accuracy`), "last", or "none"
    (Open-RS's cosine as it ran; the `openrs3` recipe sets it): module docstring, departure 2.
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
    parse_timeout_s: int | None = 3,
    verify_timeout_s: int | None = 3,
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
