"""Child-process inspection for the reward tests, read from /proc (psutil is not a dependency)."""

from __future__ import annotations

import os


def _status(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}
    except OSError:  # gone
        return None


def live_children() -> set[int]:
    """Live (non-zombie) child processes of this process, read from /proc (psutil-free)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            status = _status(int(entry))
            if status is None or status["State"].startswith("Z"):
                continue
            if int(status["PPid"]) == os.getpid():
                found.add(int(entry))
    return found


def pid_alive(pid: int) -> bool:
    status = _status(pid)
    return status is not None and not status["State"].startswith("Z")
