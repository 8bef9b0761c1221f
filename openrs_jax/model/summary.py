"""A model's parameter overview, as clu renders it: one row per parameter with its shape,
dtype, size, sharding and (optionally) mean and std, then the totals.

Layer L2. clu.parameter_overview needs only jax, flax and numpy; clu's metric writers and
periodic actions import TensorFlow, which this project does not install (README, "Dependencies").
"""

from __future__ import annotations

from clu import parameter_overview as _clu
from flax import nnx

from openrs_jax import _compat


def parameter_overview(model: nnx.Module, *, stats: bool = True, max_lines: int | None = None) -> str:
    """clu's table of `model`'s nnx.Param leaves, named by their path ("layers/0/attn/q_proj"),
    ending with "Total: <count> -- <bytes> bytes".

    stats=True adds each parameter's mean and std, computed in one jit on the devices that hold
    the shards (clu's "global" mode: no host copy of the weights; in a multi-process run every
    process must call it). stats=False reads only shapes and shardings, so it also works on an
    abstract model (`openrs_jax.model.abstract_model`). Rows are sorted by name as strings
    (layers/10 before layers/2); max_lines cuts a long table with "[...]".
    """
    params = {"/".join(str(k) for k in path): _compat.variable_value(var)
              for path, var in _compat.flat_state(nnx.state(model, nnx.Param))}
    return _clu.get_parameter_overview(params, include_stats="global" if stats else "sharding", max_lines=max_lines)
