"""CPU smoke test of the update benchmark (`python -m openrs_jax.bench`) at tiny sizes, and that
its JAX batch computes the trainer's log-probs."""

import json

import numpy as np
import pytest

from openrs_jax.bench import __main__ as bench
from openrs_jax.bench import update as upd
from openrs_jax.bench.spec import Spec, model_config
from openrs_jax.bench.workers import run_worker

TINY = dict(num_layers=1, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, vocab_size=512)
TINY_FLAGS = ["--layers", "1", "--hidden", "64", "--intermediate", "128", "--heads", "4", "--kv-heads", "2",
              "--vocab", "512"]


def test_bench_batch_logps_match_the_model():
    """The benchmark's JAX batch feeds the trainer's log-prob path: compare with log-softmax of
    a plain forward, so the timed rows compute the right function."""
    import jax

    from openrs_jax.model import create_sharded
    from openrs_jax.trainer import step

    spec = Spec(seq=48, prompt=16, chunk=16, model=TINY)
    cfg = model_config(TINY).replace(dtype="float32", param_dtype="float32")
    model = create_sharded(cfg, None, seed=0)
    batch = upd._jax_batch(spec, cfg, with_ref=True)
    loss = upd._jax_loss_settings(spec)
    got = np.asarray(step.completion_logps(model, batch, loss))
    assert got.shape == (6, 32)
    logp = np.asarray(jax.nn.log_softmax(model(batch.tokens), -1))
    toks = np.asarray(batch.tokens)
    want = np.take_along_axis(logp[:, 15:47], toks[:, 16:48, None], axis=-1)[..., 0]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_smoke_run_in_process(tmp_path):
    out = tmp_path / "bench.json"
    rec = bench.main(TINY_FLAGS + ["--seq", "64,96", "--ref-seq", "64", "--prompt", "16", "--chunk", "32",
                                   "--remat", "dots", "--ceiling-n", "128", "--warmup", "1", "--repeats", "2",
                                   "--skip-generation", "--in-process", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["partial"] is False and saved["matmul_flops"] > 0
    rows = saved["rows"]
    got = [(r["phase"], r["impl"], r["T"]) for r in rows]
    assert got == [("update", "jax", 64), ("update", "torch", 64), ("update", "jax", 96), ("update", "torch", 96),
                   ("reference", "jax", 64), ("reference", "torch", 64)]
    for r in rows:
        assert "error" not in r["result"], r["result"]
        assert r["tokens_per_s"] == pytest.approx(6 * r["T"] / r["result"]["step_s"])
        assert 0 < r["MFU"] and np.isfinite(r["MFU"])
    for r in rows:
        if r["impl"] == "jax":
            torch_row = next(o for o in rows if o["impl"] == "torch" and o["phase"] == r["phase"] and o["T"] == r["T"])
            assert r["ratio"] == pytest.approx(r["tokens_per_s"] / torch_row["tokens_per_s"])
            assert r["notes"].endswith("*")
    # Same loss formula in both implementations: random init, random advantages, and a
    # k3 KL against the same reference log-probs dominate; both land near one value.
    jl = [r["result"]["loss"] for r in rows if r["phase"] == "update" and r["impl"] == "jax"]
    tl = [r["result"]["loss"] for r in rows if r["phase"] == "update" and r["impl"] == "torch"]
    np.testing.assert_allclose(jl, tl, rtol=0.1)
    assert set(rec["best"]) == {"update", "reference"}


def test_failed_worker_is_a_row_not_a_crash():
    res = run_worker("jax_update", Spec(seq=32, prompt=8, remat="bogus", model=TINY), timeout_s=120)
    assert res["error"] == "error" and "remat" in res["detail"]
    ok = run_worker("ceiling_torch", Spec(seq=32, prompt=8, ceiling_n=64, model=TINY), timeout_s=120)
    assert ok["matmul_n"] == 64 and ok["matmul_flops"] > 0


def test_cli_rejects_unknown_variants():
    with pytest.raises(SystemExit):
        bench.parse_args(["--remat", "some"])
    with pytest.raises(SystemExit):  # removed: it had one value, the trainer's own forward
        bench.parse_args(["--forward", "trainer"])
    args = bench.parse_args(["--skip-generation", "--seq", "1024", "--remat", "dots,full", "--chunk", "512,1024"])
    assert args.phase_list == ["update", "reference"]
    kinds = [(p, f["remat"] if k.startswith("jax_update") else None, f.get("chunk")) for p, k, f in bench.plan(args)]
    assert kinds.count(("update", "dots", 512)) == 1 and kinds.count(("update", "full", 1024)) == 1


def test_update_over_devices_reports_scaling(tmp_path):
    """--devices 1,2: the JAX update on one CPU device and on an FSDP mesh of two (8 virtual
    CPU devices in the test process); the two-device row does twice the rows and is compared
    with the one-device row, not with PyTorch."""
    rec = bench.main(TINY_FLAGS + ["--phases", "update", "--seq", "64", "--prompt", "16", "--chunk", "32",
                                   "--remat", "none", "--devices", "1,2", "--parallel", "fsdp,data", "--impls", "jax", "--ceiling-n", "128",
                                   "--warmup", "1", "--repeats", "2", "--in-process", "--out", str(tmp_path / "b.json")])
    one, two, dp = rec["rows"]
    assert dp["devices"] == 2 and "data" in dp["notes"] and dp["scaling"] > 0
    assert (one["devices"], two["devices"]) == (1, 2)
    for r in (one, two):
        assert "error" not in r["result"], r["result"]
    assert two["tokens_per_s"] == pytest.approx(12 * 64 / two["result"]["step_s"])
    assert two["scaling"] == pytest.approx(two["tokens_per_s"] / one["tokens_per_s"])
    assert "devices=2" in two["notes"] and "ratio" not in two
    # Same data-parallel objective: the 12-row loss is of the same magnitude as the 6-row one.
    np.testing.assert_allclose(two["result"]["loss"], one["result"]["loss"], rtol=0.5)


def test_more_devices_than_the_machine_has_is_a_row_error():
    res = run_worker("jax_update", Spec(seq=32, prompt=8, devices=64, model=TINY), in_process=True)
    assert res["error"] == "error" and "devices=64" in res["detail"]
