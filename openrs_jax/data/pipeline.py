"""From a `DataSection` to a `PromptIterator`: load, filter and check every source.

Layer L0 (no JAX).
"""

from __future__ import annotations

from typing import Sequence

from openrs_jax.config import DataSection
from openrs_jax.data.iterator import PromptIterator
from openrs_jax.data.sources import check_columns, filter_rows, load_source
from openrs_jax.data.tokenizer import PromptFormatter


def _source_name(path: str, config: str | None, split: str, where: dict) -> str:
    name = path if config is None else f"{path}:{config}"
    name = f"{name}[{split}]"
    return f"{name}{where}" if where else name


def build_prompt_iterator(
    data: DataSection, tokenizer, seed: int, required_columns: Sequence[str] = ()
) -> PromptIterator:
    """The prompt stream of a run.

    `seed` is the run seed (used unless `data.shuffle_seed` is set). `required_columns` are
    further columns every source must have (e.g. those the configured rewards read); the
    problem column, and the solution column unless it is null, are always required. A missing
    column raises ValueError naming it and the dataset.
    """
    # The examples' `problem` / `solution` keys are copied from the configured columns.
    aliases = {"problem": data.problem_column, "solution": data.solution_column or "solution"}
    required = [data.problem_column, *([data.solution_column] if data.solution_column else [])]
    required += [aliases.get(c, c) for c in required_columns]
    rows, names, ratios = [], [], []
    for source in data.resolved_sources():
        name = _source_name(source.path, source.config, source.split, source.where)
        dataset = load_source(source.path, source.config, source.split)
        check_columns(dataset, required, name)
        rows.append(filter_rows(dataset, source.where, name))
        names.append(name)
        ratios.append(source.ratio)
    formatter = PromptFormatter(
        tokenizer,
        system_prompt=data.system_prompt,
        add_think_prefill=data.add_think_prefill,
        max_prompt_length=data.max_prompt_length,
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
