"""Evaluation on the Open-RS benchmarks: data, lighteval-style grading, metrics, reports,
the resumable runner, and validation / best-checkpoint tracking for the trainer.

    from openrs_jax import eval as ev
    problems = ev.load_benchmark("aime24", data_dir="../shared/data")
    run = ev.evaluate_benchmark(problems, engine, tokenizer, ev.EvalSettings(samples=4),
                                ev.grading_pool(2), ev.RecordStore("out/aime24.jsonl", 4))

Modules: `benchmarks` (specs, prompt template, loading), `grading` (math-verify with
lighteval's settings), `metrics` (pass@1, avg@k, standard errors), `report` (results JSON,
Table-1 Markdown, lighteval's results layout), `runner` (chunked, resumable evaluation),
`validation` (Validator, BestCheckpointTracker). The CLI is `python -m openrs_jax.evaluate`.
"""

from openrs_jax.eval.benchmarks import (
    BENCHMARK_ORDER,
    BENCHMARKS,
    MATH_QUERY_TEMPLATE,
    BenchmarkSpec,
    Problem,
    custom_problems,
    format_query,
    load_benchmark,
    parse_benchmarks,
)
from openrs_jax.eval.grading import Grade, grade, grade_batch, grading_pool, prepare_gold
from openrs_jax.eval.metrics import macro_average, summarize
from openrs_jax.eval.report import (
    PAPER_TABLE1,
    build_results,
    lighteval_results,
    markdown_table,
    write_lighteval_results,
    write_reports,
)
from openrs_jax.eval.runner import BenchmarkRun, EvalSettings, RecordStore, chunk_seed, evaluate_benchmark
from openrs_jax.eval.validation import BestCheckpointTracker, Validator

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_ORDER",
    "BenchmarkRun",
    "BenchmarkSpec",
    "BestCheckpointTracker",
    "EvalSettings",
    "Grade",
    "MATH_QUERY_TEMPLATE",
    "PAPER_TABLE1",
    "Problem",
    "RecordStore",
    "Validator",
    "build_results",
    "chunk_seed",
    "custom_problems",
    "evaluate_benchmark",
    "format_query",
    "grade",
    "grade_batch",
    "grading_pool",
    "lighteval_results",
    "load_benchmark",
    "macro_average",
    "markdown_table",
    "parse_benchmarks",
    "prepare_gold",
    "summarize",
    "write_lighteval_results",
    "write_reports",
]
