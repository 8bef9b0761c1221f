"""The prompt stream: seeded shuffling, mixing by ratio, and a serialisable cursor.

Layer L0 (no JAX). `PromptIterator.next_batch(P)` returns P example dicts, each with
`prompt_ids` (list[int]), `prompt_text` (str) and every column of its row (plus the canonical
`problem` / `solution` keys the rewards read). The problem column holds the problem text, or a
conversation (TRL's conversational `prompt`: a list of chat messages, rendered as given; its
last user message is then `problem`). The whole position of the stream is the
cursor `state_dict()`: the seed and, per source, (epoch, position); `load_state_dict` on a fresh
iterator over the same data continues with exactly the same batches.

Order. Source k (n_k rows) is read in epochs; epoch e visits its rows in the permutation drawn
from `numpy.random.default_rng([seed, k, e])` (identity when shuffling is off), so a row
repeats only after all others of its source were seen. Sources are interleaved by weight w_k
(ratios normalised to sum 1) with the deterministic "largest deficit" rule: draw number n
(0-based) comes from argmax_k (w_k·(n+1) − c_k), c_k = rows drawn from k so far (ties: the
first source). After n draws every c_k is within 1 of w_k·n, so any P consecutive prompts
hold about w_k·P of source k, and the stream is a function of (seed, c_1..c_K) alone.

Departures from TRL / open-r1:
  1. TRL shuffles with a torch `RandomSampler`; the order here is numpy's, so the same seed does
     not give TRL's prompt order (the set of prompts per epoch is the same).
  2. open-r1 mixes datasets by concatenating fixed-size samples; here `ratio` is the share of the
     stream, each source cycling through all its rows.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from openrs_jax.data.tokenizer import PromptFormatter
from openrs_jax.data.validation import conversation_error, conversation_problem

RESERVED_KEYS = ("prompt_ids", "prompt_text")
STATE_VERSION = 1


def box_answer(answer: str) -> str:
    """"60" -> "$\\boxed{60}$": bare gold answers carry no LaTeX math for the parser to find."""
    return f"$\\boxed{{{answer}}}$"


class PromptIterator:
    """Endless, resumable stream of tokenized prompts over one or more row sources.

    sources: sequences of row dicts (e.g. `datasets.Dataset`), each non-empty;
    names: one name per source (kept in the cursor to catch resuming over other data);
    ratios: one weight > 0 per source (normalised).
    """

    def __init__(
        self,
        sources: Sequence[Sequence[Mapping[str, Any]]],
        formatter: PromptFormatter,
        *,
        names: Sequence[str],
        ratios: Sequence[float] | None = None,
        seed: int = 0,
        shuffle: bool = True,
        problem_column: str = "problem",
        solution_column: str | None = "solution",
        box_solution: bool = False,
    ):
        if not sources:
            raise ValueError("PromptIterator needs at least one source")
        ratios = [1.0] * len(sources) if ratios is None else list(ratios)
        if not len(sources) == len(names) == len(ratios):
            raise ValueError(f"{len(sources)} sources, {len(names)} names and {len(ratios)} ratios")
        for name, rows, ratio in zip(names, sources, ratios):
            if len(rows) == 0:
                raise ValueError(f"dataset {name!r} has no rows")
            if not ratio > 0:
                raise ValueError(f"dataset {name!r}: ratio must be > 0, got {ratio}")
        self._sources = list(sources)
        self._names = [str(n) for n in names]
        total = float(sum(ratios))
        self._weights = np.asarray([r / total for r in ratios], dtype=np.float64)
        self._seed = int(seed)
        self._shuffle = bool(shuffle)
        self._formatter = formatter
        self._problem_column = problem_column
        self._solution_column = solution_column
        self._box_solution = box_solution
        self._consumed = [0] * len(sources)  # c_k: rows drawn from source k, over all epochs
        self._orders: dict[int, tuple[int, np.ndarray]] = {}  # source -> (epoch, its row order)

    # ------------------------------------------------------------------ cursor
    @property
    def num_drawn(self) -> int:
        """Prompts drawn so far (all sources)."""
        return sum(self._consumed)

    @property
    def num_rows(self) -> int:
        """Rows of all sources together (one epoch of a single source)."""
        return sum(len(rows) for rows in self._sources)

    def state_dict(self) -> dict[str, Any]:
        """The cursor as plain JSON data: {"version", "seed", "shuffle", "sources": [{"name",
        "num_rows", "ratio", "epoch", "position"}, ...]}."""
        return {
            "version": STATE_VERSION,
            "seed": self._seed,
            "shuffle": self._shuffle,
            "sources": [
                {
                    "name": name,
                    "num_rows": len(rows),
                    "ratio": float(weight),
                    "epoch": consumed // len(rows),
                    "position": consumed % len(rows),
                }
                for name, rows, weight, consumed in zip(self._names, self._sources, self._weights, self._consumed)
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Moves to a saved cursor. Raises ValueError if it was saved over other data, seed,
        shuffling or ratios (the saved position would then mean other prompts)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data cursor version {state.get('version')!r}, expected {STATE_VERSION}")
        mine = self.state_dict()
        for key in ("seed", "shuffle"):
            if state[key] != mine[key]:
                raise ValueError(
                    f"data cursor was saved with {key}={state[key]!r}, but this iterator has {mine[key]!r}"
                )
        saved = state["sources"]
        describe = lambda entries: [(e["name"], e["num_rows"]) for e in entries]
        if describe(saved) != describe(mine["sources"]):
            raise ValueError(
                f"data cursor was saved over sources {describe(saved)} (name, rows), "
                f"but this iterator reads {describe(mine['sources'])}"
            )
        if not np.allclose([e["ratio"] for e in saved], self._weights, rtol=0, atol=1e-12):
            raise ValueError(
                f"data cursor was saved with ratios {[e['ratio'] for e in saved]}, "
                f"but this iterator has {self._weights.tolist()}"
            )
        self._consumed = [int(e["epoch"]) * e["num_rows"] + int(e["position"]) for e in saved]

    # ------------------------------------------------------------------ order
    def _next_source(self) -> int:
        n = self.num_drawn
        deficit = self._weights * (n + 1) - np.asarray(self._consumed, dtype=np.float64)
        return int(np.argmax(deficit))

    def _row_index(self, k: int) -> int:
        num_rows = len(self._sources[k])
        epoch, position = divmod(self._consumed[k], num_rows)
        cached = self._orders.get(k)
        if cached is None or cached[0] != epoch:
            if self._shuffle:
                order = np.random.default_rng([self._seed, k, epoch]).permutation(num_rows)
            else:
                order = np.arange(num_rows)
            cached = self._orders[k] = (epoch, order)
        return int(cached[1][position])

    def next_indices(self, num_prompts: int) -> list[tuple[int, int]]:
        """Advances the cursor by `num_prompts` draws: [(source index, row index), ...]."""
        if num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
        out = []
        for _ in range(num_prompts):
            k = self._next_source()
            out.append((k, self._row_index(k)))
            self._consumed[k] += 1
        return out

    # ------------------------------------------------------------------ examples
    def example(self, k: int, row_index: int) -> dict[str, Any]:
        """Row `row_index` of source `k` as an example dict (see the module docstring)."""
        row = dict(self._sources[k][row_index])
        name = self._names[k]
        for key in RESERVED_KEYS:
            if key in row:
                raise ValueError(f"dataset {name!r} has a column {key!r}, a name the prompt pipeline writes")
        problem = row.get(self._problem_column)
        if isinstance(problem, str):
            row["problem"] = problem
        elif isinstance(problem, (list, tuple)) and conversation_error(problem) is None:
            # TRL's conversational prompt: rendered as given
            row["problem"] = conversation_problem(problem)
        else:
            raise ValueError(
                f"dataset {name!r} row {row_index}: column {self._problem_column!r} is "
                f"{type(problem).__name__}, expected the problem text (str) or a conversation (list of messages)"
            )
        if self._solution_column is not None:
            solution = row[self._solution_column]
            if self._box_solution and solution is not None:
                solution = box_answer(str(solution))
            row["solution"] = solution
        ids, text = self._formatter.encode(problem)
        row["prompt_ids"] = ids
        row["prompt_text"] = text
        return row

    def next_batch(self, num_prompts: int) -> list[dict[str, Any]]:
        """The next `num_prompts` examples of the stream (advances the cursor)."""
        return [self.example(k, i) for k, i in self.next_indices(num_prompts)]
