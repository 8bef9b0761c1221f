"""Device mesh and the one logical-axis rules table (layer L1).

Parameters carry logical axis names (metadata `axes` on each `nnx.Param`, set once at
creation in `openrs_jax.model`). A rules table maps each logical name to a mesh axis (or
None = replicated). Two presets:

- `TRAIN_RULES`: FSDP over `fsdp` (the model dimension D of every matrix and the embedding)
  plus tensor parallelism over `tensor` (heads, MLP hidden, vocab). With `tensor=1` this is
  plain FSDP/ZeRO-3.
- `SAMPLE_RULES`: no FSDP (every decode step would all-gather all weights); tensor
  parallelism only, data-parallel rows.

Activations are constrained only at block boundaries: the batch dimension over
`('data', 'fsdp')`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from openrs_jax import _compat

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axis (or a tuple of mesh axes, or None).
LogicalRules = Mapping[str, Any]

TRAIN_RULES: dict[str, Any] = {
    "vocab": "tensor",
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "norm": None,
    # activations
    "batch": ("data", "fsdp"),
    "seq": None,
}

SAMPLE_RULES: dict[str, Any] = {
    "vocab": "tensor",
    "embed": None,
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "norm": None,
    "batch": ("data", "fsdp"),
    "seq": None,
}

RULE_PRESETS = {"train": TRAIN_RULES, "sample": SAMPLE_RULES}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; -1 takes the remaining devices (at most one axis may be -1)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1


def make_mesh(config: MeshConfig | Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds a ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices)."""
    if config is None:
        config = MeshConfig()
    if isinstance(config, Mapping):
        unknown = set(config) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
        config = MeshConfig(**config)
    devices = list(jax.devices() if devices is None else devices)
    sizes = [config.data, config.fsdp, config.tensor]
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"{len(devices)} devices cannot be split into mesh {dict(zip(MESH_AXES, sizes))}"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}"
        )
    arr = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(arr, MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], rules: LogicalRules) -> P:
    """PartitionSpec for an array whose dimensions have logical names `axes`."""
    spec = []
    used: set[str] = set()
    for name in axes:
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no sharding rule; rules cover {sorted(rules)}")
        target = rules[name]
        # A mesh axis may shard only one dimension of an array.
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        targets = tuple(t for t in targets if t not in used)
        used.update(targets)
        spec.append(targets[0] if len(targets) == 1 else (targets or None))
    return P(*spec)


def _check_divisible(path: str, shape: Sequence[int], spec: P, mesh: Mesh) -> None:
    for dim, (size, axes) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
        if axes is None:
            continue
        names = (axes,) if isinstance(axes, str) else axes
        n = math.prod(mesh.shape[a] for a in names)
        if size % n:
            raise ValueError(
                f"cannot shard {path} (shape {tuple(shape)}) dimension {dim} of size {size} over "
                f"mesh axes {names} of total size {n}: choose a mesh whose axis sizes divide it"
            )


def param_sharding(path: str, shape: Sequence[int], axes: Sequence[str | None] | None, mesh: Mesh, rules: LogicalRules) -> NamedSharding:
    """NamedSharding of one parameter from its logical axes (replicated if it has none)."""
    spec = P() if axes is None else logical_to_spec(axes, rules)
    _check_divisible(path, shape, spec, mesh)
    return NamedSharding(mesh, spec)


def state_shardings(state: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """A pytree of NamedShardings matching an NNX state (abstract or concrete)."""

    def one(path, var):
        value = _compat.variable_value(var)
        axes = _compat.variable_metadata(var).get("axes")
        name = ".".join(str(p) for p in path)
        return param_sharding(name, value.shape, axes, mesh, rules)

    flat = _compat.flat_state(state)
    shardings = []
    for path, var in flat:
        s = one(path, var)
        if isinstance(var, jax.ShapeDtypeStruct) or not hasattr(var, "replace"):
            shardings.append((path, s))
        else:
            shardings.append((path, var.replace(s)))
    return _compat.from_flat_state(shardings)


def activation_spec(rules: LogicalRules, *axes: str | None) -> P:
    return logical_to_spec(axes, rules)


def constrain(x: jax.Array, mesh: Mesh | None, rules: LogicalRules | None, *axes: str | None) -> jax.Array:
    """Sharding constraint on an activation at a block boundary. Without a mesh the model runs
    on one device and there is nothing to constrain."""
    if mesh is None or rules is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(axes, rules)))


def batch_sharding(mesh: Mesh, rules: LogicalRules | None = None, ndim: int = 2) -> NamedSharding:
    """Sharding of a [B, ...] host batch: rows over ('data', 'fsdp')."""
    rules = TRAIN_RULES if rules is None else rules
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))
