"""The jitted update against direct computations: per-row log-probs on the right-padded
layout, exact gradient accumulation, the LR schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from openrs_jax.model import Qwen2, tiny
from openrs_jax.trainer.step import (
    LossSettings,
    build_logps_fn,
    build_train_batch,
    build_train_step,
    completion_logps,
    init_optimizer,
    lr_schedule,
)

G = 2


def _setup(seed=0):
    model = Qwen2(tiny(vocab_size=64), rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, 64, n).tolist() for n in (5, 2, 7)]  # P = 3
    b, c = len(prompts) * G, 6
    comp = rng.integers(3, 64, (b, c)).astype(np.int32)
    lengths = np.array([6, 3, 1, 4, 6, 2])
    mask = (np.arange(c)[None] < lengths[:, None]).astype(np.float32)
    adv = rng.standard_normal(b).astype(np.float32)
    return model, prompts, comp, mask, adv


# (16, 8): room to spare. (13, 8): T is exactly the longest prompt (7) + completion width (6),
# so the completion columns of long-prompt rows run past T and are clipped (masked) there.
@pytest.mark.parametrize("total,width", [(16, 8), (13, 8)])
def test_completion_logps_match_per_row_forward(total, width):
    model, prompts, comp, mask, adv = _setup()
    loss = LossSettings(num_generations=G, loss_type="openrs")
    batch = build_train_batch(prompts, comp, mask, adv, num_generations=G, pad_token_id=0, loss=loss,
                              total_length=total, completion_length=width)
    got = np.asarray(completion_logps(model, jax.tree.map(jnp.asarray, batch), loss))
    assert got.shape == (6, width) and np.isfinite(got).all()
    for row in range(6):
        n = int(mask[row].sum())
        seq = prompts[row // G] + comp[row, :n].tolist()
        logits = model(jnp.asarray([seq], jnp.int32))[0]
        logp = np.asarray(jax.nn.log_softmax(logits, -1))
        p = len(prompts[row // G])
        want = [logp[p - 1 + j, comp[row, j]] for j in range(n)]
        np.testing.assert_allclose(got[row, :n], want, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["openrs", "grpo", "dapo"])
def test_micro_batches_give_the_full_batch_update(loss_type):
    model, prompts, comp, mask, adv = _setup(1)
    loss = LossSettings(num_generations=G, loss_type=loss_type, beta=0.04, max_completion_length=8)
    graphdef, params = nnx.split(model, nnx.Param)[:2]
    sched = lr_schedule(1.0, 10, 0, "constant")
    # Plain SGD (lr 1): the parameter change is the gradient itself. (Adam's first step,
    # g / (|g| + ε), would amplify float rounding of near-zero gradients.)
    opt = optax.sgd(sched)
    batch = jax.tree.map(jnp.asarray, build_train_batch(prompts, comp, mask, adv, num_generations=G, pad_token_id=0,
                                                       loss=loss, total_length=16, completion_length=8))
    ref = build_logps_fn(graphdef, loss, 1)(params, batch) - 0.1  # a reference a little off the policy
    batch = batch.__class__(**{**batch.__dict__, "ref_logps": ref})
    outs = []
    for num_micro in (1, 2, 3):
        p = jax.tree.map(jnp.copy, params)
        o = init_optimizer(opt, p)
        p, o, m = build_train_step(graphdef, opt, sched, loss, num_micro)(p, o, batch)
        outs.append((p, m))
    for p, m in outs[1:]:
        assert m["loss"] == pytest.approx(float(outs[0][1]["loss"]), rel=1e-5, abs=1e-7)
        assert m["grad_norm"] == pytest.approx(float(outs[0][1]["grad_norm"]), rel=1e-5)
        for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(p)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_cosine_with_min_lr_schedule_matches_hf():
    """HF get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1), 50 warm-up of 500."""
    sched = lr_schedule(1e-6, 500, 50, "cosine_with_min_lr", 0.1)
    for step in (0, 1, 25, 49, 50, 51, 200, 499, 500):
        if step < 50:
            want = 1e-6 * step / 50
        else:
            progress = (step - 50) / 450
            want = 1e-6 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
        assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-14)


def test_train_batch_rejects_a_total_length_that_cuts_a_row():
    _, prompts, comp, mask, adv = _setup()
    loss = LossSettings(num_generations=G)
    with pytest.raises(ValueError, match="exceed total_length 12"):
        build_train_batch(prompts, comp, mask, adv, num_generations=G, pad_token_id=0, loss=loss,
                          total_length=12, completion_length=8)


def test_length_buckets():
    from openrs_jax.trainer.grpo_step import length_buckets

    # openrs3: prompts <= 512, completions <= 3584: 512-token buckets.
    assert length_buckets(300, 3584, 512, 3584) == (4096, 3584)
    assert length_buckets(300, 3000, 512, 3584) == (3584, 3072)
    assert length_buckets(100, 3000, 512, 3584) == (3584, 3072)
    assert length_buckets(513, 1, 512, 3584) == (1024, 512)
    # A small run is one bucket: the configured maxima are smaller than 512.
    assert length_buckets(5, 3, 16, 8) == (24, 8)
    assert length_buckets(16, 8, 16, 8) == (24, 8)


def test_a_non_finite_update_is_not_applied():
    """Finite loss and gradient but a NaN learning rate (or any NaN in the optimizer's output):
    the step is skipped, parameters and optimizer state are left exactly as they were."""
    from openrs_jax.trainer.step import make_optimizer

    model, prompts, comp, mask, adv = _setup(2)
    loss = LossSettings(num_generations=G, loss_type="openrs", beta=0.0)
    graphdef, params = nnx.split(model, nnx.Param)[:2]
    batch = jax.tree.map(jnp.asarray, build_train_batch(prompts, comp, mask, adv, num_generations=G, pad_token_id=0,
                                                       loss=loss, total_length=16, completion_length=8))
    # A NaN learning rate (every leaf's update NaN), a finite one, and a finite one with one NaN
    # in one leaf of Adam's first moment (only that leaf's update NaN: the check counts finite
    # leaves, and one short of all is not finite).
    for lr, nan_moment, applied in ((jnp.nan, False, 0.0), (1e-3, False, 1.0), (1e-3, True, 0.0)):
        sched = lambda count, lr=lr: jnp.float32(lr) + 0.0 * count
        opt = make_optimizer(sched)
        p0 = jax.tree.map(jnp.copy, params)
        o0 = init_optimizer(opt, p0)
        if nan_moment:
            paths, treedef = jax.tree_util.tree_flatten_with_path(o0)
            first_mu = next(i for i, (path, x) in enumerate(paths) if "mu" in jax.tree_util.keystr(path) and x.ndim)
            o0 = jax.tree.unflatten(treedef, [x.at[(0,) * x.ndim].set(jnp.nan) if i == first_mu else x
                                              for i, (_, x) in enumerate(paths)])
        want_p = [np.asarray(x) for x in jax.tree.leaves(p0)]
        p, o, m = build_train_step(graphdef, opt, sched, loss, 1)(p0, o0, batch)
        assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
        assert float(m["update_applied"]) == applied
        leaves = [np.asarray(x) for x in jax.tree.leaves(p)]
        assert all(np.isfinite(x).all() for x in leaves)
        if not applied:
            for a, b in zip(want_p, leaves):
                np.testing.assert_array_equal(a, b)


def test_one_default_for_the_sampler_importance_sampling():
    """The config's defaults are the loss function's defaults (TRL's), and reach the loss."""
    import inspect

    from openrs_jax.config import load_config
    from openrs_jax.grpo import grpo_loss
    from openrs_jax.trainer.step import loss_settings

    sig = inspect.signature(grpo_loss).parameters
    cfg = load_config("openrs3")
    settings = loss_settings(cfg)
    assert settings.sampling_is_mode == sig["sampling_is_mode"].default == LossSettings().sampling_is_mode
    assert settings.sampling_is_cap == sig["sampling_is_cap"].default == LossSettings().sampling_is_cap
    gspo = loss_settings(load_config("openrs3", ["grpo.importance_sampling_level=sequence",
                                                 "grpo.vllm_importance_sampling_mode=token_truncate"]))
    assert (gspo.importance_sampling_level, gspo.sampling_is_mode) == ("sequence", "token_truncate")


def test_gspo_level_reaches_the_update():
    """importance_sampling_level=sequence (GSPO) changes the gradient the update applies, and it
    equals the gradient of grpo_loss at that level computed directly. Off-policy (old log-probs
    apart from the current ones, μ > 1): on-policy both levels have the same gradient."""
    from openrs_jax import grpo

    model, prompts, comp, mask, adv = _setup(3)
    graphdef, params = nnx.split(model, nnx.Param)[:2]
    norms = {}
    for level in ("token", "sequence"):
        loss = LossSettings(num_generations=G, loss_type="grpo", beta=0.0, importance_sampling_level=level,
                            log_entropy=False)
        batch = jax.tree.map(jnp.asarray, build_train_batch(prompts, comp, mask, adv, num_generations=G,
                                                           pad_token_id=0, loss=loss, total_length=16,
                                                           completion_length=8))
        noise = jax.random.normal(jax.random.key(0), batch.completion_mask.shape) * 0.3
        batch = batch.__class__(**{**batch.__dict__,
                                   "old_logps": build_logps_fn(graphdef, loss, 1)(params, batch) + noise})
        sched = lr_schedule(0.0, 10, 0, "constant")
        opt = optax.sgd(sched)
        _, _, m = build_train_step(graphdef, opt, sched, loss, 1)(jax.tree.map(jnp.copy, params),
                                                                   init_optimizer(opt, params), batch)
        norms[level] = float(m["grad_norm"])

        def direct(p):
            lp = completion_logps(nnx.merge(graphdef, p), batch, loss)
            return grpo.grpo_loss(lp, batch.old_logps, None, batch.advantages, batch.completion_mask, beta=0.0,
                                  epsilon_low=0.2, loss_type="grpo", importance_sampling_level=level,
                                  seq_weights=batch.seq_weights)[0]

        g = jax.grad(direct)(params)
        assert norms[level] == pytest.approx(float(optax.global_norm(g)), rel=1e-5)
    assert norms["token"] != pytest.approx(norms["sequence"], rel=1e-3)
