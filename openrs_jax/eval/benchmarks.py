"""The five Open-RS benchmarks: where they come from, what the model is asked, what is graded.

Layer L0 (no JAX). Each benchmark is one `BenchmarkSpec`, taken from the lighteval tasks that
Open-RS ran (knoveleng/open-rs `src/open_r1/evaluate.py`; the prompt template, gold fields
and extraction modes are recorded in ../shared/data/openrs_prompts.json, which a test checks
these constants against):

    name           hub dataset (split)                 problems  gold field  gold read as
    aime24         HuggingFaceH4/aime_2024 (train)          30   answer      expr
    math500        HuggingFaceH4/MATH-500 (test)           500   solution    latex
    amc23          knoveleng/AMC-23 (train)                 40   answer      expr
    minerva        knoveleng/Minerva-Math (train)          272   solution    latex
    olympiadbench  knoveleng/OlympiadBench (train)         675   answer      latex

Two sources: the hub (needs internet and `datasets`) or local JSONL files
`<data_dir>/<name>.jsonl` with `id`, `problem` and the gold field (the files in
../shared/data have them). The user message is the lighteval math prompt
(`MATH_QUERY_TEMPLATE.format(Question=problem)`), rendered with the model's chat template and
no system prompt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Literal, Sequence

# lighteval's MATH_QUERY_TEMPLATE as Open-RS used it (two spaces after "clearly." included).
MATH_QUERY_TEMPLATE = (
    "Solve the following math problem efficiently and clearly.  The last line of your response should be of "
    "the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is correct' (without "
    "quotes) where ANSWER is just the final number or expression that solves the problem. Think step by step "
    "before answering.\n\n{Question}"
)

# Generation settings of the paper's evaluation (lighteval MODEL_ARGS in the open-rs README).
TEMPERATURE = 0.6
TOP_P = 0.95
MAX_NEW_TOKENS = 32768


# How a gold answer is parsed (grading.prepare_gold): "latex" (MATH-style) or "expr" (plain numbers).
GoldMode = Literal["latex", "expr"]


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark. `problem_columns` / `id_columns`: the first present column is used
    (hub and local copies name them differently); `gold_mode`: how the gold is parsed
    (see grading.py)."""

    name: str
    title: str  # column header of Table 1
    hub_repo: str
    hub_split: str
    gold_field: str
    gold_mode: GoldMode
    size: int
    problem_columns: tuple[str, ...] = ("problem",)
    id_columns: tuple[str, ...] = ("id", "unique_id")


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", "AIME24", "HuggingFaceH4/aime_2024", "train", "answer", "expr", 30),
        BenchmarkSpec("math500", "MATH-500", "HuggingFaceH4/MATH-500", "test", "solution", "latex", 500),
        BenchmarkSpec("amc23", "AMC23", "knoveleng/AMC-23", "train", "answer", "expr", 40),
        BenchmarkSpec("minerva", "Minerva", "knoveleng/Minerva-Math", "train", "solution", "latex", 272),
        BenchmarkSpec(
            "olympiadbench", "OlympiadBench", "knoveleng/OlympiadBench", "train", "answer", "latex", 675,
            problem_columns=("problem", "question"),
        ),
    )
}
# Table 1's column order.
BENCHMARK_ORDER = ("aime24", "math500", "amc23", "minerva", "olympiadbench")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One evaluation problem: `index` is its position in the benchmark file (stable across
    runs, so records can be resumed), `gold` the text graded against (the gold field)."""

    benchmark: str
    index: int
    id: str
    problem: str
    gold: str
    gold_mode: GoldMode

    @property
    def query(self) -> str:
        """The user message: the lighteval math prompt around the problem."""
        return format_query(self.problem)


def format_query(problem: str) -> str:
    return MATH_QUERY_TEMPLATE.format(Question=problem)


def get_spec(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_ORDER)}") from None


def parse_benchmarks(text: str | Sequence[str]) -> list[str]:
    """"aime24,math500" (or a list) -> validated names in the given order, duplicates dropped;
    "all" -> the five of Table 1."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(BENCHMARK_ORDER)
    if not names:
        raise ValueError("no benchmark given")
    for name in names:
        get_spec(name)
    return list(dict.fromkeys(names))


