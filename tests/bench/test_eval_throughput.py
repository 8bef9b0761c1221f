"""The evaluation throughput benchmark (`python -m openrs_jax.bench.eval_throughput`) runs on CPU at a smoke size (1 layer of the 1.5B shape,
the real tokenizer and prompts) and reports what docs/BENCHMARKS.md needs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_eval_throughput_smoke(shared_data, tmp_path):
    out = tmp_path / "tp.json"
    cmd = [
        sys.executable, "-m", "openrs_jax.bench.eval_throughput", "--tokenizer", str(shared_data / "tokenizer-qwen2"),
        "--data-dir", str(shared_data), "--benchmarks", "amc23", "--layers", "1", "--max-new-tokens", "4",
        "--limit", "2", "--grading-workers", "1", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "tokens_per_s" in proc.stdout and "est_full_benchmark_s" in proc.stdout
    record = json.loads(out.read_text())
    assert record["num_layers"] == 1 and record["dtype"] == "bfloat16"
    assert [r["benchmark"] for r in record["rows"]] == ["amc23"]
    for row in record["rows"]:
        # EOS is off: every row generates exactly max-new-tokens.
        assert row["generated_tokens"] == row["rows"] * 4
        assert row["tokens_per_s"] > 0 and row["prompt_tokens_mean"] > 100
    assert record["rows"][0]["est_full_benchmark_s"] == pytest.approx(record["rows"][0]["wall_s"] * 20)
