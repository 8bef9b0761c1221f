"""Meshes of 4 and 8 fake CPU devices: parameters really sharded, logits unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from hf_utils import left_padded, make_hf_qwen2
from openrs_jax import _compat
from openrs_jax import sharding as shd
from openrs_jax.model import abstract_model, create_sharded, deepseek_r1_distill_qwen_1p5b, tiny
from openrs_jax.weights import load_hf

MESHES = {
    "fsdp4": (4, {"data": 1, "fsdp": 4, "tensor": 1}),
    "fsdp2_tp2": (4, {"data": 1, "fsdp": 2, "tensor": 2}),
    "fsdp4_tp2": (8, {"data": 1, "fsdp": 4, "tensor": 2}),
    "dp2_fsdp2_tp2": (8, {"data": 2, "fsdp": 2, "tensor": 2}),
}


def test_make_mesh_shapes_and_errors():
    assert dict(shd.make_mesh().shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert dict(shd.make_mesh({"tensor": 2}).shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert dict(shd.make_mesh({"fsdp": 2}, devices=jax.devices()[:2]).shape)["fsdp"] == 2
    with pytest.raises(ValueError, match="needs 6 devices"):
        shd.make_mesh({"data": 1, "fsdp": 3, "tensor": 2})
    with pytest.raises(ValueError, match="cannot be split"):
        shd.make_mesh({"fsdp": -1, "tensor": 3})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        shd.make_mesh({"pipeline": 2})


def test_logical_rules():
    assert shd.logical_to_spec(("embed", "mlp"), shd.TRAIN_RULES) == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert shd.logical_to_spec(("embed", "mlp"), shd.SAMPLE_RULES) == jax.sharding.PartitionSpec(None, "tensor")
    with pytest.raises(KeyError, match="no sharding rule"):
        shd.logical_to_spec(("nope",), shd.TRAIN_RULES)


def _sharded_dims(arr):
    """How many ways each dimension is split across devices."""
    shard = arr.addressable_shards[0].data.shape
    return tuple(full // part for full, part in zip(arr.shape, shard))


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
def test_sharded_load_parity(tmp_path, mesh_name):
    ndev, axes = MESHES[mesh_name]
    mesh = shd.make_mesh(axes, devices=jax.devices()[:ndev])
    ref = make_hf_qwen2(tmp_path, num_heads=4, num_kv_heads=2)
    model = load_hf(tmp_path, dtype=jnp.float32, mesh=mesh)
    fsdp, tp = axes["fsdp"], axes["tensor"]
    attn = model.layers[0].attn
    # Really sharded: FSDP on D, tensor parallel on heads / MLP hidden / vocab.
    assert _sharded_dims(attn.q_proj[...]) == (fsdp, tp)
    assert _sharded_dims(attn.k_proj[...]) == (fsdp, tp)
    assert _sharded_dims(attn.o_proj[...]) == (tp, fsdp)
    assert _sharded_dims(model.layers[1].mlp.down[...]) == (tp, fsdp)
    assert _sharded_dims(model.embed[...]) == (tp, fsdp)
    assert _sharded_dims(model.lm_head[...]) == (fsdp, tp)
    assert len(attn.q_proj[...].sharding.device_set) == ndev
    toks, mask, pos = left_padded(np.random.default_rng(0), [8, 5, 8, 2], 128)
    with torch.no_grad():
        want = ref(torch.tensor(toks), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos)).logits.numpy()
    fwd = nnx.jit(lambda m, t, p, a: m(t, positions=p, attention_mask=a))
    got = np.asarray(fwd(model, jnp.asarray(toks, jnp.int32), jnp.asarray(pos), jnp.asarray(mask)))
    assert np.abs(got - want)[mask.astype(bool)].max() <= 1e-4


def test_create_sharded_never_whole_on_one_device():
    mesh = shd.make_mesh({"fsdp": 8})
    model = create_sharded(tiny(), mesh, shd.TRAIN_RULES, seed=0)
    for path, var in _compat.flat_state(nnx.state(model, nnx.Param)):
        arr = _compat.variable_value(var)
        if arr.ndim == 2:
            assert arr.addressable_shards[0].data.size == arr.size // 8, path


def test_r1_distill_1p5b_shards_over_4_devices():
    """Plan (abstractly, no memory) the full 1.5B model on 4 devices with FSDP and FSDP+TP."""
    cfg = deepseek_r1_distill_qwen_1p5b()
    _, state = nnx.split(abstract_model(cfg))
    for axes in ({"fsdp": 4}, {"fsdp": 2, "tensor": 2}, {"tensor": 4, "fsdp": 1}):
        mesh = shd.make_mesh(axes, devices=jax.devices()[:4])
        shardings = shd.state_shardings(state, mesh, shd.TRAIN_RULES)
        per_device = 0
        for (_path, var), (_, s) in zip(_compat.flat_state(state), _compat.flat_state(shardings)):
            v = _compat.variable_value(var)
            shard_shape = _compat.variable_value(s).shard_shape(v.shape)
            per_device += int(np.prod(shard_shape)) * 2  # bf16
        total = cfg.num_params() * 2
        assert per_device <= total / 4 * 1.001, (axes, per_device, total)
    assert 1.7e9 < cfg.num_params() < 1.8e9  # 1.78B with the untied head


def test_nondivisible_mesh_error():
    mesh = shd.make_mesh({"fsdp": 1, "tensor": 8})
    with pytest.raises(ValueError, match=r"cannot shard embed \(shape \(500, 64\)\) dimension 0 of size 500 over mesh axes"):
        create_sharded(tiny(vocab_size=500), mesh)
