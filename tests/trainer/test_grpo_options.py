"""`grpo.mask_truncated_completions` and `grpo.drop_zero_std_groups` through the training CLI.

The tiny quickstart, one step, completions of one token (`max_completion_length=1`), so a
completion is truncated unless its one token is EOS, and 64 prompts x 8 so that the batch
holds groups with truncated and untruncated rows of different rewards. All runs share the
seed, so they sample the same first batch.

At step 1 the policy is the reference (k3 = 0) and ρ ≡ 1, so the logged loss of loss_type
"openrs" is, with n_b the loss tokens of row b (here 1, or 0 for a masked row) and A_b the
logged advantage:

    L = (1/P) Σ_g Σ_{b∈g} n_b·(−A_b) / max(Σ_{b∈g} n_b, 1)
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from openrs_jax.grpo import group_has_signal

REPO = pathlib.Path(__file__).resolve().parents[2]
P, G = 64, 8
COMMON = [
    "optim.max_steps=1", f"optim.num_prompts_per_step={P}", f"grpo.num_generations={G}",
    "rollout.max_completion_length=1", "log.logging_steps=1", "checkpoint.save_steps=1000",
]


def _train(out: pathlib.Path, *sets: str):
    args = [sys.executable, "-m", "openrs_jax.train", "--config", "configs/quickstart.yaml", "--output-dir", str(out)]
    for s in [*COMMON, *sets]:
        args += ["--set", s]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)  # the CLI runs on the real (single) CPU device
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics] == [1] and len(rows) == P * G
    return metrics[0], rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("grpo_options")
    return {
        "plain": _train(base / "plain"),
        "masked": _train(base / "masked", "grpo.mask_truncated_completions=true"),
        "dynamic": _train(base / "dynamic", "grpo.drop_zero_std_groups=true"),
    }


def _openrs_loss(rows, tokens):
    adv = np.array([r["advantage"] for r in rows]).reshape(P, G)
    n = np.asarray(tokens, np.float64).reshape(P, G)
    return float(np.mean((n * -adv).sum(1) / np.maximum(n.sum(1), 1)))


@pytest.mark.slow
def test_masking_truncated_completions_takes_them_out_of_the_loss(runs):
    (plain_m, plain), (masked_m, masked) = runs["plain"], runs["masked"]
    key = lambda r: (r["prompt"], r["completion"], r["advantage"], r["truncated"])
    assert [key(r) for r in plain] == [key(r) for r in masked]  # same rollouts and advantages
    truncated = np.array([r["truncated"] for r in masked])
    assert 0 < truncated.sum() < truncated.size
    assert plain_m["completions/clipped_ratio"] == pytest.approx(truncated.mean())
    # Without the mask every row counts one token; with it a truncated row counts none.
    assert plain_m["loss"] == pytest.approx(_openrs_loss(plain, np.ones(P * G)), abs=1e-5)
    assert masked_m["loss"] == pytest.approx(_openrs_loss(masked, ~truncated), abs=1e-5)
    # The two differ (the case is exercised): groups mixing truncated and ended rows of
    # different advantages exist.
    assert abs(masked_m["loss"] - plain_m["loss"]) > 1e-3


@pytest.mark.slow
def test_dynamic_sampling_keeps_groups_with_signal_first(runs):
    (plain_m, plain), (dyn_m, dyn) = runs["plain"], runs["dynamic"]
    assert plain_m["num_completions_dropped"] == 0

    def signal(rows):
        rewards = np.array([r["rewards/exact_match"] for r in rows], np.float64)
        return group_has_signal(rewards, G)

    plain_signal, dyn_signal = signal(plain), signal(dyn)
    # A batch of P groups: those with signal first (in sampling order), then the top-up.
    k = int(dyn_signal.sum())
    assert dyn_signal[:k].all() and not dyn_signal[k:].any()
    assert k > plain_signal.sum()  # the extra rounds found more groups with signal
    dropped = dyn_m["num_completions_dropped"]
    assert dropped > 0 and dropped % (P * G) == 0  # whole extra rounds of P prompts
    if k < P:  # not enough: every extra round was sampled
        assert dropped == 3 * P * G
    # The first round's groups with signal open the batch, in their order.
    first = [r["prompt"] for g, r in enumerate(plain[::G]) if plain_signal[g]]
    assert [r["prompt"] for r in dyn[::G]][: len(first)] == first
    assert dyn_m["frac_reward_zero_std"] == pytest.approx(1 - k / P)
