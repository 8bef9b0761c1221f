"""The one way a benchmark runs a measurement in its own process and reads the result back.

A worker is a command line that takes `--_result PATH` and writes its JSON record there.
Every measurement gets a fresh process because allocators never share the GPU (JAX and
PyTorch side by side, or JAX after JAX: a device's peak-memory counter cannot be reset) and
because an out-of-memory or a hang then costs one row, not the table.

No JAX at import: the orchestrators that call this must leave the GPU to their workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import Any, Mapping

# JAX takes 75% of the GPU by default; the update benchmark gives its workers what PyTorch gets.
FULL_GPU_ENV = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95", "PYTHONUNBUFFERED": "1"}


def error_kind(text: str) -> str:
    """"OOM" where a failure's output says the device ran out of memory, else "error"."""
    low = text.lower()
    if "resource_exhausted" in low or "out of memory" in low or "outofmemory" in low:
        return "OOM"
    return "error"


def run_json(cmd: list[str], *, timeout_s: float | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Runs `cmd --_result PATH` in a fresh process and returns the JSON record it wrote to PATH.

    `env`: variables set for the worker where this process's environment does not set them.
    A failed measurement returns {"error": "OOM" | "timeout" | "error", "detail": the tail of
    its output} instead of raising.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        full_env.setdefault(key, value)
    try:
        try:
            proc = subprocess.run([*cmd, "--_result", path], capture_output=True, text=True, timeout=timeout_s,
                                  env=full_env)
        except subprocess.TimeoutExpired as e:
            tail = (e.stderr or b"")[-1500:]
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            return {"error": "timeout", "detail": f"over {timeout_s} s; " + tail}
        if proc.returncode != 0:
            text = proc.stderr + proc.stdout
            return {"error": error_kind(text), "detail": text[-2000:]}
        try:
            with open(path) as f:
                return json.load(f)
        except json.JSONDecodeError:  # exited 0 without writing its record
            return {"error": "error", "detail": f"no JSON record in {path}; " + (proc.stderr + proc.stdout)[-2000:]}
    finally:
        if os.path.exists(path):
            os.unlink(path)
