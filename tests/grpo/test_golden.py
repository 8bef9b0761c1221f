"""openrs_jax.grpo against TRL's formulas (tests/golden/grpo_golden.json, made by
tests/golden/make_grpo_golden.py in float64 PyTorch). Ours runs in float32."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.grpo import (
    group_advantages,
    grpo_loss,
    kl_k3,
    reward_stats,
    token_logprobs,
    token_logprobs_from_logits,
    weighted_reward_sum,
)

GOLDEN = json.loads(
    (pathlib.Path(__file__).parents[1] / "golden" / "grpo_golden.json").read_text()
)
TOL = dict(rtol=1e-6, atol=1e-6)  # float32 vs the float64 reference


def _f32(x):
    return jnp.asarray(np.asarray(x, np.float64), jnp.float32)


INPUTS = {k: np.asarray(v) for k, v in GOLDEN["inputs"].items()}
LOGITS = _f32(INPUTS["logits"])
TARGETS = jnp.asarray(INPUTS["targets"], jnp.int32)
MASK = _f32(INPUTS["mask"])
G = GOLDEN["shapes"]["G"]


def test_weighted_reward_sum_skips_nan():
    rewards = weighted_reward_sum(_f32(INPUTS["rewards_per_func"]), _f32(INPUTS["reward_weights"]))
    np.testing.assert_allclose(rewards, GOLDEN["rewards"], **TOL)
    assert np.isnan(INPUTS["rewards_per_func"]).any()  # the case is exercised


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_and_reward_stats(scale):
    rewards = _f32(GOLDEN["rewards"])
    np.testing.assert_allclose(
        group_advantages(rewards, G, scale), GOLDEN["advantages"][scale], **TOL
    )
    stats = reward_stats(rewards, G, scale)
    for name, want in GOLDEN["reward_stats"][scale].items():
        np.testing.assert_allclose(stats[name], want, err_msg=name, **TOL)


def test_unscorable_rows_are_nan_in_the_reward_sum():
    per_func = _f32(INPUTS["rewards_per_func_unscorable"])
    rewards = weighted_reward_sum(per_func, _f32(INPUTS["reward_weights"]))
    np.testing.assert_allclose(rewards, GOLDEN["rewards_unscorable"], equal_nan=True, **TOL)
    assert np.isnan(rewards).sum() == 8  # rows 1, 4-6, 8-11; row 3 is only partly None


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_unscorable_rows_leave_the_baseline_and_get_zero_advantage(scale):
    """TRL >= 1.6: an all-None row is out of its group's mean and std, advantage 0; a group with
    fewer than two scorable rows has no std, so all its advantages are 0."""
    rewards = _f32(GOLDEN["rewards_unscorable"])
    adv = group_advantages(rewards, G, scale)
    np.testing.assert_allclose(adv, GOLDEN["advantages_unscorable"][scale], **TOL)
    assert np.all(np.asarray(adv)[[1, 4, 5, 6, 7, 8, 9, 10, 11]] == 0.0)
    stats = reward_stats(rewards, G, scale)
    for name, want in GOLDEN["reward_stats_unscorable"][scale].items():
        np.testing.assert_allclose(stats[name], want, err_msg=name, **TOL)


@pytest.mark.parametrize("temperature", ["1.0", "0.7"])
def test_logprobs_and_entropy(temperature):
    temp = float(temperature)
    want_logps, want_ent = GOLDEN["logps"][temperature], GOLDEN["entropy"][temperature]
    logps, ent = token_logprobs_from_logits(LOGITS, TARGETS, temp, return_entropy=True)
    np.testing.assert_allclose(logps, want_logps, **TOL)
    np.testing.assert_allclose(ent, want_ent, **TOL)
    # The chunked path with D = V and lm_head = I sees exactly these logits.
    eye = jnp.eye(LOGITS.shape[-1], dtype=jnp.float32)
    logps, ent = token_logprobs(
        LOGITS, eye, TARGETS, temperature=temp, chunk_size=3, return_entropy=True
    )
    np.testing.assert_allclose(logps, want_logps, **TOL)
    np.testing.assert_allclose(ent, want_ent, **TOL)


def test_kl_k3():
    logps = token_logprobs_from_logits(LOGITS, TARGETS)
    np.testing.assert_allclose(kl_k3(logps, _f32(INPUTS["ref_logps"])), GOLDEN["kl"], **TOL)


def _loss_from_logits(logits, cfg, *, chunked):
    temp = cfg["temperature"]
    if chunked:
        eye = jnp.eye(logits.shape[-1], dtype=jnp.float32)
        logps, ent = token_logprobs(
            logits, eye, TARGETS, temperature=temp, chunk_size=4, return_entropy=True
        )
    else:
        logps, ent = token_logprobs_from_logits(logits, TARGETS, temp, return_entropy=True)
    return grpo_loss(
        logps,
        _f32(INPUTS["old_logps"]) if cfg["use_old"] else None,
        _f32(INPUTS["ref_logps"]) if cfg["beta"] != 0 else None,
        _f32(INPUTS["advantages"]),
        MASK,
        beta=cfg["beta"],
        epsilon_low=cfg["epsilon_low"],
        epsilon_high=cfg["epsilon_high"],
        loss_type=cfg["loss_type"],
        num_generations=G,
        max_completion_length=cfg["max_completion_length"],
        importance_sampling_level=cfg["importance_sampling_level"],
        sampling_logps=_f32(INPUTS["sampling_logps"]) if cfg["sampling_is_mode"] else None,
        sampling_is_mode=cfg["sampling_is_mode"] or "sequence_mask",
        sampling_is_cap=cfg["sampling_is_cap"],
        sampling_is_cap_min=cfg["sampling_is_cap_min"],
        entropy=ent,
    )


# Every case through the naive log-probs; a few through the chunked path too (test_logprobs.py
# checks chunked == naive on its own, so all of them would add compile time, not coverage).
CHUNKED_CASES = ["openrs", "openrs_temp07", "dapo_is_sequence_mask", "grpo_gspo"]


@pytest.mark.parametrize(
    "case, chunked",
    [(c, False) for c in sorted(GOLDEN["cases"])] + [(c, True) for c in CHUNKED_CASES],
)
def test_loss_metrics_and_grad(case, chunked):
    want = GOLDEN["cases"][case]
    cfg = want["config"]
    # jit: one compilation per case is much cheaper than eager dispatch of every primitive.
    (loss, metrics), grad = jax.jit(
        jax.value_and_grad(lambda x: _loss_from_logits(x, cfg, chunked=chunked), has_aux=True)
    )(LOGITS)
    np.testing.assert_allclose(loss, want["loss"], **TOL)
    for name, value in want["metrics"].items():
        np.testing.assert_allclose(metrics[name], value, err_msg=name, **TOL)
    np.testing.assert_allclose(grad, want["grad_logits"], **TOL)
    assert np.abs(np.asarray(want["grad_logits"])).max() > 1e-3  # a gradient worth comparing
