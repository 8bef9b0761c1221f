"""openrs_jax.hostmem: freed heap pages go back to the OS; the releaser rations the calls."""

import ctypes
import os

import pytest

from openrs_jax import hostmem


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_release_returns_pages_freed_below_the_top_of_the_heap():
    if hostmem._malloc_trim() is None:
        pytest.skip("no glibc malloc_trim on this platform")
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 128 MiB in 64 KiB blocks (under glibc's mmap threshold, so from the heap), written so
    # that they are resident; all freed but the last, which pins the heap's top: free() cannot
    # shrink the heap, the pages stay resident.
    size, count = 64 * 1024, 2048
    blocks = [libc.malloc(size) for _ in range(count)]
    assert all(blocks)
    for b in blocks:
        ctypes.memset(b, 1, size)
    for b in blocks[:-1]:
        libc.free(b)
    before = _rss_bytes()
    assert hostmem.release_free_memory()
    released = before - _rss_bytes()
    libc.free(blocks[-1])
    assert released > 64 * 2**20, released  # most of the 128 MiB


def test_releaser_calls_at_most_once_per_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(hostmem, "release_free_memory", lambda: calls.append(1) or True)
    now = [100.0]
    r = hostmem.FreeMemoryReleaser(min_interval_s=10.0, clock=lambda: now[0])
    assert not r.maybe_release()  # the interval counts from construction
    now[0] = 109.9
    assert not r.maybe_release()
    now[0] = 110.0
    assert r.maybe_release() and len(calls) == 1
    now[0] = 115.0
    assert not r.maybe_release()
    now[0] = 140.0
    assert r.maybe_release() and len(calls) == 2