def _first_column(row: dict[str, Any], columns: Sequence[str], what: str, source: str, line: int) -> Any:
    for column in columns:
        if column in row and row[column] is not None:
            return row[column]
    raise ValueError(
        f"{source}: row {line} has no {what} column ({' or '.join(repr(c) for c in columns)}); "
        f"columns: {', '.join(sorted(row))}"
    )


def rows_to_problems(spec: BenchmarkSpec, rows: Sequence[dict[str, Any]], source: str) -> list[Problem]:
    """Rows (dicts) -> Problems, with errors naming the source, row and missing column."""
    problems = []
    for i, row in enumerate(rows):
        text = _first_column(row, spec.problem_columns, "problem", source, i)
        gold = _first_column(row, (spec.gold_field,), "gold", source, i)
        ident = next((row[c] for c in spec.id_columns if row.get(c) is not None), i)
        if isinstance(gold, (list, tuple)) and len(gold) == 1:
            gold = gold[0]  # OlympiadBench's `final_answer` form: a one-element list
        if not isinstance(gold, str):
            gold = str(gold)  # e.g. AMC answers stored as floats upstream
        if not gold.strip():
            raise ValueError(f"{source}: row {i} has an empty {spec.gold_field!r}")
        problems.append(Problem(spec.name, i, str(ident), str(text), gold, spec.gold_mode))
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        # Records are keyed by index; duplicate ids would only confuse readers of the JSONL.
        dupes = sorted({x for x in ids if ids.count(x) > 1})[:5]
        raise ValueError(f"{source}: duplicate ids {dupes}")
    return problems


def custom_problems(
    name: str,
    rows: Sequence[dict[str, Any]],
    *,
    gold_field: str = "answer",
    gold_mode: str = "latex",
    problem_column: str = "problem",
) -> list[Problem]:
    """Problems from any rows (e.g. a held-out validation split), graded like the benchmarks
    whose gold is read with `gold_mode` ("latex": MATH-style answers, bare ones wrapped in
    `$…$`; "expr": plain numbers)."""
    if gold_mode not in ("latex", "expr"):
        raise ValueError(f"gold_mode must be 'latex' or 'expr', got {gold_mode!r}")
    spec = BenchmarkSpec(name, name, "", "", gold_field, gold_mode, len(rows), problem_columns=(problem_column,))
    return rows_to_problems(spec, rows, name)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = pathlib.Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n} is not valid JSON: {e}") from None
    return rows


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[Problem]:
    """The problems of benchmark `name`, in file order (first `limit` if given).

    data_dir: read `<data_dir>/<name>.jsonl`; None: the hub dataset Open-RS used.
    """
    spec = get_spec(name)
    if data_dir is not None:
        path = pathlib.Path(data_dir) / f"{name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"benchmark file {path} not found (--data-dir must hold {name}.jsonl)")
        rows = read_jsonl(path)
        source = str(path)
    else:
        rows = _load_hub(spec)
        source = f"{spec.hub_repo} ({spec.hub_split})"
    problems = rows_to_problems(spec, rows, source)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        problems = problems[:limit]
    return problems


def _load_hub(spec: BenchmarkSpec) -> list[dict[str, Any]]:
    try:
        import datasets

        dataset = datasets.load_dataset(spec.hub_repo, split=spec.hub_split)
    except Exception as e:  # offline, renamed dataset: say which and how to go offline
        raise ValueError(
            f"benchmark {spec.name!r}: could not load {spec.hub_repo} (split {spec.hub_split!r}) from the "
            f"Hugging Face hub ({type(e).__name__}: {e}); pass --data-dir with {spec.name}.jsonl instead"
        ) from e
    return [dict(row) for row in dataset]
