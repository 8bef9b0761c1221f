"""Every prompt row read and checked before the first step (layer L0, no JAX).

The prompt stream reads rows lazily, so a bad row used to surface only when the run reached it
(a bare `UnicodeDecodeError` at step 60, the steps before it lost). `checked_rows` reads every
row of a source once, up front, and reports bad rows by their place in the file: the 1-based
line of a JSON-lines file, the 1-based row of other formats.

A row is bad when
  - (JSON files) its line is not UTF-8, not JSON, or not a JSON object, or a column's value
    has another type than in the column's first row (numbers: int and float mix freely);
  - one of its values does not decode (invalid UTF-8 inside a parquet / Arrow string column);
  - its problem is neither a non-empty string nor a conversation (TRL's conversational
    `prompt`: a non-empty list of {"role": str, "content": str} messages with a user message),
    or its solution is null (when `solution_column` is set: the accuracy rewards need a gold
    answer for every row).

Policy (`bad_rows`, chosen by the caller; documented in docs/RELIABILITY.md):
  "error" (default): raise `DataError` naming the first bad row, its reason, and how many
      others there are, before any step runs;
  "skip": drop bad rows and warn once per source with the count and the first few places.
A source left without rows is an error under either policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

BAD_ROW_POLICIES = ("error", "skip")
SKIP_HINT = "fix or remove the row, or skip bad rows (data.bad_rows: skip) with a warning"
_SHOWN = 3  # bad rows quoted in a message


class DataError(ValueError):
    """Bad input data; the message names the file (or dataset) and the line (or row)."""


def conversation_error(value: Any) -> str | None:
    """None if `value` is a conversational prompt (TRL's format: a non-empty list of messages
    {"role": str, "content": str}, at least one from the user), else what is wrong with it."""
    if not isinstance(value, (list, tuple)) or not value:
        return "not a list of messages"
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"message {i} is not {{'role': str, 'content': str}}"
    if not any(m["role"] == "user" for m in value):
        return "no user message"
    return None


def conversation_problem(messages: Sequence[dict[str, Any]]) -> str:
    """The problem text of a conversation: its last user message (what rewards see as `problem`)."""
    return [m["content"] for m in messages if m["role"] == "user"][-1]


@dataclasses.dataclass(frozen=True)
class BadRow:
    """One bad row: `where` is "FILE, line N" or "dataset NAME, row N"; `position` is that
    1-based N (the order bad rows are reported in)."""

    where: str
    position: int
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def check_policy(bad_rows: str) -> None:
    if bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROW_POLICIES)}, got {bad_rows!r}")


def summarize(bad: Sequence[BadRow], total: int | None = None) -> str:
    """"N bad rows (of M): first; second; third; ..." for warnings and errors."""
    shown = "; ".join(str(b) for b in bad[:_SHOWN])
    more = f"; {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    of = f" of {total}" if total is not None else ""
    return f"{len(bad)} bad row{'s' if len(bad) != 1 else ''}{of}: {shown}{more}"


def raise_or_warn(bad: Sequence[BadRow], bad_rows: str, source: str, total: int, warn: Callable[[str], None]) -> None:
    """Applies the policy to a source's bad rows (nothing to do when there are none)."""
    if not bad:
        return
    if bad_rows == "error":
        others = f" ({len(bad) - 1} more bad rows in {source})" if len(bad) > 1 else ""
        raise DataError(f"{bad[0]}{others}; {SKIP_HINT}")
    warn(f"dataset {source!r}: skipped {summarize(bad, total)}")


_DECODE_ERRORS = (UnicodeDecodeError, ValueError, TypeError)


def _read_columns(dataset, locate: Callable[[int], tuple[str, int]]) -> tuple[dict[str, list], list[int], dict[int, BadRow]]:
    """Every value of `dataset`, decoded: (columns of the readable rows, their indices, the
    rows that do not decode). All rows are read at once; only when that fails are they read
    again one by one to find the bad ones."""
    try:
        return dataset[:], list(range(len(dataset))), {}
    except _DECODE_ERRORS:
        pass
    bad = {}
    for i in range(len(dataset)):
        try:
            dataset[i]
        except _DECODE_ERRORS as e:
            bad[i] = BadRow(*locate(i), f"a value does not decode ({type(e).__name__}: {e})")
    readable = [i for i in range(len(dataset)) if i not in bad]
    return dataset.select(readable)[:], readable, bad


def row_problems(
    dataset,
    *,
    problem_column: str,
    solution_column: str | None,
    locate: Callable[[int], tuple[str, int]],
) -> dict[int, BadRow]:
    """Bad rows of `dataset` by row index (see the module docstring), reading each once."""
    columns, readable, bad = _read_columns(dataset, locate)
    problems = columns[problem_column]
    solutions = columns[solution_column] if solution_column is not None else None
    for j, i in enumerate(readable):
        problem = problems[j]
        if isinstance(problem, (list, tuple)):
            why = conversation_error(problem)
            if why is not None:
                bad[i] = BadRow(*locate(i), f"column {problem_column!r} holds a list that is not a conversation "
                                            f"({why})")
        elif not isinstance(problem, str) or not problem.strip():
            shown = "empty" if isinstance(problem, str) else f"{type(problem).__name__} {problem!r:.60}"
            bad[i] = BadRow(*locate(i), f"column {problem_column!r} is {shown}, expected the problem text "
                                        "or a conversation (list of chat messages)")
        elif solutions is not None and solutions[j] is None:
            bad[i] = BadRow(*locate(i), f"column {solution_column!r} is missing (null)")
    return dict(sorted(bad.items()))


def checked_rows(
    dataset,
    *,
    source: str,
    problem_column: str,
    solution_column: str | None,
    locate: Callable[[int], tuple[str, int]],
    bad_rows: str = "error",
    warn: Callable[[str], None],
    earlier: Sequence[BadRow] = (),
) -> Any:
    """`dataset` with its bad rows dropped ("skip") or a DataError for the first ("error").

    `earlier`: bad rows found while reading the file (unparseable JSON lines), reported with
    the others. `locate(i)` gives (where, 1-based position) of row i of `dataset` in its file.
    """
    check_policy(bad_rows)
    found = row_problems(dataset, problem_column=problem_column, solution_column=solution_column, locate=locate)
    bad = sorted([*earlier, *found.values()], key=lambda b: b.position)
    total = len(dataset) + len(earlier)
    raise_or_warn(bad, bad_rows, source, total, warn)
    if found:
        dataset = dataset.select([i for i in range(len(dataset)) if i not in found])
    if len(dataset) == 0:
        raise DataError(f"dataset {source!r} has no usable rows ({summarize(bad, total)})")
    return dataset
