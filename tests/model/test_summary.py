"""The parameter overview (clu's table) of a sharded model and of an abstract one."""

import numpy as np
from flax import nnx

from openrs_jax import _compat
from openrs_jax import sharding as shd
from openrs_jax.model import abstract_model, create_sharded, tiny
from openrs_jax.model.summary import parameter_overview


def _rows(table: str) -> dict[str, list[str]]:
    """Name -> the other cells of each table row."""
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:])}


def test_overview_of_a_sharded_model_lists_every_parameter_with_its_shard_and_stats():
    cfg = tiny()
    mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
    model = create_sharded(cfg, mesh)
    table = parameter_overview(model)
    rows = _rows(table)

    params = {"/".join(str(k) for k in path): _compat.variable_value(var)
              for path, var in _compat.flat_state(nnx.state(model, nnx.Param))}
    assert set(rows) == set(params)
    bytes_ = sum(v.size * v.dtype.itemsize for v in params.values())
    assert table.splitlines()[-1] == f"Total: {cfg.num_params():,} -- {bytes_:,} bytes"

    shape, dtype, size, mean, std, sharding = rows["embed"]
    assert (shape, dtype, size) == (f"({cfg.vocab_size}, {cfg.hidden_size})", "float32", f"{cfg.vocab_size * cfg.hidden_size:,}")
    assert sharding == str(tuple(model.embed[...].sharding.spec)) and "fsdp" in sharding
    embed = np.asarray(model.embed[...])
    assert (mean, std) == (f"{float(embed.mean()):.3}", f"{float(embed.std()):.3}")
    assert rows["final_norm/scale"][3:5] == ["1.0", "0.0"]  # RMSNorm scales start at one


def test_overview_without_stats_needs_no_values_and_can_be_cut():
    cfg = tiny()
    table = parameter_overview(abstract_model(cfg), stats=False)
    assert "Mean" not in table and table.splitlines()[-1].startswith(f"Total: {cfg.num_params():,} -- ")
    assert len(_rows(table)) == len(_compat.flat_state(nnx.state(abstract_model(cfg), nnx.Param)))
    short = parameter_overview(abstract_model(cfg), stats=False, max_lines=8)
    assert "[...]" in short and len(_rows(short)) < len(_rows(table))
