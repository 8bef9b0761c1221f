"""A generated arithmetic task for real pretrained models: "What is 7 + 5?" → "12".

Layer L0 (no JAX). `data.dataset_name: "builtin:arithmetic"` (configs/smollm2_arithmetic.yaml).
Problems are the sums a + b of two digits a, b in 0..9 (100 problems); the split is fixed and
disjoint: `test` holds 30 pairs chosen with `numpy.random.default_rng(0)`, `train` the other 70,
so held-out accuracy measures problems never trained on. `answer` is the decimal sum, scored by
the `last_number` reward (the last number in the completion equals it).

Why this task for SmolLM2-135M-Instruct (measured, docs/BENCHMARKS.md): answered greedily with
at most 16 new tokens it is right on about half of the problems — it knows most sums but often
explains at length and is cut off before the number, or writes a wrong sum — and sampled at
temperature 0.7 it is right on fewer; weak but not hopeless, and cheap enough to train on two
CPU cores.
"""

from __future__ import annotations

import numpy as np

# Split → how many rows the training loop draws from (the pairs cycle; the order is shuffled
# by the data pipeline) and which pairs.
ARITHMETIC_SPLITS = ("train", "test")
_NUM_TEST = 30


def arithmetic_pairs(split: str) -> list[tuple[int, int]]:
    """The (a, b) pairs of `split`: 30 test pairs (rng seed 0), the other 70 for train."""
    if split not in ARITHMETIC_SPLITS:
        raise ValueError(f"builtin:arithmetic has splits {list(ARITHMETIC_SPLITS)}, not {split!r}")
    pairs = [(a, b) for a in range(10) for b in range(10)]
    test_idx = set(np.random.default_rng(0).choice(len(pairs), _NUM_TEST, replace=False).tolist())
    return [p for i, p in enumerate(pairs) if (i in test_idx) == (split == "test")]


def arithmetic_dataset(split: str):
    """Rows {id, problem: "What is a + b?", answer: str(a + b)} of `split`, in a fixed order."""
    import datasets

    pairs = arithmetic_pairs(split)
    return datasets.Dataset.from_dict(
        {
            "id": [f"arithmetic-{a}+{b}" for a, b in pairs],
            "problem": [f"What is {a} + {b}?" for a, b in pairs],
            "answer": [str(a + b) for a, b in pairs],
        }
    )
