"""From a `DataSection` to a `PromptIterator`: load, filter and check every source.

Layer L0 (no JAX). Every row is read and checked here, before the first step
(`openrs_jax.data.validation`), so bad data stops a run before it trains, not when the stream
reaches the row.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from openrs_jax.config import DataSection
from openrs_jax.data.iterator import RESERVED_KEYS, PromptIterator
from openrs_jax.data.sources import check_columns, matching_rows, open_source
from openrs_jax.data.tokenizer import PromptFormatter
from openrs_jax.data.validation import DataError, check_policy, checked_rows


def _warn(message: str) -> None:
    print(f"[openrs] warning: {message}", file=sys.stderr, flush=True)


def _source_name(path: str, config: str | None, split: str, where: dict) -> str:
    name = path if config is None else f"{path}:{config}"
    name = f"{name}[{split}]"
    return f"{name}{where}" if where else name


def build_prompt_iterator(
    data: DataSection,
    tokenizer,
    seed: int,
    required_columns: Sequence[str] = (),
    *,
    bad_rows: str = "error",
    warn: Callable[[str], None] = _warn,
) -> PromptIterator:
    """The prompt stream of a run.

    `seed` is the run seed (used unless `data.shuffle_seed` is set). `required_columns` are
    further columns every source must have (e.g. those the configured rewards read); the
    problem column, and the solution column unless it is null, are always required. A missing
    column raises ValueError naming it and the dataset.

    Every row of every source is read and checked first (`openrs_jax.data.validation`):
    `bad_rows="error"` raises DataError naming the file and line of the first bad row;
    `"skip"` drops bad rows and calls `warn` once per source with their count and places.
    """
    check_policy(bad_rows)
    # The examples' `problem` / `solution` keys are copied from the configured columns.
    aliases = {"problem": data.problem_column, "solution": data.solution_column or "solution"}
    required = [data.problem_column, *([data.solution_column] if data.solution_column else [])]
    required += [aliases.get(c, c) for c in required_columns]
    rows, names, ratios = [], [], []
    for source in data.resolved_sources():
        name = _source_name(source.path, source.config, source.split, source.where)
        loaded = open_source(source.path, source.config, source.split)
        dataset = loaded.dataset
        check_columns(dataset, required, name)
        reserved = [c for c in RESERVED_KEYS if c in dataset.column_names]
        if reserved:
            raise DataError(f"dataset {name!r} has a column {reserved[0]!r}, a name the prompt pipeline writes")
        keep = matching_rows(dataset, source.where, name)
        locate = loaded.locate
        if keep is not None:
            dataset = dataset.select(keep)
            locate = lambda i, keep=keep, inner=loaded.locate: inner(keep[i])
        rows.append(checked_rows(
            dataset, source=name, problem_column=data.problem_column, solution_column=data.solution_column,
            locate=locate, bad_rows=bad_rows, warn=warn, earlier=loaded.unreadable,
        ))
        names.append(name)
        ratios.append(source.ratio)
    formatter = PromptFormatter(
        tokenizer,
        system_prompt=data.system_prompt,
        add_think_prefill=data.add_think_prefill,
        max_prompt_length=data.max_prompt_length,
        chat_template=data.chat_template,
    )
    return PromptIterator(
        rows,
        formatter,
        names=names,
        ratios=ratios,
        seed=seed if data.shuffle_seed is None else data.shuffle_seed,
        shuffle=data.shuffle,
        problem_column=data.problem_column,
        solution_column=data.solution_column,
        box_solution=data.box_solution,
    )
