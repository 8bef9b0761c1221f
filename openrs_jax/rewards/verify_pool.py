"""A small process pool with a hard per-task timeout, for math verification.

Layer L0 (plain Python, never imports JAX).

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot stop one stuck task. The only way
out of a worker spinning inside C code (a big-integer power, say) is to kill the whole
executor, which breaks every other future. Here each worker owns one socket; the parent gives a
worker one task at a time, waits with a deadline, and on expiry kills just that worker
(SIGKILL), reports `Outcome("timeout")` for the task and starts a replacement. A worker that
dies (segfault, OOM kill) gives `Outcome("crashed")` and is replaced the same way. The run
itself never raises because of one bad completion.

Contract of `VerifyPool.map(fn, arglist)`: returns one `Outcome` per element of `arglist`, in
order, within about `timeout_s` per task plus replacement start-up. `fn` must be a top-level
function of an importable module (pickled by reference; not `__main__`) and its return value
must be picklable; a task the worker cannot unpickle is an "error" outcome.

Departures from Open-RS / TRL (numbered, see also math_rewards.py):
1. Open-RS calls math-verify inline in the trainer process and relies on math-verify's
   `signal.alarm` timeouts (5 s per parse / per comparison), which only work in the main
   thread and cannot interrupt C code. We run verification in worker processes (their main
   thread, so those inner timeouts still apply) and add a hard wall-clock timeout per task
   that kills the worker.
2. Workers run under an address-space limit (`max_memory_mb`, default 4096) so that a
   pathological answer fails with MemoryError in the worker instead of swapping the host.

Workers are fresh interpreters (`subprocess`, `python -c`, the parent's sys.path), talking
over a socketpair with multiprocessing's Connection framing. Not fork: the trainer process is
multithreaded (JAX, XLA). Not multiprocessing's spawn: it re-runs the parent's `__main__`
script in every worker, which breaks unguarded scripts and notebooks. Workers start lazily on
the first `map` and stop on `close()`, when the pool is garbage-collected, or at interpreter
exit. On Linux they also get SIGKILL if the parent dies (PR_SET_PDEATHSIG, armed from a
spawner thread that lives as long as the pool), and a worker whose socket reaches EOF exits, so
no worker outlives a crashed trainer, even one stuck in C code that holds the GIL.

`workers=0` runs tasks inline in the calling thread: no hard timeout (nothing can interrupt
the caller safely); only the task's own guards apply (math-verify's alarms when called from
the main thread).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import importlib
import logging
import multiprocessing.connection
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, Literal, Sequence

logger = logging.getLogger(__name__)

Status = Literal["ok", "error", "timeout", "crashed"]

# How long a graceful stop waits for a worker before SIGKILL.
_JOIN_GRACE_S = 2.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Result of one task: `status == "ok"` carries `value`; otherwise `error` says why.

    status: "ok" (fn returned), "error" (fn raised; `error` is "ExcType: message"),
      "timeout" (ran past the hard timeout; the worker was killed), "crashed" (the worker died).
    """

    status: Status
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _describe(exc: BaseException) -> str:
    # str() of an exception carrying a huge sympy object can itself be slow: cap the text.
    try:
        text = str(exc)[:200]
    except Exception:  # noqa: BLE001 - a broken __str__ must not kill the worker
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}"


