"""Benchmark specs against the recipe file, local loading, metrics and the Table-1 report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from openrs_jax.eval import benchmarks as bm
from openrs_jax.eval import metrics, report


def test_specs_match_openrs_prompts_json(shared_data):
    recipe = json.loads((shared_data / "openrs_prompts.json").read_text())
    assert bm.MATH_QUERY_TEMPLATE == recipe["eval_query_template"]
    assert {n: s.gold_field for n, s in bm.BENCHMARKS.items()} == recipe["eval_gold_field"]
    assert {n: s.gold_mode for n, s in bm.BENCHMARKS.items()} == recipe["eval_gold_extraction"]
    gen = recipe["eval_generation"]
    assert (bm.TEMPERATURE, bm.TOP_P, bm.MAX_NEW_TOKENS) == (gen["temperature"], gen["top_p"], gen["max_new_tokens"])
    assert gen["system_prompt"] is None and gen["chat_template"] is True


def test_query_is_the_lighteval_prompt():
    query = bm.format_query("What is $1+1$? Use {braces}.")
    assert query.startswith("Solve the following math problem efficiently and clearly.  The last line")
    assert "'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct'" in query
    assert query.endswith("Think step by step before answering.\n\nWhat is $1+1$? Use {braces}.")


@pytest.mark.parametrize("name", bm.BENCHMARK_ORDER)
def test_local_files_load(name, shared_data):
    problems = bm.load_benchmark(name, shared_data)
    assert len(problems) == bm.BENCHMARKS[name].size
    assert [p.index for p in problems] == list(range(len(problems)))
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.problem.strip() and p.gold.strip() and p.benchmark == name for p in problems)
    assert bm.load_benchmark(name, shared_data, limit=3) == problems[:3]


def test_loading_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="aime24.jsonl"):
        bm.load_benchmark("aime24", tmp_path)
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"id": "a", "question": "q", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0 has no problem column \('problem'\)"):
        bm.load_benchmark("aime24", tmp_path)
    (tmp_path / "minerva.jsonl").write_text(json.dumps({"id": "a", "problem": "q", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match="no gold column"):
        bm.load_benchmark("minerva", tmp_path)
    (tmp_path / "amc23.jsonl").write_text("{broken\n")
    with pytest.raises(ValueError, match="amc23.jsonl:1 is not valid JSON"):
        bm.load_benchmark("amc23", tmp_path)
    # Hub-style OlympiadBench rows name the problem `question`; numbers become strings.
    (tmp_path / "olympiadbench.jsonl").write_text(json.dumps({"id": 7, "question": "q", "answer": 2.0}) + "\n")
    (p,) = bm.load_benchmark("olympiadbench", tmp_path)
    assert (p.id, p.problem, p.gold, p.gold_mode) == ("7", "q", "2.0", "latex")


def test_parse_benchmarks():
    assert bm.parse_benchmarks("all") == list(bm.BENCHMARK_ORDER)
    assert bm.parse_benchmarks(" amc23, aime24,amc23") == ["amc23", "aime24"]
    with pytest.raises(ValueError, match="unknown benchmark 'gsm8k'"):
        bm.parse_benchmarks("aime24,gsm8k")


def test_summarize_by_hand():
    # 4 problems x 3 samples.
    c = np.array([[1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)
    s = metrics.summarize(c)
    assert (s["n"], s["k"]) == (4, 3)
    assert s["pass@1"] == 0.5
    assert s["avg@k"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 3) / 4)
    assert s["pass@k"] == 0.75
    means = np.array([1, 1 / 3, 0, 1 / 3])
    assert s["avg@k_se"] == pytest.approx(np.std(means, ddof=1) / 2)
    assert s["pass@1_se"] == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)
    # AIME-sized: 30 problems at 50% -> se(pass@1) ~ 9 points, the swing the paper warns of.
    half = np.array([[1]] * 15 + [[0]] * 15, bool)
    assert metrics.summarize(half)["pass@1_se"] == pytest.approx(math.sqrt(0.25 * 30 / 29 / 30))
    assert metrics.summarize([[True]])["pass@1_se"] == 0.0
    with pytest.raises(ValueError, match=r"\[P, k\]"):
        metrics.summarize(np.zeros((0, 1)))


def test_macro_average():
    per = {"a": {"avg@k": 0.2, "avg@k_se": 0.03}, "b": {"avg@k": 0.6, "avg@k_se": 0.04}}
    assert metrics.macro_average(per, "avg@k") == pytest.approx(0.4)
    assert metrics.macro_average_se(per, "avg@k") == pytest.approx(0.025)


def test_paper_rows_are_consistent():
    """Transcription check: each published Avg. is the mean of its five scores. All six are
    printed to one decimal (each off by <= 0.05 from the unrounded value), so they can differ
    by up to 0.05 + 0.05; DeepScaleR's row does (56.94 vs 57.0)."""
    assert len(report.PAPER_TABLE1) == 12
    for _, model, scores, avg in report.PAPER_TABLE1:
        assert list(scores) == list(bm.BENCHMARK_ORDER), model
        if avg is not None:
            assert sum(scores.values()) / 5 == pytest.approx(avg, abs=0.1 + 1e-9), model
        else:
            assert None in scores.values(), model


