"""A line when XLA starts compiling a program and one when it is done, with the time (layer L1).

    with announce_compiles(print):           # "[openrs] compiling jit(grpo_update) ..."
        trainer.run()                         # "[openrs] compiled jit(grpo_update) in 31.2 s"

JAX reports every backend compilation through `jax.monitoring`: a scalar event with the start
time when it begins and a duration event when it ends (event
`/jax/core/compile/backend_compile_duration`, with the program's `fun_name`; a hit in the
persistent compilation cache is reported the same way, and is quick). Small programs (array
conversions, the sampler's bookkeeping) compile in milliseconds, so a start line is printed
only once a compilation has run for `threshold_s` seconds, and the end line only for those;
the rest stay silent. On a JAX without the start event, the end line alone is printed for
compilations that took at least `threshold_s`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _display(fun_name: str) -> str:
    """"jit_grpo_update" / "jit(grpo_update)" -> "jit(grpo_update)"."""
    if fun_name.startswith("jit_"):
        return f"jit({fun_name[4:]})"
    return fun_name


class _Announcer:
    def __init__(self, write: Callable[[str], None], threshold_s: float, prefix: str):
        self.write, self.threshold_s, self.prefix = write, threshold_s, prefix
        self._lock = threading.Lock()
        self._running: dict[tuple[int, str], tuple[float, threading.Timer]] = {}
        self._announced: set[tuple[int, str]] = set()

    def _key(self, fun_name: str) -> tuple[int, str]:
        return threading.get_ident(), fun_name

    def on_start(self, event: str, value: float, **kwargs) -> None:
        if event != COMPILE_EVENT:
            return
        name = str(kwargs.get("fun_name", "?"))
        key = self._key(name)
        timer = threading.Timer(self.threshold_s, self._announce, args=(key,))
        timer.daemon = True
        with self._lock:
            self._running[key] = (time.monotonic(), timer)
        timer.start()

    def _announce(self, key: tuple[int, str]) -> None:
        with self._lock:
            if key not in self._running:
                return
            self._announced.add(key)
        self.write(f"{self.prefix}compiling {_display(key[1])} ...")

    def on_end(self, event: str, duration_secs: float, **kwargs) -> None:  # jax.monitoring's names
        if event != COMPILE_EVENT:
            return
        key = self._key(str(kwargs.get("fun_name", "?")))
        with self._lock:
            entry = self._running.pop(key, None)
            announced = key in self._announced
            self._announced.discard(key)
        if entry is not None:
            entry[1].cancel()
        if announced or duration_secs >= self.threshold_s:
            self.write(f"{self.prefix}compiled {_display(key[1])} in {duration_secs:.1f} s")

    def stop(self) -> None:
        with self._lock:
            for _, timer in self._running.values():
                timer.cancel()
            self._running.clear()


@contextlib.contextmanager
def announce_compiles(write: Callable[[str], None], *, threshold_s: float = 2.0,
                      prefix: str = "[openrs] ") -> Iterator[None]:
    """Within the block, XLA compilations longer than `threshold_s` get a start and an end
    line through `write` (module docstring). The listeners are removed on exit."""
    announcer = _Announcer(write, threshold_s, prefix)
    monitoring = jax.monitoring
    monitoring.register_scalar_listener(announcer.on_start)
    monitoring.register_event_duration_secs_listener(announcer.on_end)
    try:
        yield
    finally:
        announcer.stop()
        # Older JAX has no unregister: the listeners then stay, silenced by `stop` (no timers,
        # and on_end only prints for announced or slow compilations of this block's names).
        for name, fn in (("unregister_scalar_listener", announcer.on_start),
                         ("unregister_event_duration_listener", announcer.on_end)):
            unregister = getattr(monitoring, name, None)
            if unregister is not None:
                try:
                    unregister(fn)
                except (ValueError, AssertionError):
                    pass
            elif name == "unregister_event_duration_listener":
                announcer.write = lambda line: None
