"""VerifyPool: order, errors, hard timeouts, crashes, memory limit, clean shutdown.

Tasks are stdlib callables (time.sleep, os._exit, operator.truediv, bytearray) because the
workers are fresh interpreters that import tasks by module name.
"""

from __future__ import annotations

import operator
import os
import subprocess
import sys
import time

import pytest
from reward_test_utils import live_children, pid_alive

from openrs_jax.rewards import Outcome, VerifyPool


def test_results_come_back_in_order_with_errors_as_outcomes():
    with VerifyPool(2, 10.0) as pool:
        out = pool.map(operator.truediv, [(6, 3), (1, 0), (9, 3), (5, 2)])
    assert [o.status for o in out] == ["ok", "error", "ok", "ok"]
    assert [o.value for o in out] == [2.0, None, 3.0, 2.5]
    assert out[1].error.startswith("ZeroDivisionError")


def test_empty_batch_starts_no_worker():
    pool = VerifyPool(2, 10.0)
    assert pool.map(operator.add, []) == []
    assert pool.pids == []


def test_stuck_task_is_killed_replaced_and_the_rest_still_run():
    with VerifyPool(2, timeout_s=1.0) as pool:
        pool.map(operator.add, [(1, 2)])  # start the workers outside the timed region
        before = set(pool.pids)
        out = pool.map(time.sleep, [(600,), (0,), (600,), (0,), (0,)])
        # The 600 s sleeps end as timeouts (finished sleeps would be "ok"): killed at the deadline.
        assert [o.status for o in out] == ["timeout", "ok", "timeout", "ok", "ok"]
        assert out[0].error == out[2].error == "exceeded 1.0 s"
        assert pool.num_timeouts == 2
        assert len(pool.pids) == 2
        killed = before - set(pool.pids)
        assert killed, "a stuck worker must be replaced"
        assert not any(pid_alive(pid) for pid in killed)
        # The replacements work.
        assert [o.value for o in pool.map(operator.mul, [(2, 3), (4, 5)])] == [6, 20]


def test_crashed_worker_is_reported_and_replaced():
    with VerifyPool(1, 10.0) as pool:
        out = pool.map(os._exit, [(3,)])
        assert out == [Outcome("crashed", error="worker exited with code 3")]
        assert pool.num_crashes == 1
        assert pool.map(operator.add, [(1, 1)])[0].value == 2


def test_unimportable_task_is_an_error_not_a_crash():
    def local_fn():  # not importable by the worker
        return 1

    with VerifyPool(1, 10.0) as pool:
        out = pool.map(local_fn, [()])
        assert out[0].status == "error" and "unpicklable task" in out[0].error
        assert pool.map(operator.add, [(2, 2)])[0].value == 4


def test_memory_limit_turns_a_huge_allocation_into_an_error():
    with VerifyPool(1, 20.0, max_memory_mb=512) as pool:
        out = pool.map(bytearray, [(4 << 30,), (16,)])
    assert out[0].status == "error" and out[0].error.startswith("MemoryError")
    assert out[1] == Outcome("ok", bytearray(16))


def test_close_leaves_no_child_process():
    assert not live_children(), "a previous test leaked a child process"
    pool = VerifyPool(2, 1.0)
    pool.map(time.sleep, [(30,), (0,)])  # one kill + replacement on the way
    assert len(live_children()) == 2
    pool.close()
    assert not live_children()
    # A closed pool restarts lazily.
    assert pool.map(operator.add, [(1, 1)])[0].value == 2
    assert len(live_children()) == 2
    del pool  # the finalizer stops the workers too
    deadline = time.monotonic() + 10.0
    while live_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live_children()


def test_inline_mode_runs_in_the_caller():
    pool = VerifyPool(0)
    out = pool.map(os.getpid, [(), ()])
    assert [o.value for o in out] == [os.getpid()] * 2
    assert pool.map(operator.truediv, [(1, 0)])[0].status == "error"
    assert not live_children()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(workers=-1), "workers"),
        (dict(timeout_s=0), "timeout_s"),
        (dict(max_memory_mb=1), "max_memory_mb"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VerifyPool(**kwargs)


def test_worker_that_cannot_start_raises_a_clear_error():
    pool = VerifyPool(1, 5.0, preload=("no_such_module_for_openrs_test",))
    with pytest.raises(RuntimeError, match="failed to start: ModuleNotFoundError"):
        pool.map(operator.add, [(1, 1)])
    assert not live_children()


def test_workers_outlive_the_thread_that_started_them():
    # PR_SET_PDEATHSIG fires when the creating *thread* exits: the pool must not tie its
    # workers to whichever thread first called map.
    import threading

    pool = VerifyPool(1, 10.0)
    thread = threading.Thread(target=pool.map, args=(operator.add, [(1, 1)]))
    thread.start()
    thread.join()
    (pid,) = pool.pids
    time.sleep(0.5)
    assert pid_alive(pid)
    assert pool.map(operator.add, [(2, 2)])[0].value == 4 and pool.pids == [pid]
    pool.close()


_PARENT = """
import operator, sys, time
from openrs_jax.rewards import VerifyPool
pool = VerifyPool(2, 60.0)
pool.map(operator.add, [(1, 1)])
print(" ".join(map(str, pool.pids)), flush=True)
if sys.argv[1] == "hang":
    pool.map(time.sleep, [(600,), (600,)])  # both workers busy when the parent is killed
"""


def _wait_dead(pids, timeout_s=10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(pid_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_workers_stop_when_the_parent_exits_without_close():
    result = subprocess.run(
        [sys.executable, "-c", _PARENT, "exit"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    assert _wait_dead(pids)


def test_busy_workers_die_with_a_killed_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, "hang"], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)  # let the workers start sleeping
        assert all(pid_alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    assert _wait_dead(pids)
