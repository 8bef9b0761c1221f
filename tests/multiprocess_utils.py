"""Launching a tool as N JAX processes on 127.0.0.1, each with its own fake CPU devices (JAX's
CPU collectives: gloo), the way SLURM or a JobSet would start them on N hosts."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import subprocess
import sys
import time

from openrs_jax.metrics import run_dependent

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_env(devices: int) -> dict[str, str]:
    # The suite's XLA flags (tests/conftest.py) with this process's device count in place of 8.
    count = "--xla_force_host_platform_device_count"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(count)]
    path = os.pathsep.join([str(REPO), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": " ".join([*flags, f"{count}={devices}"])}
    env.pop("OPENRS_DEBUG", None)
    return env


@dataclasses.dataclass
class Group:
    """N processes of one run; `logs[k]` holds process k's stdout and stderr."""

    procs: list[subprocess.Popen]
    logs: list[pathlib.Path]

    def wait(self, timeout: float) -> list[int]:
        """Exit codes; a process still running after `timeout` seconds is a hang: killed, and
        the test fails on its code (-9)."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return [p.returncode for p in self.procs]

    def output(self, k: int) -> str:
        return self.logs[k].read_text(errors="replace")


def launch(args: list[str], processes: int, devices: int, log_dir: pathlib.Path, *, module: str = "openrs_jax.train",
           script: str | None = None,
           flags: tuple[str, ...] = ("--heartbeat-timeout", "20", "--distributed-timeout", "300")) -> Group:
    """`python -m module *args` (or `python script *args`) as `processes` processes with
    `devices` CPU devices each (1 process: no distributed flags)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs, logs = [], []
    for k in range(processes):
        cmd = [sys.executable, *([script] if script else ["-m", module]), *args]
        if processes > 1:
            cmd += ["--coordinator-address", f"127.0.0.1:{port}", "--num-processes", str(processes),
                    "--process-id", str(k), *flags]
        log = log_dir / f"process{k}.log"
        with open(log, "w") as out:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=device_env(devices), stdout=out,
                                          stderr=subprocess.STDOUT))
        logs.append(log)
    return Group(procs, logs)


def strip_times(rows: list[dict]) -> list[dict]:
    return [run_dependent(r) for r in rows]
