"""The real CLI end to end with a tiny random model: the jax engine, a kill and a resume, and
the vllm engine with a server the CLI launches. A random model cannot answer, so scores are
(near) zero; the point is that every stage runs on real benchmark data and writes what it
should."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

LIMIT, SAMPLES, NEW = 4, 2, 8
BENCHES = ("aime24", "amc23")
TIMING_KEYS = {"time_s", "generate_s", "grade_s", "generated_tokens", "resumed_problems"}


def cli_args(model_dir, data_dir, out_dir, *extra):
    return [
        sys.executable, "-m", "openrs_jax.evaluate", "--model", str(model_dir), "--benchmarks", ",".join(BENCHES),
        "--samples", str(SAMPLES), "--data-dir", str(data_dir), "--limit", str(LIMIT),
        "--max-new-tokens", str(NEW), "--output", str(out_dir), "--seed", "3", "--chunk-size", "1",
        "--grading-workers", "1", *extra,
    ]  # fmt: skip


JAX_ARGS = ("--engine", "jax", "--dtype", "float32", "--prompt-bucket", "512")


def run_cli(args, timeout=300):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"CLI failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def read_records(out_dir, name):
    path = out_dir / "records" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_outputs(out_dir, shared_data):
    results = json.loads((out_dir / "results.json").read_text())
    assert results["samples"] == SAMPLES and results["benchmarks_run"] == list(BENCHES)
    problems = {n: [json.loads(x) for x in (shared_data / f"{n}.jsonl").read_text().splitlines()[:LIMIT]]
                for n in BENCHES}
    for name in BENCHES:
        s = results["benchmarks"][name]
        assert (s["n"], s["k"], s["complete"]) == (LIMIT, SAMPLES, True)
        assert s["avg@k"] <= 0.25 and s["pass@1"] <= 0.25  # a random model: near zero
        records = read_records(out_dir, name)
        assert [r["index"] for r in records] == list(range(LIMIT))
        for r, row in zip(records, problems[name]):
            assert r["id"] == row["id"] and r["gold"] == row["answer"]
            assert row["problem"] in r["prompt"] and "Solve the following math problem" in r["prompt"]
            assert len(r["completions"]) == len(r["correct"]) == len(r["extracted"]) == SAMPLES
            assert all(1 <= n <= NEW for n in r["num_tokens"])
            assert set(r["finish_reasons"]) <= {"stop", "length"}
    md = (out_dir / "results.md").read_text()
    assert "| Open-RS3 (50 steps) | 46.7 | 84.4 | 72.5 | 26.8 | 51.3 | 56.3 |" in md
    assert f"avg@{SAMPLES} ± se |" in md
    return results


@pytest.fixture(scope="module")
def reference(tiny_eval_model, shared_data, tmp_path_factory):
    """One uninterrupted jax-engine run."""
    out = tmp_path_factory.mktemp("eval_ref") / "out"
    proc = run_cli(cli_args(tiny_eval_model.hf_dir, shared_data, out, *JAX_ARGS))
    return out, proc


def test_jax_engine_end_to_end(reference, shared_data):
    out, proc = reference
    results = check_outputs(out, shared_data)
    assert "| hf pass@1 |" in proc.stdout
    # Progress per benchmark (stdout is a pipe: plain lines, ending with the full count).
    for name in BENCHES:
        assert f"eval {name}: {LIMIT * SAMPLES}/{LIMIT * SAMPLES} [" in proc.stdout
    # lighteval's results layout beside ours.
    (lighteval,) = (out / "results" / "hf").glob("results_*.json")
    data = json.loads(lighteval.read_text())
    for name in BENCHES:
        s = results["benchmarks"][name]
        assert data["results"][f"custom|{name}|0"] == {"extractive_match": s["pass@1"],
                                                       "extractive_match_stderr": s["pass@1_se"]}
    config = json.loads((out / "run_config.json").read_text())
    assert (config["samples"], config["seed"], config["temperature"], config["top_p"]) == (SAMPLES, 3, 0.6, 0.95)
    assert results["settings"]["engine"] == "jax"


def test_killed_run_resumes_to_the_same_records(reference, tiny_eval_model, shared_data, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "out"
    args = cli_args(tiny_eval_model.hf_dir, shared_data, out, *JAX_ARGS)
    first = out / "records" / f"{BENCHES[0]}.jsonl"
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not (first.exists() and first.read_text().count("\n") >= 1):
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no chunk written in time"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    before = {n: read_records(out, n) for n in BENCHES}
    n_before = sum(len(v) for v in before.values())
    assert 1 <= n_before < LIMIT * len(BENCHES), "the kill must land mid-run"
    assert not (out / "results.json").exists()

    proc = run_cli(args)
    assert f"resuming: {len(before[BENCHES[0]])}/{LIMIT} problems already recorded" in proc.stdout
    results = check_outputs(out, shared_data)
    reference_results = json.loads((ref_out / "results.json").read_text())
    for name in BENCHES:
        after = read_records(out, name)
        # Nothing evaluated twice, and the records are those of the uninterrupted run.
        assert after == read_records(ref_out, name)
        assert after[: len(before[name])] == before[name]
        s = results["benchmarks"][name]
        assert s["resumed_problems"] == len(before[name])
        assert s["generated_tokens"] == sum(sum(r["num_tokens"]) for r in after[len(before[name]):])
        ref = reference_results["benchmarks"][name]
        assert {k: v for k, v in s.items() if k not in TIMING_KEYS} == {
            k: v for k, v in ref.items() if k not in TIMING_KEYS
        }


@pytest.mark.slow  # 45 s on 2 CPU cores (80 when busy): two JAX processes
def test_two_processes_write_the_records_of_one(reference, tiny_eval_model, shared_data, tmp_path):
    """2 processes x 4 CPU devices (a data-parallel mesh over both) give the 1-process records;
    process 0 alone logs and writes."""
    from multiprocess_utils import launch

    ref_out, _ = reference
    out = tmp_path / "out"
    args = cli_args(tiny_eval_model.hf_dir, shared_data, out, *JAX_ARGS)[3:]  # after "python -m module"
    group = launch(args, processes=2, devices=4, log_dir=tmp_path / "logs", module="openrs_jax.evaluate")
    assert group.wait(600) == [0, 0], group.output(0)[-3000:] + group.output(1)[-3000:]
    for name in BENCHES:
        assert read_records(out, name) == read_records(ref_out, name)
    results, want = (json.loads((d / "results.json").read_text()) for d in (out, ref_out))
    for name in BENCHES:
        assert {k: v for k, v in results["benchmarks"][name].items() if k not in TIMING_KEYS} == {
            k: v for k, v in want["benchmarks"][name].items() if k not in TIMING_KEYS}
    assert "openrs_jax.evaluate:" in group.output(0) and "openrs_jax.evaluate:" not in group.output(1)


def test_resume_with_other_settings_is_refused(reference, tiny_eval_model, shared_data):
    out, _ = reference
    args = cli_args(tiny_eval_model.hf_dir, shared_data, out, *JAX_ARGS)
    args[args.index("--samples") + 1] = "3"
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "holds an evaluation with other settings (samples: 2 -> 3)" in proc.stderr


def test_argument_errors(tiny_eval_model, shared_data, tmp_path):
    base = cli_args(tiny_eval_model.hf_dir, shared_data, tmp_path / "o")
    proc = subprocess.run(base + ["--step", "5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--step is for run directories" in proc.stderr
    proc = subprocess.run(base + ["--engine", "vllm"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "exactly one of --vllm-url URL or --vllm-launch" in proc.stderr
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.run(cli_args(run_dir, shared_data, tmp_path / "o2"), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0  # an empty run directory has no checkpoint to load
    if importlib.util.find_spec("openrs_jax.checkpoint") is None:
        assert "read as a training run directory" in proc.stderr


@pytest.mark.vllm
def test_vllm_engine_end_to_end(vllm_python, tiny_eval_model, shared_data, tmp_path):
    out = tmp_path / "out"
    vllm_args = "--dtype float32 --max-model-len 2048 --max-num-seqs 16"
    proc = run_cli(
        cli_args(tiny_eval_model.hf_dir, shared_data, out, "--engine", "vllm", "--vllm-launch", "--vllm-python",
                 vllm_python, "--vllm-args", vllm_args, "--vllm-startup-timeout", "240"),
        timeout=420,
    )
    results = check_outputs(out, shared_data)
    assert results["settings"]["engine"] == "vllm"
    assert "starting vLLM" in proc.stdout and (out / "vllm_server.log").exists()
    # The launched server was stopped: its log says so or its process is gone.
    port_line = next(line for line in proc.stdout.splitlines() if "starting vLLM" in line)
    port = port_line.split("--port ")[1].split()[0]
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0, "vLLM server still listening after the CLI exited"


@pytest.mark.slow
def test_training_run_directory(shared_data, tmp_path):
    """--model RUN_DIR --step N: the checkpoint of a (1-step) quickstart run, through
    openrs_jax.checkpoint.load_model_from_run; its own tokenizer (the word-level quickstart
    one) renders the prompts."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the trainer's single CPU device
    run = tmp_path / "run"
    train = [sys.executable, "-m", "openrs_jax.train", "--output-dir", str(run), "--set", "optim.max_steps=1",
             "--set", "checkpoint.save_steps=1", "--set", "model.overrides.max_position_embeddings=1024"]
    proc = subprocess.run(train, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    args = [sys.executable, "-m", "openrs_jax.evaluate", "--model", str(run), "--step", "1", "--benchmarks", "amc23",
            "--data-dir", str(shared_data), "--limit", "2", "--max-new-tokens", "4", "--dtype", "float32",
            "--grading-workers", "0", "--output", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| run-step1 pass@1 |" in proc.stdout
    config = json.loads((out / "run_config.json").read_text())
    assert config["step"] == 1 and config["model"] == str(run.resolve())
    results = json.loads((out / "results.json").read_text())
    assert results["benchmarks"]["amc23"]["n"] == 2
    records = read_records(out, "amc23")
    assert records[0]["prompt"].startswith("<bos><|user|>Solve")  # the quickstart chat template
    proc = subprocess.run(args[:-4] + ["--step", "7", "--output", str(tmp_path / "o7")], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "no checkpoint for step 7" in proc.stderr


def test_bad_benchmark_data_fails_before_the_model_loads(tmp_path):
    """The benchmark files are read and checked first: a broken one is reported even when the
    model directory could not be loaded at all (its config.json is not JSON)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("not json")
    data = tmp_path / "data"
    data.mkdir()
    (data / "aime24.jsonl").write_text('{"id": "a", "problem": "1+1", "answer": "2"}\n{broken\n')
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.evaluate", "--model", str(model), "--benchmarks", "aime24",
         "--data-dir", str(data), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: ValueError: {data / 'aime24.jsonl'}:2 is not valid JSON")
