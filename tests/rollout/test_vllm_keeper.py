"""The keeper that ties a vLLM server's process group to its owner, with a stand-in server (a
process that starts a child of its own, like vLLM's API server and EngineCore): no vLLM
needed. tests/rollout/test_vllm_lifetime.py does the same with a real server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from openrs_jax.rollout import vllm_server as vs
from openrs_jax.rollout.server_side.openrs_vllm_keeper import group_members

GONE_WITHIN_S = 30.0

# The stand-in server: starts an "engine core" child, reports both pids, then sleeps.
FAKE_SERVER = textwrap.dedent("""
    import subprocess, sys, time
    core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("SERVER", __import__("os").getpid(), core.pid, flush=True)
    time.sleep(600)
""")

# The owner: starts the keeper the way VLLMServer does (new session, our pid as --owner).
OWNER = textwrap.dedent("""
    import os, subprocess, sys, time
    keeper, pdeathsig, server = sys.argv[1:]
    cmd = [sys.executable, keeper, "--owner", str(os.getpid()), "--grace", "2"]
    cmd += ["--pdeathsig"] if pdeathsig == "1" else []
    proc = subprocess.Popen(cmd + ["--", sys.executable, "-c", server], start_new_session=True)
    print("KEEPER", proc.pid, flush=True)
    proc.wait()
    time.sleep(600)
""")


def wait_for(path, pattern: bytes, proc) -> re.Match:
    deadline = time.monotonic() + 60
    while (m := re.search(pattern, path.read_bytes())) is None:
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.05)
    return m


def wait_group_gone(pgid: int) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while vs.group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not vs.group_alive(pgid)


@pytest.fixture
def owner(tmp_path):
    started = []

    def start(pdeathsig: bool):
        out = tmp_path / "owner.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-c", OWNER, str(vs.KEEPER), "1" if pdeathsig else "0", FAKE_SERVER],
                                    stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(proc)
        keeper = int(wait_for(out, rb"KEEPER (\d+)", proc).group(1))
        server, core = map(int, wait_for(out, rb"SERVER (\d+) (\d+)", proc).groups())
        started.append(keeper)
        return proc, keeper, server, core, out

    yield start
    for item in started:  # whatever a failing test left behind
        try:
            if isinstance(item, int):
                os.killpg(item, signal.SIGKILL)
            else:
                os.killpg(item.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("pdeathsig", [True, False], ids=["parent-death-signal", "watchdog"])
def test_owner_killed_with_9_stops_the_group(owner, pdeathsig):
    proc, keeper, server, core, out = owner(pdeathsig)
    assert set(group_members(keeper)) == {keeper, server, core}
    os.killpg(proc.pid, signal.SIGKILL)  # the owner, and only the owner: it leads its own group
    assert wait_group_gone(keeper), f"left: {group_members(keeper)}"
    assert f"owner {proc.pid} died; stopping the server's process group" in out.read_text()


def test_server_death_stops_the_rest_and_reports_its_code(owner):
    proc, keeper, server, core, out = owner(True)
    os.kill(server, signal.SIGKILL)  # the "API server" dies; its "EngineCore" must not stay
    assert wait_group_gone(keeper), f"left: {group_members(keeper)}"
    assert "server exited with code -9; stopping its process group" in out.read_text()


def test_sigterm_to_the_group_stops_everything(owner):
    proc, keeper, server, core, out = owner(True)
    os.killpg(keeper, signal.SIGTERM)  # what VLLMServer.stop() sends
    assert wait_group_gone(keeper)
    assert proc.poll() is None  # the owner lives on
