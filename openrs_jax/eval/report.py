"""The results JSON and a Markdown table laid out like Table 1 of the paper.

Layer L0. `PAPER_TABLE1` holds the published rows of Table 1 of Dang & Ngo, "Reinforcement
Learning for Reasoning in Small LLMs: What Works and What Doesn't" (arXiv 2503.16219):
zero-shot pass@1 in percent, None where the paper prints a dash. Copied from the paper's text
(the baselines' numbers are the paper's citations of Zeng et al. 2025, Luo et al. 2025 and
OpenAI; Open-RS1/2/3 are the authors' lighteval runs). Our rows are added beneath them: pass@1
(the first sample of each problem, the paper's metric) and, with k > 1 samples, avg@k ± its
standard error.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

from openrs_jax.eval.benchmarks import BENCHMARK_ORDER, BENCHMARKS

# (group, model, {benchmark: score in %}, Avg. as printed). Order and grouping as in Table 1.
PAPER_TABLE1: tuple[tuple[str, str, dict[str, float | None], float | None], ...] = (
    ("General Models", "Llama-3.1-70B-Instruct",
     {"aime24": 16.7, "math500": 64.6, "amc23": 30.1, "minerva": 35.3, "olympiadbench": 31.9}, 35.7),
    ("General Models", "o1-preview",
     {"aime24": 44.6, "math500": 85.5, "amc23": None, "minerva": None, "olympiadbench": None}, None),
    ("7B Models", "Qwen-2.5-Math-7B-Instruct",
     {"aime24": 13.3, "math500": 79.8, "amc23": 50.6, "minerva": 34.6, "olympiadbench": 40.7}, 43.8),
    ("7B Models", "rStar-Math-7B",
     {"aime24": 26.7, "math500": 78.4, "amc23": 47.5, "minerva": None, "olympiadbench": 47.1}, None),
    ("7B Models", "Eurus-2-7B-PRIME",
     {"aime24": 26.7, "math500": 79.2, "amc23": 57.8, "minerva": 38.6, "olympiadbench": 42.1}, 48.9),
    ("7B Models", "Qwen2.5-7B-SimpleRL",
     {"aime24": 26.7, "math500": 82.4, "amc23": 62.5, "minerva": 39.7, "olympiadbench": 43.3}, 50.9),
    ("1.5B Models", "DeepSeek-R1-Distill-Qwen-1.5B",
     {"aime24": 28.8, "math500": 82.8, "amc23": 62.9, "minerva": 26.5, "olympiadbench": 43.3}, 48.9),
    ("1.5B Models", "Still-3-1.5B-Preview",
     {"aime24": 32.5, "math500": 84.4, "amc23": 66.7, "minerva": 29.0, "olympiadbench": 45.4}, 51.6),
    ("1.5B Models", "DeepScaleR-1.5B-Preview",
     {"aime24": 43.1, "math500": 87.8, "amc23": 73.6, "minerva": 30.2, "olympiadbench": 50.0}, 57.0),
    ("Open-RS (paper)", "Open-RS1 (100 steps)",
     {"aime24": 30.0, "math500": 83.8, "amc23": 70.0, "minerva": 29.0, "olympiadbench": 52.4}, 53.0),
    ("Open-RS (paper)", "Open-RS2 (50 steps)",
     {"aime24": 30.0, "math500": 85.4, "amc23": 80.0, "minerva": 30.5, "olympiadbench": 52.4}, 55.7),
    ("Open-RS (paper)", "Open-RS3 (50 steps)",
     {"aime24": 46.7, "math500": 84.4, "amc23": 72.5, "minerva": 26.8, "olympiadbench": 51.3}, 56.3),
)


def _cell(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if se is None else f"{value:.1f} ± {se:.1f}"


def markdown_table(results: Mapping[str, Any], label: str = "ours", published: bool = True) -> str:
    """Table 1's layout (AIME24 | MATH-500 | AMC23 | Minerva | OlympiadBench | Avg.), the
    published rows first, then ours: pass@1 and, for k > 1, avg@k ± se. Our "Avg." is
    given only when all five benchmarks were run (as in the paper), else "–".

    results: the dict `build_results` returns.
    """
    per = results["benchmarks"]
    k = int(results["samples"])
    header = "| Model | " + " | ".join(BENCHMARKS[b].title for b in BENCHMARK_ORDER) + " | Avg. |"
    sep = "|---|" + "---:|" * (len(BENCHMARK_ORDER) + 1)
    lines = [header, sep]
    if published:
        group = None
        for g, model, scores, avg in PAPER_TABLE1:
            if g != group:
                lines.append(f"| *{g}* |" + " |" * (len(BENCHMARK_ORDER) + 1))
                group = g
            lines.append(f"| {model} | " + " | ".join(_cell(scores[b]) for b in BENCHMARK_ORDER) + f" | {_cell(avg)} |")
        lines.append("| *This run* |" + " |" * (len(BENCHMARK_ORDER) + 1))
    complete = all(b in per for b in BENCHMARK_ORDER)

    def percent(summary: Mapping[str, Any] | None, key: str, with_se: bool) -> str:
        if summary is None or summary.get(key) is None:
            return _cell(None)
        return _cell(100 * summary[key], 100 * summary[f"{key}_se"] if with_se else None)

    def row(name: str, key: str, with_se: bool) -> str:
        cells = [percent(per.get(b), key, with_se) for b in BENCHMARK_ORDER]
        cells.append(percent(results["average"] if complete else None, key, with_se))
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row(f"{label} pass@1", "pass@1", False))
    if k > 1:
        lines.append(row(f"{label} avg@{k} ± se", "avg@k", True))
        lines.append(row(f"{label} pass@{k}", "pass@k", False))
    return "\n".join(lines) + "\n"


def build_results(
    per_benchmark: Mapping[str, Mapping[str, Any]],
    *,
    samples: int,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The results JSON: settings, per-benchmark summaries (metrics.summarize plus extras)
    and the macro averages over the benchmarks run."""
    from openrs_jax.eval.metrics import macro_average, macro_average_se

    ordered = {b: dict(per_benchmark[b]) for b in BENCHMARK_ORDER if b in per_benchmark}
    ordered.update({b: dict(s) for b, s in per_benchmark.items() if b not in ordered})
    average = {}
    for key in ("pass@1", "avg@k", "pass@k"):
        average[key] = macro_average(ordered, key)
        average[f"{key}_se"] = macro_average_se(ordered, key)
    return {
        "samples": int(samples),
        "settings": dict(settings),
        "benchmarks": ordered,
        "average": average,
        "benchmarks_run": list(ordered),
        "paper_table1": [
            {"group": g, "model": m, "scores": s, "avg": a} for g, m, s, a in PAPER_TABLE1
        ],
    }


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file beside `path`, fsync, rename: readers never see half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_reports(
    out_dir: str | os.PathLike, results: Mapping[str, Any], label: str = "ours"
) -> tuple[pathlib.Path, pathlib.Path]:
    """<out_dir>/results.json and <out_dir>/results.md; returns their paths."""
    out_dir = pathlib.Path(out_dir)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    atomic_write_text(md_path, markdown_table(results, label))
    return json_path, md_path


