"""Version shims for JAX / Flax API churn (CPU machines: JAX 0.10, Flax 0.12.8; GPU image:
JAX 0.11, Flax 0.12.10). Everything version-dependent lives here."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx


def flat_state(state: nnx.State) -> list[tuple[tuple[Any, ...], Any]]:
    """[(path, Variable)] of an NNX state, in a stable order."""
    if hasattr(nnx, "to_flat_state"):
        return list(nnx.to_flat_state(state))
    return list(state.flat_state())  # older Flax


def from_flat_state(items) -> nnx.State:
    if hasattr(nnx, "from_flat_state"):
        return nnx.from_flat_state(items)
    return nnx.State.from_flat_path(items)  # older Flax


def variable_value(var: Any) -> Any:
    """The array held by an NNX Variable (or the value itself)."""
    if isinstance(var, nnx.Variable):
        return var.get_value() if hasattr(var, "get_value") else var.value
    return var


def variable_metadata(var: Any) -> dict[str, Any]:
    if isinstance(var, nnx.Variable):
        return var.get_metadata() if hasattr(var, "get_metadata") else dict(var.__dict__)
    return {}


def set_variable_value(var: nnx.Variable, value: Any) -> None:
    if hasattr(var, "set_value"):
        var.set_value(value)
    else:
        var.value = value


def is_gpu() -> bool:
    return jax.default_backend() == "gpu"


def distributed_client() -> Any:
    """The distributed runtime's client (its key-value store and barriers), after
    `jax.distributed.initialize`. Private in JAX 0.10 and 0.11 (`multihost_utils` and Orbax
    reach it the same way); raises RuntimeError when the runtime is not running."""
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("the JAX distributed runtime is not initialized")
    return client


def cpu_collectives_unset() -> bool:
    """Whether no cross-process collective implementation is configured for CPU devices
    (JAX 0.10 and 0.11 default to gloo; some earlier versions to none)."""
    return getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none")
