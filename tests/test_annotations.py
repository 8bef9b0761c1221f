"""The annotations of the checked modules are checked in the tests (tests/conftest.py): a call
with a wrong shape, dtype or type raises, inside jit too (at trace time)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from openrs_jax.grpo import group_advantages, grpo_loss, kl_k3, token_logprobs
from openrs_jax.model.attention import xla_attention
from openrs_jax.rollout.sampling import filter_top_k

LOSS = dict(beta=0.04, epsilon_low=0.2, loss_type="grpo")


def _loss_inputs(b=4, c=6):
    logps = -jnp.ones((b, c))
    return logps, logps, logps, jnp.zeros((b,)), jnp.ones((b, c))


def test_right_shapes_pass_and_masks_may_be_bool_or_host_arrays():
    logps, old, ref, adv, mask = _loss_inputs()
    grpo_loss(logps, old, ref, adv, mask, **LOSS)
    grpo_loss(logps, old, ref, adv, np.asarray(mask, bool), **LOSS)
    grpo_loss(logps, old, ref, jnp.zeros(mask.shape), mask, **LOSS)  # per-token advantages [B, C]


def test_wrong_shapes_raise():
    logps, old, ref, adv, mask = _loss_inputs()
    with pytest.raises(TypeCheckError, match="parameter 'mask'"):
        grpo_loss(logps, old, ref, adv, mask[:, :-1], **LOSS)  # C differs
    with pytest.raises(TypeCheckError, match="parameter 'advantages'"):
        grpo_loss(logps, old, ref, adv[:-1], mask, **LOSS)  # B differs
    with pytest.raises(TypeCheckError, match="parameter 'ref_logps'"):
        kl_k3(logps, ref[:, None])  # rank differs
    q = jnp.zeros((1, 3, 4, 8))  # [B, T, N, H]
    kv = jnp.zeros((1, 2, 5, 8))  # [B, K, S, H]
    xla_attention(q, kv, kv, jnp.ones((1, 3, 5), bool))
    with pytest.raises(TypeCheckError, match="parameter 'mask'"):
        xla_attention(q, kv, kv, jnp.ones((1, 3, 4), bool))  # S differs from the keys'
    with pytest.raises(TypeCheckError, match="parameter 'v'"):
        xla_attention(q, kv, kv[..., :4], jnp.ones((1, 3, 5), bool))  # H differs


def test_wrong_dtypes_and_types_raise():
    hidden, lm_head = jnp.zeros((2, 3, 4)), jnp.zeros((4, 7))
    with pytest.raises(TypeCheckError, match="parameter 'targets'"):
        token_logprobs(hidden, lm_head, jnp.zeros((2, 3)))  # float targets
    with pytest.raises(TypeCheckError, match="parameter 'scale'"):
        group_advantages(jnp.zeros(4), 2, "rank")


def test_checks_run_when_traced():
    with pytest.raises(TypeCheckError, match="parameter 'logits'"):
        jax.jit(lambda x: filter_top_k(x, 2))(jnp.zeros((2, 3, 5)))  # [B, V] expected
