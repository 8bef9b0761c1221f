"""The update benchmark's workers by name, and how one runs: each measures one thing (one
phase, one implementation, one sequence length, one variant) and returns a JSON-able record;
`python -m openrs_jax.bench` runs every worker in its own process (`run_worker`, through
`bench.runner`) so allocators never share the GPU and an out-of-memory variant costs one row,
not the table.

    python -m openrs_jax.bench.workers --_worker KIND --_spec JSON --_result PATH   # one worker
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable

from openrs_jax.bench import runner, torch_trl, update
from openrs_jax.bench.spec import Spec

WORKERS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "ceiling": update.ceiling,
    "ceiling_torch": torch_trl.ceiling_torch,
    "jax_update": update.jax_update,
    "jax_reference": update.jax_reference,
    "torch_update": torch_trl.torch_update,
    "torch_reference": torch_trl.torch_reference,
}


def run_worker(kind: str, spec: Spec, *, timeout_s: float | None = None, in_process: bool = False) -> dict[str, Any]:
    """Runs worker `kind` on `spec`, in a fresh Python process unless `in_process`.

    Returns the worker's record, or {"error": "OOM" | "timeout" | "error", "detail": ...}
    when it failed; never raises for a failed measurement.
    """
    if kind not in WORKERS:
        raise ValueError(f"unknown worker {kind!r}; known: {', '.join(WORKERS)}")
    if in_process:
        try:
            return WORKERS[kind](spec)
        except Exception as e:  # noqa: BLE001 — one failed variant is one row
            text = f"{type(e).__name__}: {e}"
            return {"error": runner.error_kind(text), "detail": text[-2000:]}
    cmd = [sys.executable, "-m", "openrs_jax.bench.workers", "--_worker", kind,
           "--_spec", json.dumps(dataclasses.asdict(spec))]
    return runner.run_json(cmd, timeout_s=timeout_s, env=runner.FULL_GPU_ENV)


def _worker_main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="one benchmark worker (run by `python -m openrs_jax.bench`)")
    ap.add_argument("--_worker", required=True, choices=sorted(WORKERS))
    ap.add_argument("--_spec", required=True)
    ap.add_argument("--_result", required=True)
    args = ap.parse_args(argv)
    res = WORKERS[args._worker](Spec(**json.loads(args._spec)))
    with open(args._result, "w") as f:
        json.dump(res, f, default=float)


if __name__ == "__main__":
    _worker_main()
