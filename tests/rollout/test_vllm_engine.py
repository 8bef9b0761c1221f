"""The `vllm` engine's client logic against a fake HTTP server (no vLLM needed): retries,
the no-server error, the weight-sync call sequence, stale-server re-sync, choice → row
mapping; and the launcher's command line (`python -m openrs_jax.serve --dry-run`)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse

import numpy as np
import pytest
from safetensors.numpy import load_file

from openrs_jax import serve
from openrs_jax.rollout import vllm_server as vs
from openrs_jax.rollout.base import SamplingParams
from openrs_jax.rollout.vllm_engine import RetryPolicy, VLLMEngine, VLLMError, VLLMUnavailableError, parse_choices

FAST_RETRY = RetryPolicy(timeout=5.0, initial=0.05, factor=2.0, max_sleep=0.2)


class FakeVLLM:
    """Just enough of vLLM's HTTP API: completions answer token t+1 with log-prob -t/10."""

    def __init__(self):
        self.calls: list[tuple[str, dict, dict]] = []  # (path, query, body)
        self.fail_completions = 0  # answer this many /v1/completions with 503 first
        self.abort_completions = 0  # then this many with 200 and a choice finished 'abort'
        self.weight_version = "default"
        self.reloaded: list[str] = []
        self.fail = lambda path: False  # answer 503 to a path when this says so
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self) -> list[str]:
        return [p for p, _, _ in self.calls]

    def respond(self, path: str, query: dict, body: dict) -> tuple[int, dict]:
        self.calls.append((path, query, body))
        if self.fail(path):
            return 503, {"error": "busy"}
        if path == "/v1/models":
            return 200, {"data": [{"id": "tiny"}]}
        if path == "/health":
            return 200, {}
        if path == "/weight_info":
            return 200, {"weight_version": self.weight_version}
        if path == "/update_weight_version":
            self.weight_version = body["new_version"]
            return 200, {"success": True}
        if path == "/collective_rpc":
            self.reloaded.append(body["kwargs"]["weights_path"])
            return 200, {"results": [None]}
        if path == "/reset_prefix_cache":
            return 200, {"success": True}
        if path in ("/pause", "/resume"):
            return 200, {"status": path[1:]}
        if path == "/v1/completions":
            if self.fail_completions > 0:
                self.fail_completions -= 1
                return 503, {"error": "busy"}
            if body["model"] != "tiny":
                return 404, {"error": "no such model"}
            choices, index = [], 0
            for prompt in body["prompt"]:
                for g in range(body["n"]):
                    # g = 1 stops with EOS (0) after two tokens, the others hit max_tokens.
                    ids = [prompt[-1] + 1, 0] if g == 1 else [prompt[-1] + 1 + k for k in range(body["max_tokens"])]
                    lps = [-t / 10 for t in ids]
                    reason = "stop" if g == 1 else "length"
                    if self.abort_completions > 0 and index == 0:  # a stopping engine: cut short
                        ids, lps, reason = ids[:1], lps[:1], "abort"
                    choices.append({"index": index, "token_ids": ids, "logprobs": {"token_logprobs": lps},
                                    "finish_reason": reason})  # fmt: skip
                    index += 1
            self.abort_completions -= any(c["finish_reason"] == "abort" for c in choices)
            return 200, {"choices": choices[::-1]}  # out of order on purpose
        return 404, {"error": f"unknown path {path}"}

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                url = urllib.parse.urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else {}
                status, payload = fake.respond(url.path, dict(urllib.parse.parse_qsl(url.query)), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def fake():
    server = FakeVLLM()
    yield server
    server.close()


def make_engine(url, tmp_path, **kw):
    kw.setdefault("retry", FAST_RETRY)
    return VLLMEngine(url, sync_dir=tmp_path / "sync", eos_token_ids=[0], pad_token_id=7, **kw)


def test_generate_maps_choices_to_rows_prompt_major(fake, tmp_path):
    engine = make_engine(fake.url, tmp_path, prompts_per_request=2)
    prompts = [[10], [20, 21], [30]]
    batch = engine.generate(prompts, 3, SamplingParams(max_new_tokens=4, temperature=0.7, seed=5))
    assert batch.completion_ids.shape == (9, 4) and batch.prompt_ids == prompts
    for p, prompt in enumerate(prompts):
        first = prompt[-1] + 1
        np.testing.assert_array_equal(batch.completion_ids[3 * p], [first, first + 1, first + 2, first + 3])
        np.testing.assert_array_equal(batch.completion_ids[3 * p + 1], [first, 0, 7, 7])
        np.testing.assert_array_equal(batch.completion_mask[3 * p + 1], [1, 1, 0, 0])
        np.testing.assert_allclose(batch.logprobs[3 * p + 1], [-first / 10, 0, 0, 0], rtol=1e-6)
        assert batch.finish_reasons[3 * p : 3 * p + 3] == ["length", "stop", "length"]
    bodies = [b for p, _, b in fake.calls if p == "/v1/completions"]
    assert sorted(len(b["prompt"]) for b in bodies) == [1, 2]
    for b in bodies:
        assert b["n"] == 3 and b["logprobs"] == 0 and b["return_token_ids"] is True
        assert b["temperature"] == 0.7 and b["max_tokens"] == 4 and b["top_k"] == 0
    # Request r starts at prompt r·2, so its children get seeds 5 + r·2·G + g: all distinct.
    assert sorted(b["seed"] for b in bodies) == [5, 5 + 2 * 3]


def test_progress_is_reported_per_answered_request(fake, tmp_path):
    engine = make_engine(fake.url, tmp_path, prompts_per_request=2)
    seen = []
    engine.progress = lambda done, total: seen.append((done, total))
    engine.generate([[10], [20, 21], [30]], 3, SamplingParams(max_new_tokens=4, temperature=0.7, seed=5))
    # Two requests (2 prompts and 1 prompt, x 3 samples), answered in either order.
    assert seen[-1] == (9, 9) and len(seen) == 2 and seen[0][0] in (3, 6)


def test_retries_5xx_with_backoff(fake, tmp_path):
    fake.fail_completions = 2
    engine = make_engine(fake.url, tmp_path)
    batch = engine.generate([[1]], 2, SamplingParams(max_new_tokens=2))
    assert batch.batch_size == 2
    assert fake.paths().count("/v1/completions") == 3


def test_completions_the_server_aborted_are_sampled_again(fake, tmp_path):
    """A vLLM whose engine dies before its API server (a kill, a shutdown) answers the open
    requests with 200 and finish_reason 'abort': a restart under way, retried like a 503, and
    none of the cut-short completions reaches the batch."""
    fake.abort_completions = 2
    engine = make_engine(fake.url, tmp_path)
    batch = engine.generate([[1]], 2, SamplingParams(max_new_tokens=3))
    assert fake.paths().count("/v1/completions") == 3
    assert batch.finish_reasons == ["length", "stop"]
    np.testing.assert_array_equal(batch.completion_ids[0], [2, 3, 4])


def test_a_server_that_keeps_aborting_is_reported_once_the_retry_timeout_passes(fake, tmp_path, clock):
    fake.abort_completions = 10**6
    engine = make_engine(fake.url, tmp_path)
    with pytest.raises(VLLMUnavailableError, match="finished with 'abort'"):
        engine.generate([[1]], 2, SamplingParams(max_new_tokens=3))


def test_4xx_is_not_retried(fake, tmp_path):
    engine = make_engine(fake.url, tmp_path, model_name="other")
    with pytest.raises(VLLMError, match="404"):
        engine.generate([[1]], 2, SamplingParams(max_new_tokens=2))
    assert fake.paths().count("/v1/completions") == 1


class FakeClock:
    """The engine module's `time`: sleeps advance a counter instead of waiting."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def __getattr__(self, name):
        return getattr(time, name)


def test_no_server_fails_within_timeout_naming_url_and_command(tmp_path, monkeypatch):
    from openrs_jax.rollout import vllm_engine

    clock = FakeClock()
    monkeypatch.setattr(vllm_engine, "time", clock)
    port = vs.free_port()
    engine = make_engine(f"http://127.0.0.1:{port}", tmp_path, retry=RetryPolicy(timeout=1.0, initial=0.1))
    with pytest.raises(VLLMUnavailableError) as err:
        engine.generate([[1, 2]], 2, SamplingParams(max_new_tokens=2))
    # Backoff 0.1, 0.2, 0.4 s; the next (0.8 s) would end past the 1 s timeout, so it gives up.
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert f"http://127.0.0.1:{port}" in str(err.value)
    assert f"python -m openrs_jax.serve --model DIR --port {port}" in str(err.value)


def test_update_weights_sequence_and_files(fake, tmp_path):
    engine = make_engine(fake.url, tmp_path, keep_versions=2)
    w = {"model.embed_tokens.weight": np.arange(6, dtype=np.float32).reshape(3, 2)}
    engine.update_weights(w)
    sync = [p for p in fake.paths() if p not in ("/health", "/weight_info")]
    assert sync == ["/pause", "/collective_rpc", "/reset_prefix_cache", "/update_weight_version", "/resume"]
    assert fake.calls[[p for p, _, _ in fake.calls].index("/pause")][1] == {"mode": "wait"}
    assert fake.weight_version == f"{engine.session_id}:1" and engine.version == 1
    weights_dir = tmp_path / "sync" / "v00000001"
    assert fake.reloaded == [str(weights_dir)]
    np.testing.assert_array_equal(load_file(str(weights_dir / "model.safetensors"))["model.embed_tokens.weight"], w["model.embed_tokens.weight"])
    for _ in range(2):
        engine.update_weights(w)
    assert sorted(p.name for p in (tmp_path / "sync").iterdir()) == ["v00000002", "v00000003"]
    batch = engine.generate([[1]], 2, SamplingParams(max_new_tokens=2))
    assert batch.weight_version == 3


def test_stale_server_is_resynced_before_sampling(fake, tmp_path):
    engine = make_engine(fake.url, tmp_path)
    engine.update_weights({"w": np.ones(2, np.float32)})
    fake.weight_version = "default"  # what a restarted server reports
    fake.calls.clear()
    engine.generate([[1]], 2, SamplingParams(max_new_tokens=2))
    paths = fake.paths()
    assert paths.index("/collective_rpc") < paths.index("/v1/completions")
    assert fake.reloaded[-1] == str(tmp_path / "sync" / "v00000001")
    assert fake.weight_version == f"{engine.session_id}:1" and engine.resync_count == 1


def test_update_weights_rejects_non_hf_names(fake, tmp_path):
    with pytest.raises(TypeError, match="HF names"):
        make_engine(fake.url, tmp_path).update_weights({0: np.ones(2)})


def test_parse_choices_checks_counts_and_reasons():
    ok = {"index": 0, "token_ids": [4], "logprobs": {"token_logprobs": [-1.0]}, "finish_reason": "length"}
    assert parse_choices([ok], 1, 1) == [([4], [-1.0], "length")]
    with pytest.raises(VLLMError, match="expected 1·2"):
        parse_choices([ok], 1, 2)
    with pytest.raises(VLLMError, match="logprobs"):
        parse_choices([dict(ok, logprobs={"token_logprobs": []})], 1, 1)
    with pytest.raises(VLLMError, match="abort"):
        parse_choices([dict(ok, finish_reason="abort")], 1, 1)


def test_server_command_defaults_and_passthrough():
    cmd = vs.server_command("/m", python="py", port=9, extra_args=["--dtype", "float32"], cpu=True)
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--api-key" not in cmd
    assert cmd[cmd.index("--middleware") + 1] == "openrs_vllm_auth.TokenAuthMiddleware"
    assert "--enforce-eager" in cmd and cmd[-2:] == ["--dtype", "float32"]
    assert cmd[cmd.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert cmd[cmd.index("--distributed-executor-backend") + 1] == "uni"
    mp = vs.server_command("/m", python="py", extra_args=["--distributed-executor-backend=mp"], cpu=True)
    assert "--distributed-executor-backend" not in mp  # the caller's choice, given once
    gpu = vs.server_command("/m", python="py", extra_args=["--logprobs-mode=raw_logprobs"], cpu=False)
    assert "--enforce-eager" not in gpu and gpu.count("--logprobs-mode=raw_logprobs") == 1
    assert "--distributed-executor-backend" not in gpu
    assert "--logprobs-mode" not in gpu
    env = vs.server_env(cpu=True, api_key="k", base={"VLLM_CPU_KVCACHE_SPACE": "4", "PYTHONPATH": "/x"})
    assert env == {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_HOST_IP": "127.0.0.1",
                   "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_API_KEY": "k",
                   "PYTHONPATH": f"{vs.SERVER_SIDE_DIR}:/x"}
    # Binding beyond loopback is worth a warning, saying what is exposed.
    assert vs.exposure_warning("127.0.0.1", None) is None and vs.exposure_warning("localhost", "k") is None
    assert "without an API key" in vs.exposure_warning("0.0.0.0", None)
    assert "every route but /health needs the API key" in vs.exposure_warning("192.0.2.2", "k")
    # The key must reach our middleware: as a vLLM flag it would guard /v1 only.
    with pytest.raises(vs.VLLMServerError, match="not as a vLLM flag"):
        vs.server_command("/m", python="py", extra_args=["--api-key=k"])


def test_serve_cli_dry_run(tmp_path, capsys):
    rc = serve.main(["--model", str(tmp_path), "--port", "1234", "--python", "/nonexistent/python", "--dry-run",
                     "--max-model-len", "64"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "VLLM_SERVER_DEV_MODE=1" in out
    assert f"-m vllm.entrypoints.openai.api_server --model {tmp_path} --host 127.0.0.1 --port 1234" in out
    assert out.rstrip().endswith("--max-model-len 64")
    with pytest.raises(SystemExit, match="not a directory"):
        serve.main(["--model", str(tmp_path / "missing"), "--dry-run"])


class VirtualClock:
    """Stands in for the engine's `time` module: sleeps advance a counter at once, so the
    retry deadlines are checked without waiting (and without wall-clock asserts)."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    from openrs_jax.rollout import vllm_engine

    virtual = VirtualClock()
    monkeypatch.setattr(vllm_engine, "time", virtual)
    return virtual


def test_nothing_listening_fails_after_the_connect_window_not_the_generation_timeout(tmp_path, clock):
    """The trainer's policy (600 s retry timeout) against a port where nothing listens: the
    error comes after connect_timeout (10 s), says so, and says how to start a server."""
    port = vs.free_port()
    engine = make_engine(f"http://127.0.0.1:{port}", tmp_path, retry=RetryPolicy(timeout=600.0))
    with pytest.raises(VLLMUnavailableError) as err:
        engine.generate([[1, 2]], 2, SamplingParams(max_new_tokens=2))
    assert clock.now <= RetryPolicy().connect_timeout
    message = str(err.value)
    assert message.startswith(f"no vLLM server answers at http://127.0.0.1:{port} (GET /v1/models: connection error")
    assert f"Start one with: python -m openrs_jax.serve --model DIR --port {port} and wait for 'ready'" in message


def test_a_server_that_answered_before_is_waited_for_the_full_retry_timeout(fake, tmp_path, clock):
    engine = make_engine(fake.url, tmp_path, retry=RetryPolicy(timeout=60.0))
    assert engine.model_name == "tiny"
    fake.close()  # it goes away (a restart that never comes back)
    with pytest.raises(VLLMUnavailableError, match="it answered before, so it stopped or is restarting"):
        engine.generate([[1]], 2, SamplingParams(max_new_tokens=2))
    assert 60.0 - RetryPolicy().max_sleep <= clock.now <= 60.0


def test_resync_inside_a_retry_shares_its_deadline(fake, tmp_path, clock):
    """Completions keep failing; the re-sync run before each resend starts failing late in
    the window. Its own retry loop used to get a fresh full timeout (up to twice the wait)."""
    engine = make_engine(fake.url, tmp_path, retry=RetryPolicy(timeout=100.0, initial=1.0, max_sleep=5.0))
    engine.update_weights({"w": np.ones(2, np.float32)})
    fake.fail = lambda path: path == "/v1/completions" or (path == "/weight_info" and clock.now > 90.0)
    with pytest.raises(VLLMUnavailableError):
        engine.generate([[1]], 2, SamplingParams(max_new_tokens=2))
    assert clock.now <= 100.0
    assert fake.paths().count("/weight_info") > 3  # the re-sync did run before resends


def test_a_stuck_server_is_a_clear_error_not_a_raw_timeout(tmp_path):
    """A server that accepts the connection but never answers: VLLMError after the read timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        engine = make_engine(url, tmp_path, model_name="tiny", request_timeout=0.5)
        with pytest.raises(VLLMError, match=r"POST .*/v1/completions: no answer within 0 s .*stuck or too slow"):
            engine.generate([[1]], 1, SamplingParams(max_new_tokens=2))
    finally:
        listener.close()


def test_logprobs_mode_must_match_what_the_loss_compares():
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.vllm_engine import check_logprobs_mode

    at_07 = SamplingParams(temperature=0.7)
    check_logprobs_mode("processed_logprobs", at_07)  # the sampling distribution, as asked
    check_logprobs_mode("raw_logprobs", SamplingParams(temperature=0.7, logprob_temperature=1.0))
    check_logprobs_mode("processed_logprobs", SamplingParams(temperature=0.7, logprob_temperature=0.7))
    check_logprobs_mode("raw_logprobs", SamplingParams(temperature=1.0))  # raw is the sampling distribution
    with pytest.raises(ValueError, match="start it with --logprobs-mode raw_logprobs"):
        check_logprobs_mode("processed_logprobs", SamplingParams(temperature=0.7, logprob_temperature=1.0))
    with pytest.raises(ValueError, match="start it with --logprobs-mode processed_logprobs"):
        check_logprobs_mode("raw_logprobs", at_07)
    with pytest.raises(ValueError, match="processed_logprobs"):
        check_logprobs_mode("processed_logprobs", SamplingParams(temperature=0.7, top_p=0.9, logprob_temperature=0.7))