def _set_parent_death_signal() -> None:
    """Linux only: SIGKILL this process when its parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - an optional safety net; the pipe EOF still stops us
        pass


def _worker_loop(conn: multiprocessing.connection.Connection) -> None:
    """Worker side: read the config, announce readiness, then answer tasks until None/EOF.

    Messages from the parent: first `pickle((max_memory_mb, preload, initializer))`, then
    `(task_id, pickle((fn, args)))` per task and finally None. The task payload is unpickled
    inside the try, so a function the worker cannot import is that task's error, not a crash.
    Replies: ("ready", pid) | ("failed", reason), then (task_id, status, value, error).
    """
    _set_parent_death_signal()
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        max_memory_mb, preload, initializer = pickle.loads(conn.recv_bytes())
        if max_memory_mb is not None:
            import resource

            limit = int(max_memory_mb) << 20
            try:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            except (ValueError, OSError):  # a lower hard limit is already in place: keep it
                pass
        for module in preload:
            importlib.import_module(module)
        if initializer is not None:
            initializer()
    except (EOFError, OSError):
        return
    except BaseException as exc:  # noqa: BLE001 - report start-up failure to the parent
        conn.send(("failed", _describe(exc)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # parent went away
            return
        if message is None:
            return
        task_id, payload = message
        try:
            fn, args = pickle.loads(payload)
            reply = (task_id, "ok", fn(*args), None)
        except BaseException as exc:  # noqa: BLE001 - any failure is the task's outcome
            reply = (task_id, "error", None, _describe(exc))
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable return value
            conn.send((task_id, "error", None, f"unpicklable result: {_describe(exc)}"))


def worker_main(fd: int) -> None:
    """Entry point of a worker process; `fd` is its end of a socketpair with the parent."""
    _worker_loop(multiprocessing.connection.Connection(fd))


class _Worker:
    """Parent-side handle of one worker process.

    Started with `subprocess` (`python -c`, the parent's sys.path prepended), not
    `multiprocessing`: a spawned multiprocessing child re-runs the parent's `__main__` script,
    which breaks any unguarded script or notebook that builds a reward; fork is unsafe in a
    multithreaded (JAX) process. The child only imports this package.
    """

    def __init__(self, max_memory_mb, preload, initializer):
        parent_sock, child_sock = socket.socketpair()
        code = (
            f"import sys; sys.path[:0] = {list(sys.path)!r}; "
            "from openrs_jax.rewards.verify_pool import worker_main; "
            f"worker_main({child_sock.fileno()})"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()  # the child holds its copy; EOF on ours means the child died
        self.conn = multiprocessing.connection.Connection(parent_sock.detach())
        self.conn.send_bytes(pickle.dumps((max_memory_mb, tuple(preload), initializer)))
        self.started_at = time.monotonic()
        self.ready = False
        self.task: int | None = None  # index into the current map's arglist
        self.deadline = float("inf")

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL and reap; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:  # unkillable (D state): nothing more we can do
            logger.error("verification worker %d did not exit after SIGKILL", self.pid)
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to exit, then kill whatever is left (busy or still starting)."""
        if self.ready and self.task is None:
            try:
                self.conn.send(None)
                self.process.wait(timeout=_JOIN_GRACE_S)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self.kill()


def _stop_all(workers: list[_Worker]) -> None:
    """Finalizer: must not reference the pool itself (weakref.finalize contract)."""
    for worker in workers:
        try:
            worker.stop()
        except Exception:  # noqa: BLE001 - shutdown must reach every worker
            pass
    workers.clear()


class VerifyPool:
    """Process pool with a hard per-task timeout that kills and replaces a stuck worker.

    Args:
      workers: number of worker processes; 0 runs tasks inline in the calling thread.
      timeout_s: hard wall-clock limit per task (from the moment a ready worker receives it).
      max_memory_mb: address-space limit of each worker (RLIMIT_AS); None for no limit.
      preload: modules each worker imports before it reports ready (so import time never
        counts against a task's timeout).
      initializer: optional top-level function each worker runs after `preload` (warm-up).
      startup_timeout_s: a worker that is not ready by then is a configuration error
        (RuntimeError), not a task failure.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 10.0,
        *,
        max_memory_mb: int | None = 4096,
        preload: Sequence[str] = (),
        initializer: Callable[[], None] | None = None,
        startup_timeout_s: float = 120.0,
    ):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_memory_mb is not None and max_memory_mb < 64:
            raise ValueError(f"max_memory_mb must be >= 64 or None, got {max_memory_mb}")
        self.workers = int(workers)
        self.timeout_s = float(timeout_s)
        self.max_memory_mb = max_memory_mb
        self.preload = tuple(preload)
        self.initializer = initializer
        self.startup_timeout_s = float(startup_timeout_s)
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        # Linux sends PR_SET_PDEATHSIG when the *thread* that started a worker exits, so
        # workers are started from one long-lived thread owned by the pool, never from the
        # (possibly short-lived) thread that happens to call `map`.
        self._spawner: concurrent.futures.ThreadPoolExecutor | None = None
        self._owner_pid = os.getpid()
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        self.num_timeouts = 0  # counters for logging / metrics
        self.num_crashes = 0

    def __repr__(self) -> str:
        return (
            f"VerifyPool(workers={self.workers}, timeout_s={self.timeout_s}, "
            f"running={len(self._workers)})"
        )

    def __enter__(self) -> "VerifyPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (empty before the first map and after close)."""
        return [w.pid for w in self._workers]

    def close(self) -> None:
        """Stop all workers and reap them. A later `map` starts fresh ones."""
        with self._lock:
            if os.getpid() != self._owner_pid:  # forked copy: the workers are not ours
                self._workers.clear()
                return
            _stop_all(self._workers)

    def map(self, fn: Callable[..., Any], arglist: Sequence[tuple]) -> list[Outcome]:
        """Run `fn(*args)` for each args tuple; one Outcome per task, in input order."""
        arglist = [tuple(args) for args in arglist]
        if self.workers == 0:
            return [self._run_inline(fn, args) for args in arglist]
        if not arglist:
            return []
        with self._lock:
            self._adopt_after_fork()
            try:
                return self._map_locked(fn, arglist)
            except BaseException:
                # Start-up failure or Ctrl-C mid-batch: workers may hold stale tasks.
                _stop_all(self._workers)
                raise

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _run_inline(fn, args) -> Outcome:
        try:
            return Outcome("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - a failed task is an outcome, not a crash
            return Outcome("error", error=_describe(exc))

    def _adopt_after_fork(self) -> None:
        if os.getpid() != self._owner_pid:
            # A forked child inherited handles to its parent's workers (and a spawner thread
            # that does not exist in the child): forget them.
            self._workers.clear()
            self._spawner = None
            self._owner_pid = os.getpid()

    def _spawn(self) -> _Worker:
        if self._spawner is None:
            self._spawner = concurrent.futures.ThreadPoolExecutor(1, "openrs-verify-spawner")
        future = self._spawner.submit(_Worker, self.max_memory_mb, self.preload, self.initializer)
        return future.result()

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = self._spawn()

    def _map_locked(self, fn, arglist) -> list[Outcome]:
        while len(self._workers) < self.workers:
            self._workers.append(self._spawn())
        results: list[Outcome | None] = [None] * len(arglist)
        pending = collections.deque(range(len(arglist)))
        while pending or any(w.task is not None for w in self._workers):
            for worker in list(self._workers):
                if worker.ready and worker.task is None and pending:
                    index = pending.popleft()
                    try:
                        payload = pickle.dumps((fn, arglist[index]))
                    except Exception as exc:  # noqa: BLE001 - e.g. a lambda
                        message = f"unpicklable task: {_describe(exc)}"
                        results[index] = Outcome("error", error=message)
                        continue
                    try:
                        worker.conn.send((index, payload))
                    except (OSError, ValueError):  # the worker died while idle: retry elsewhere
                        pending.appendleft(index)
                        self._on_dead(worker, results)
                        continue
                    worker.task = index
                    worker.deadline = time.monotonic() + self.timeout_s
            self._wait_and_collect(results)
        outcomes = [r for r in results if r is not None]
        if len(outcomes) != len(results):  # the loop ends when every task has its outcome
            raise RuntimeError("verify pool: a task ended without an outcome")
        return outcomes

    def _wait_and_collect(self, results: list) -> None:
        now = time.monotonic()
        deadlines = [w.deadline for w in self._workers if w.task is not None]
        deadlines += [w.started_at + self.startup_timeout_s for w in self._workers if not w.ready]
        wait_s = max(0.0, min(deadlines, default=now + 1.0) - now)
        # A worker's death closes its end of the socket, so its conn turns readable (EOF).
        ready = set(multiprocessing.connection.wait([w.conn for w in self._workers], wait_s))
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._on_dead(worker, results)
                    continue
                if not worker.ready:
                    self._on_startup_message(worker, message)
                    continue
                index, status, value, error = message
                results[index] = Outcome(status, value, error)
                worker.task = None
                worker.deadline = float("inf")
            elif worker.task is not None and now >= worker.deadline and not worker.conn.poll():
                self.num_timeouts += 1
                logger.warning(
                    "verification task %d exceeded %.1f s; killing worker %d",
                    worker.task, self.timeout_s, worker.pid,
                )
                results[worker.task] = Outcome("timeout", error=f"exceeded {self.timeout_s} s")
                self._replace(worker)
            elif not worker.ready and now >= worker.started_at + self.startup_timeout_s:
                raise RuntimeError(
                    f"verification worker did not start within {self.startup_timeout_s} s "
                    f"(preload={self.preload})"
                )

    def _on_startup_message(self, worker: _Worker, message) -> None:
        kind, payload = message
        if kind == "ready":
            worker.ready = True
            return
        raise RuntimeError(f"verification worker failed to start: {payload}")

    def _on_dead(self, worker: _Worker, results: list) -> None:
        if not worker.ready:
            worker.kill()
            raise RuntimeError(
                f"verification worker died during start-up (exit code {worker.process.returncode})"
            )
        worker.kill()
        if worker.task is not None:
            self.num_crashes += 1
            results[worker.task] = Outcome(
                "crashed", error=f"worker exited with code {worker.process.returncode}"
            )
            worker.task = None
        self._replace(worker)


# -- shared pools ----------------------------------------------------------------------------

_SHARED: dict[tuple, VerifyPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(
    workers: int = 2,
    timeout_s: float = 10.0,
    *,
    max_memory_mb: int | None = 4096,
    preload: Sequence[str] = (),
    initializer: Callable[[], None] | None = None,
) -> VerifyPool:
    """One process-wide pool per distinct configuration, so that several math rewards
    (e.g. `accuracy` and `cosine`) share their workers. Created lazily; no process starts
    until the first `map`. `close_shared_pools()` stops them (they also stop at exit)."""
    key = (int(workers), float(timeout_s), max_memory_mb, tuple(preload), initializer)
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if pool is None:
            pool = VerifyPool(
                workers,
                timeout_s,
                max_memory_mb=max_memory_mb,
                preload=preload,
                initializer=initializer,
            )
            _SHARED[key] = pool
        return pool


def close_shared_pools() -> None:
    """Stop the workers of every shared pool (the pools stay usable and restart lazily)."""
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
    for pool in pools:
        pool.close()
