"""builtin:arithmetic: fixed, disjoint splits of the 100 one-digit sums."""

from openrs_jax.data.arithmetic import arithmetic_dataset, arithmetic_pairs
from openrs_jax.data.sources import load_source


def test_splits_are_fixed_disjoint_and_complete():
    train, test = arithmetic_pairs("train"), arithmetic_pairs("test")
    assert len(train) == 70 and len(test) == 30
    assert not set(train) & set(test)
    assert set(train) | set(test) == {(a, b) for a in range(10) for b in range(10)}
    assert arithmetic_pairs("test") == test  # the same draw every time


def test_rows_and_builtin_source():
    rows = list(load_source("builtin:arithmetic", split="test"))
    assert rows == list(arithmetic_dataset("test"))
    for r in rows:
        a, b = (int(x) for x in r["problem"].removeprefix("What is ").removesuffix("?").split(" + "))
        assert r["answer"] == str(a + b)
