"""CPU smoke run of the chunked log-probs benchmark (`python -m openrs_jax.bench.logprobs`): every
variant runs in its own worker process and comes back as a row."""

import json

import pytest

from openrs_jax.bench import logprobs


@pytest.mark.slow
def test_smoke_run_every_variant_is_a_row(tmp_path):
    out = tmp_path / "lp.json"
    logprobs.main(["--vocab", "256", "--seq", "32", "--dim", "16", "--batch", "2", "--iters", "1",
                   "--dtype", "float32", "--chunks", "16", "--timeout", "300", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert [r["variant"] for r in rec["results"]] == ["naive", "chunk=16"]
    for r in rec["results"]:
        assert "error" not in r, r
        assert r["tokens_per_s"] == pytest.approx(2 * 32 / r["time_s_median"])
        assert r["model_tflops_per_s"] > 0
