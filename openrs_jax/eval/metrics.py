"""Scores from a correctness matrix: pass@1, avg@k, pass@k and their standard errors.

Layer L0 (numpy only). Input: c, a [P, k] 0/1 matrix, c[p, j] = sample j of problem p correct.

    pass@1 = mean_p c[p, 0]                      one sample per problem: comparable to Table 1
    avg@k  = mean_p m_p,  m_p = mean_j c[p, j]   the mean accuracy over k samples
    pass@k = mean_p max_j c[p, j]                at least one of the k samples correct
    se(x)  = std_p(x_p, ddof=1) / sqrt(P)        standard error over problems (0 when P = 1)

The standard error is over problems only: it says how much the score would move with another
draw of samples *and* problems like these, treating problems as the sampling unit. With k
samples the per-problem means m_p are less noisy than single samples, so se(avg@k) <=
se(pass@1) in expectation. (AIME24 has P = 30: a single sample moves pass@1 by 3.3 points per
problem, and se(pass@1) is ~9 points at 50% accuracy.) Scores are fractions in [0, 1];
reports print them as percentages.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def _stderr(x: np.ndarray) -> float:
    n = x.shape[0]
    if n < 2:
        return 0.0
    return float(np.std(x, ddof=1) / math.sqrt(n))


def summarize(correct: np.ndarray | Sequence[Sequence[bool]]) -> dict[str, float]:
    """c [P, k] -> {"n", "k", "pass@1", "pass@1_se", "avg@k", "avg@k_se", "pass@k", "pass@k_se"}."""
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"summarize needs a non-empty [P, k] matrix, got shape {c.shape}")
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError("summarize: entries must be 0/1 (correct or not)")
    first = c[:, 0]
    mean = c.mean(axis=1)
    any_ = c.max(axis=1)
    return {
        "n": int(c.shape[0]),
        "k": int(c.shape[1]),
        "pass@1": float(first.mean()),
        "pass@1_se": _stderr(first),
        "avg@k": float(mean.mean()),
        "avg@k_se": _stderr(mean),
        "pass@k": float(any_.mean()),
        "pass@k_se": _stderr(any_),
    }


def macro_average(per_benchmark: Mapping[str, Mapping[str, float]], key: str) -> float | None:
    """Table 1's "Avg.": the unweighted mean of `key` over benchmarks (None when empty)."""
    values = [float(s[key]) for s in per_benchmark.values()]
    return float(np.mean(values)) if values else None


def macro_average_se(per_benchmark: Mapping[str, Mapping[str, float]], key: str) -> float | None:
    """Standard error of `macro_average`: sqrt(sum_b se_b^2) / B (benchmarks independent)."""
    ses = [float(s[f"{key}_se"]) for s in per_benchmark.values()]
    if not ses:
        return None
    return float(math.sqrt(sum(se * se for se in ses)) / len(ses))