def _results(names, k):
    per = {}
    for i, name in enumerate(names):
        c = np.zeros((10, k), bool)
        c[: i + 1] = True
        per[name] = metrics.summarize(c)
    return report.build_results(per, samples=k, settings={"seed": 0})


def test_markdown_table_layout():
    text = report.markdown_table(_results(bm.BENCHMARK_ORDER, 4), "mine")
    lines = text.splitlines()
    assert lines[0] == "| Model | AIME24 | MATH-500 | AMC23 | Minerva | OlympiadBench | Avg. |"
    assert "| Open-RS3 (50 steps) | 46.7 | 84.4 | 72.5 | 26.8 | 51.3 | 56.3 |" in lines
    assert "| o1-preview | 44.6 | 85.5 | – | – | – | – |" in lines
    assert "| mine pass@1 | 10.0 | 20.0 | 30.0 | 40.0 | 50.0 | 30.0 |" in lines
    avg_row = next(line for line in lines if line.startswith("| mine avg@4 ± se |"))
    assert avg_row.startswith("| mine avg@4 ± se | 10.0 ± 10.0 | 20.0 ± 13.3 |")
    assert any(line.startswith("| mine pass@4 |") for line in lines)
    # Fewer than five benchmarks: no Avg. (the paper averages all five); k = 1: pass@1 only.
    partial = report.markdown_table(_results(["aime24", "amc23"], 1), "mine", published=False).splitlines()
    assert partial[2:] == ["| mine pass@1 | 10.0 | – | 20.0 | – | – | – |"]


def test_write_reports(tmp_path):
    results = _results(["amc23", "aime24"], 2)
    assert list(results["benchmarks"]) == ["aime24", "amc23"]  # Table 1's order
    json_path, md_path = report.write_reports(tmp_path, results, "x")
    assert json.loads(json_path.read_text())["average"]["pass@1"] == pytest.approx(0.15)
    assert "| x avg@2 ± se |" in md_path.read_text()


def test_custom_problems_and_list_golds():
    rows = [{"problem": "p0", "answer": "2"}, {"problem": "p1", "answer": ["$\\frac{1}{2}$"]}]
    problems = bm.custom_problems("val", rows)
    assert [(p.benchmark, p.index, p.id, p.gold, p.gold_mode) for p in problems] == [
        ("val", 0, "0", "2", "latex"), ("val", 1, "1", "$\\frac{1}{2}$", "latex")
    ]
    with pytest.raises(ValueError, match="gold_mode"):
        bm.custom_problems("val", rows, gold_mode="boxed")
    with pytest.raises(ValueError, match="row 0 has no gold column \\('solution'\\)"):
        bm.custom_problems("val", rows, gold_field="solution")


def test_lighteval_results_layout_matches_open_rs_logs(tmp_path):
    """knoveleng/open-rs logs/evals/Exp3_50/results/quyanh/OpenRS-GRPO/
    results_2025-03-15T08-07-05.491769.json: AIME24, 14 of 30 correct, written by lighteval as
    extractive_match 0.4666666666666667 ± 0.09264111117062017 (std ddof=1 / sqrt(n))."""
    correct = np.zeros((30, 1), bool)
    correct[:14] = True
    summary = {"aime24": metrics.summarize(correct), "math500": metrics.summarize(np.ones((4, 1), bool))}
    results = report.build_results(summary, samples=1, settings={"max_new_tokens": 32768})
    out = report.lighteval_results(results, model_name="quyanh/OpenRS-GRPO", started=1.0, ended=613.0, limit=None)
    assert out["results"]["custom|aime24|0"] == {"extractive_match": 0.4666666666666667,
                                                 "extractive_match_stderr": 0.09264111117062017}
    assert out["results"]["custom|math_500|0"] == {"extractive_match": 1.0, "extractive_match_stderr": 0.0}
    assert out["results"]["all"]["extractive_match"] == pytest.approx((0.4666666666666667 + 1.0) / 2)
    assert set(out) == {"config_general", "results", "versions", "config_tasks", "summary_tasks", "summary_general"}
    assert out["versions"] == {"custom|aime24|0": 1, "custom|math_500|0": 1}
    task = out["config_tasks"]["custom|aime24"]
    assert (task["hf_repo"], task["evaluation_splits"], task["generation_size"]) == (
        "HuggingFaceH4/aime_2024", ["train"], 32768)
    assert out["config_general"]["model_name"] == "quyanh/OpenRS-GRPO"
    assert out["summary_general"]["non_truncated"] == 34
    path = report.write_lighteval_results(tmp_path, results, model_name="quyanh/OpenRS-GRPO")
    assert path.parent == tmp_path / "results" / "quyanh__OpenRS-GRPO" and path.name.startswith("results_")
    assert json.loads(path.read_text()) == json.loads(json.dumps(report.lighteval_results(
        results, model_name="quyanh/OpenRS-GRPO")))