# ---------------------------------------------------------------------------- lighteval's layout
# Open-RS's lighteval task names (knoveleng/open-rs src/open_r1/evaluate.py), where they differ.
LIGHTEVAL_TASK_NAMES = {"math500": "math_500"}


def lighteval_results(results: Mapping[str, Any], *, model_name: str, started: float | None = None,
                      ended: float | None = None, limit: int | None = None) -> dict[str, Any]:
    """`results` (`build_results`) in the layout of lighteval's results JSON, as Open-RS's runs
    wrote it (logs/evals/*/results_*.json there): per task `custom|<task>|0` the
    `extractive_match` (pass@1: the first sample of each problem) and its
    `extractive_match_stderr` (std over problems, ddof=1, / sqrt(n): lighteval's), and "all",
    the mean of every metric over the tasks. The prompt and token hashes of lighteval's
    summaries are not computed (None)."""
    per = results["benchmarks"]
    tasks: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    summaries: dict[str, Any] = {}
    for name, summary in per.items():
        spec = BENCHMARKS.get(name)
        task = LIGHTEVAL_TASK_NAMES.get(name, name)
        key = f"custom|{task}|0"
        tasks[key] = {"extractive_match": summary["pass@1"], "extractive_match_stderr": summary["pass@1_se"]}
        n = int(summary["n"])
        configs[f"custom|{task}"] = {
            "name": task, "suite": ["custom"],
            "hf_repo": spec.hub_repo if spec else None, "hf_subset": "default",
            "metric": [{"metric_name": "extractive_match", "higher_is_better": True, "corpus_level_fn": "mean"}],
            "evaluation_splits": [spec.hub_split] if spec else None,
            "generation_size": results["settings"].get("max_new_tokens"),
            "original_num_docs": spec.size if spec else n, "effective_num_docs": n, "version": 1,
        }
        summaries[key] = {"hashes": {"hash_examples": None, "hash_full_prompts": None, "hash_input_tokens": None,
                                     "hash_cont_tokens": None},
                          "truncated": 0, "non_truncated": n, "padded": 0, "non_padded": n,
                          "effective_few_shots": 0.0, "num_truncated_few_shots": 0}
    if tasks:
        metrics = list(next(iter(tasks.values())))
        tasks["all"] = {m: sum(t[m] for t in tasks.values()) / len(tasks) for m in metrics}
    total = sum(int(s["n"]) for s in per.values())
    return {
        "config_general": {
            "lighteval_sha": "openrs-jax", "num_fewshot_seeds": 1, "override_batch_size": -1, "max_samples": limit,
            "job_id": 0, "start_time": started, "end_time": ended,
            "total_evaluation_time_secondes": None if started is None or ended is None else str(ended - started),
            "model_name": model_name, "model_sha": "", "model_dtype": None, "model_size": None,
        },
        "results": tasks,
        "versions": {key: 1 for key in tasks if key != "all"},
        "config_tasks": configs,
        "summary_tasks": summaries,
        "summary_general": {"hashes": {"hash_examples": None, "hash_full_prompts": None, "hash_input_tokens": None,
                                       "hash_cont_tokens": None},
                            "truncated": 0, "non_truncated": total, "padded": 0, "non_padded": total,
                            "num_truncated_few_shots": 0},
    }


def write_lighteval_results(out_dir: str | os.PathLike, results: Mapping[str, Any], *, model_name: str,
                            started: float | None = None, ended: float | None = None,
                            limit: int | None = None) -> pathlib.Path:
    """<out_dir>/results/<model_name>/results_<ISO time>.json in lighteval's layout (its own
    path scheme); returns the path."""
    import datetime

    stamp = datetime.datetime.now().isoformat().replace(":", "-")
    path = pathlib.Path(out_dir) / "results" / model_name.replace("/", "__") / f"results_{stamp}.json"
    data = lighteval_results(results, model_name=model_name, started=started, ended=ended, limit=limit)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
