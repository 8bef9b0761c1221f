"""The run directory's rules (layer L5): one writer at a time, nothing changed before a resume
has succeeded, logs that end where the restored state ends.

    <run_dir>/.lock             held (flock) by the one trainer writing this directory
    <run_dir>/config.yaml       the resolved config; rewritten only once the run has started
                                (a failed resume leaves the old one in place)
    <run_dir>/parameters.txt    clu's parameter overview (names, shapes, shardings), likewise
    <run_dir>/metrics.jsonl     truncated to the restored step on every start (also step 0)
    <run_dir>/completions.jsonl likewise
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import socket
from typing import Any

from openrs_jax.config import ConfigError, config_to_dict, load_config
from openrs_jax.metrics import COMPLETIONS_FILE, METRICS_FILE, truncate_after

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"
PARAMETERS_FILE = "parameters.txt"  # clu's parameter overview of the model
# Fields whose change on resume moves the learning-rate schedule (the LR of the next step jumps).
SCHEDULE_KEYS = ("optim.learning_rate", "optim.max_steps", "optim.warmup_ratio", "optim.warmup_steps",
                 "optim.lr_scheduler_type", "optim.min_lr_rate")


class RunDirBusyError(ConfigError):
    """Another live process holds the run directory."""


class RunDirLock:
    """An exclusive `flock` on `<run_dir>/.lock`. The kernel drops it when the holder dies
    (even by kill -9), so a stale lock never blocks a restart; the file keeps the holder's
    pid and host for the error message."""

    def __init__(self, run_dir: pathlib.Path):
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirBusyError(
                    f"{self.path.parent} is in use by {holder}: two trainers must not write one run directory "
                    "(stop the other, or set checkpoint.output_dir to another directory)"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def changed_fields(run_dir: pathlib.Path, cfg) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} between the run directory's config.yaml and `cfg` (empty when there is
    none or it cannot be read: then there is nothing to compare against)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        old = _flat(config_to_dict(load_config(path)))
    except (ConfigError, OSError):
        return {}
    new = _flat(config_to_dict(cfg))
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def truncate_logs(run_dir: pathlib.Path, step: int) -> None:
    """Drops log rows after `step` (the restored step; 0 for a fresh start), so a run killed
    before its first checkpoint and started again does not log steps 1..k twice."""
    for name in (METRICS_FILE, COMPLETIONS_FILE):
        truncate_after(run_dir / name, step)
