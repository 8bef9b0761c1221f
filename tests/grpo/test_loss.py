"""grpo_loss: gradient accumulation, the on-policy case, aggregations and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openrs_jax.grpo import LOSS_TYPES, grpo_loss, sequence_weights

P, G, T = 3, 4, 9
B = P * G
LENGTHS = np.array([9, 2, 5, 9, 1, 3, 9, 4, 7, 9, 2, 6])


def _batch():
    k = jax.random.split(jax.random.PRNGKey(3), 5)
    logps = -jnp.abs(jax.random.normal(k[0], (B, T))) - 0.1
    old = logps + 0.3 * jax.random.normal(k[1], (B, T))
    ref = logps + 0.2 * jax.random.normal(k[2], (B, T))
    samp = old + 0.2 * jax.random.normal(k[3], (B, T))
    adv = jax.random.normal(k[4], (B,))
    mask = (jnp.arange(T)[None, :] < jnp.asarray(LENGTHS)[:, None]).astype(jnp.float32)
    return logps, old, ref, samp, adv, mask


KW = dict(
    beta=0.04, epsilon_low=0.2, epsilon_high=0.28, num_generations=G, max_completion_length=12
)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize(
    "extra",
    [{}, {"importance_sampling_level": "sequence"}, {"sampling_is_mode": "token_truncate"}],
    ids=["token", "gspo", "is"],
)
def test_micro_batches_sum_to_the_full_batch(loss_type, extra):
    logps, old, ref, samp, adv, mask = _batch()
    kw = dict(KW, loss_type=loss_type, **extra)
    samp = samp if "sampling_is_mode" in extra else None

    def full(lp):
        return grpo_loss(lp, old, ref, adv, mask, sampling_logps=samp, **kw)[0]

    weights = sequence_weights(
        mask, loss_type=loss_type, num_generations=G, max_completion_length=12
    )

    def accumulated(lp):
        total = 0.0
        bounds = (0, 1, 6, 11, B)  # uneven micro-batches that cut through groups
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rows = slice(lo, hi)
            total += grpo_loss(
                lp[rows],
                old[rows],
                ref[rows],
                adv[rows],
                mask[rows],
                sampling_logps=None if samp is None else samp[rows],
                seq_weights=weights[rows],
                **kw,
            )[0]
        return total

    want, want_grad = jax.jit(jax.value_and_grad(full))(logps)
    got, got_grad = jax.jit(jax.value_and_grad(accumulated))(logps)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6, atol=1e-7)
    assert np.abs(np.asarray(want_grad)).max() > 1e-3


def test_aggregations_by_hand():
    """Each loss_type is the stated average of the per-token loss (here ℓ = −A, on-policy)."""
    logps, _, _, _, adv, mask = _batch()
    m = np.asarray(mask, np.float64)  # float64 reference: the signed sums below cancel
    a = np.asarray(adv, np.float64)[:, None] * m  # Σ_t m·ℓ per row is −Σ_t m·A
    rows, n = a.sum(-1), m.sum(-1)
    want = {
        "grpo": np.mean(rows / np.maximum(n, 1)),
        "bnpo": rows.sum() / n.sum(),
        "dapo": rows.sum() / n.sum(),
        "dr_grpo": rows.sum() / (B * 12),
        "openrs": np.mean(rows.reshape(P, G).sum(-1) / n.reshape(P, G).sum(-1)),
    }
    for loss_type, value in want.items():
        loss, _ = grpo_loss(logps, None, None, adv, mask, beta=0.0, epsilon_low=0.2,
                            loss_type=loss_type, num_generations=G, max_completion_length=12)
        np.testing.assert_allclose(loss, -value, rtol=1e-6, atol=1e-7, err_msg=loss_type)


def test_on_policy_ratio_is_one_with_the_policy_gradient():
    """old=None: ρ ≡ 1, so nothing is clipped and ∇L = −w_b·m·A (plus the KL term)."""
    logps, _, _, _, adv, mask = _batch()
    def loss_fn(lp):
        return grpo_loss(lp, None, None, adv, mask, beta=0.0, epsilon_low=0.2, loss_type="grpo")

    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(logps)
    w = sequence_weights(mask, loss_type="grpo")
    np.testing.assert_allclose(grad, -(w * adv)[:, None] * mask, rtol=1e-6, atol=1e-8)
    assert float(metrics["clip_ratio/region_mean"]) == 0.0
    # Explicit old == logps gives the same value and gradient.
    np.testing.assert_allclose(
        jax.grad(lambda lp: grpo_loss(lp, jax.lax.stop_gradient(lp), None, adv, mask, beta=0.0,
                                      epsilon_low=0.2, loss_type="grpo")[0])(logps),
        grad, rtol=1e-6, atol=1e-8)


def test_kl_term_and_metrics():
    logps, _, ref, _, adv, mask = _batch()
    kw = dict(epsilon_low=0.2, loss_type="bnpo")
    with_kl, metrics = grpo_loss(logps, None, ref, adv, mask, beta=0.1, **kw)
    without, _ = grpo_loss(logps, None, None, adv, mask, beta=0.0, **kw)
    k3 = np.exp(ref - logps) - (ref - logps) - 1
    kl_mean = (k3 * mask).sum() / mask.sum()
    np.testing.assert_allclose(metrics["kl"], kl_mean, rtol=1e-6)
    np.testing.assert_allclose(with_kl - without, 0.1 * kl_mean, rtol=1e-5)
    assert float(metrics["completion_tokens"]) == LENGTHS.sum()
    np.testing.assert_allclose(metrics["advantages/mean"], np.mean(adv), rtol=1e-6)


def test_clipping_cuts_the_gradient():
    """A token with ρ > 1 + ε and A > 0 (or ρ < 1 − ε and A < 0) contributes no gradient."""
    logps = jnp.zeros((2, 1))
    old = jnp.log(jnp.array([[1 / 1.5], [1 / 0.5]]))  # ρ = 1.5 and 0.5
    adv = jnp.array([1.0, -1.0])
    mask = jnp.ones((2, 1))
    fn = lambda lp: grpo_loss(lp, old, None, adv, mask, beta=0.0, epsilon_low=0.2,
                              loss_type="grpo")
    (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logps)
    np.testing.assert_allclose(grad, 0.0)
    np.testing.assert_allclose(loss, -(1.2 - 0.8) / 2, rtol=1e-6)
    assert float(metrics["clip_ratio/high_mean"]) == 0.5
    assert float(metrics["clip_ratio/low_mean"]) == 0.5
    assert float(metrics["clip_ratio/region_mean"]) == 1.0


def test_per_sequence_clip_extremes():
    """TRL's clip_ratio/low_min and /high_max: the least low-clipped and the most high-clipped
    sequence's fraction of clipped tokens; a sequence without tokens does not count."""
    ratios = jnp.array([[0.5, 0.5, 1.0, 1.0],    # A < 0: 2 of 3 tokens low-clipped
                        [0.5, 1.0, 1.0, 1.0],    # A < 0: 1 of 4
                        [1.5, 1.5, 1.5, 1.0],    # A > 0: 3 of 4 high-clipped
                        [1.5, 1.5, 1.5, 1.5]])   # no tokens (masked out)
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], jnp.float32)
    adv = jnp.array([-1.0, -1.0, 1.0, 1.0])
    logps = jnp.zeros((4, 4))
    _, m = grpo_loss(logps, -jnp.log(ratios), None, adv, mask, beta=0.0, epsilon_low=0.2, loss_type="bnpo")
    # Low: per sequence 2/3, 1/4, 0 (the positive row) -> min 0; high: 0, 0, 3/4 -> max 3/4.
    np.testing.assert_allclose(m["clip_ratio/low_min"], 0.0)
    np.testing.assert_allclose(m["clip_ratio/high_max"], 0.75)
    _, m = grpo_loss(logps[:2], -jnp.log(ratios[:2]), None, adv[:2], mask[:2], beta=0.0, epsilon_low=0.2,
                     loss_type="bnpo")
    np.testing.assert_allclose(m["clip_ratio/low_min"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["clip_ratio/high_max"], 0.0)
    _, m = grpo_loss(logps, -jnp.log(ratios), None, adv, jnp.zeros_like(mask), beta=0.0, epsilon_low=0.2,
                     loss_type="bnpo")
    assert np.isnan(m["clip_ratio/low_min"]) and np.isnan(m["clip_ratio/high_max"])


def test_loss_jits():
    logps, old, ref, samp, adv, mask = _batch()
    kw = dict(KW, loss_type="openrs", sampling_is_mode="sequence_truncate")
    fn = jax.jit(lambda lp: grpo_loss(lp, old, ref, adv, mask, sampling_logps=samp, **kw))
    loss, metrics = fn(logps)
    assert np.isfinite(float(loss)) and "sampling/importance_sampling_ratio/mean" in metrics


def test_errors_name_the_problem():
    logps, old, ref, _, adv, mask = _batch()
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logps, old, ref, adv, mask, beta=0.0, epsilon_low=0.2, loss_type="ppo")
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.04, epsilon_low=0.2, loss_type="grpo")
    with pytest.raises(ValueError, match="num_generations"):
        grpo_loss(logps, old, ref, adv, mask, beta=0.0, epsilon_low=0.2, loss_type="openrs",
                  num_generations=5)
    with pytest.raises(ValueError, match="importance_sampling_level"):
        grpo_loss(logps, old, ref, adv, mask, beta=0.0, epsilon_low=0.2, loss_type="grpo",
                  importance_sampling_level="batch")
    with pytest.raises(ValueError, match="sampling_is_mode"):
        grpo_loss(logps, old, ref, adv, mask, beta=0.0, epsilon_low=0.2, loss_type="grpo",
                  sampling_logps=old, sampling_is_mode="token_clip")
