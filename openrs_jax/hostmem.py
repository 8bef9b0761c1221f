"""Host memory: hand the pages the C heap holds free back to the operating system (layer L0).

Why: XLA:CPU allocates a step's temporaries (activations, gradients: gigabytes for a 135M
model) with malloc and frees them when the step ends; glibc keeps freed pages inside its heaps
for reuse (free() gives memory back only from a heap's top), so a process's resident memory
climbs to several times what it holds. SmolLM2-135M GRPO on CPU
(configs/smollm2_arithmetic.yaml, 3 steps, 2 cores, measured 2026-12-03): peak RSS 10.8 GB
with glibc's default behaviour, 10.1 GB with fewer heaps (MALLOC_ARENA_MAX=2), 7.2 GB with
`release_free_memory()` between steps (live JAX arrays 2.2 GB throughout). `malloc_trim(0)`
returns the free pages of every heap, not only the top of the main one (glibc >= 2.8); it
costs about 4 ms, so callers ration it (`FreeMemoryReleaser`).

Elsewhere (macOS, musl) there is no `malloc_trim` and this module does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from typing import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Returns freed heap pages to the OS; True when some were returned (False also where the
    C library has no `malloc_trim`)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class FreeMemoryReleaser:
    """`release_free_memory()` at most once per `min_interval_s`: after every step of a run
    whose steps take seconds, almost never in a run of 0.1-second steps (where 4 ms a step
    would be a cost and the heap stays small)."""

    def __init__(self, min_interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last = clock()

    def maybe_release(self) -> bool:
        now = self._clock()
        if now - self._last < self.min_interval_s:
            return False
        self._last = now
        release_free_memory()
        return True
