"""How many XLA compilations happened, and how long they took, inside a block of code.

    with CompileCounter() as cc:
        engine.generate(...)
    cc.count, cc.seconds, cc.names   # backend compilations, their seconds, the jitted names

Counts JAX's `/jax/core/compile/backend_compile_duration` monitoring events: one per program
handed to the XLA compiler, including programs then found in the persistent compilation
cache (that lookup is part of the event, and cheap). Tracing and lowering of a cached
program emit no event. The listener is process-wide and installed once; a counter sees the
events of every thread while it is open, so open it around single-threaded work.
"""

from __future__ import annotations

import threading

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"
_lock = threading.Lock()
_installed = False
_log: list[tuple[str, float]] = []  # (function name, seconds), every compile since install


def _listener(event: str, duration_secs: float, **kwargs) -> None:
    if event == _EVENT:
        with _lock:
            _log.append((str(kwargs.get("fun_name", "?")), float(duration_secs)))


def install() -> None:
    """Registers the listener (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    jax.monitoring.register_event_duration_secs_listener(_listener)


class CompileCounter:
    """Context manager: `count`, `seconds` and `names` of the compilations inside it."""

    def __init__(self):
        install()
        self._start = 0
        self._end: int | None = None

    def __enter__(self) -> "CompileCounter":
        with _lock:
            self._start = len(_log)
        self._end = None
        return self

    def __exit__(self, *exc) -> None:
        with _lock:
            self._end = len(_log)

    def _events(self) -> list[tuple[str, float]]:
        with _lock:
            return list(_log[self._start : self._end])

    @property
    def count(self) -> int:
        return len(self._events())

    @property
    def seconds(self) -> float:
        return sum(d for _, d in self._events())

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self._events()]
