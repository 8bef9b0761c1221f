"""The auth middleware of our vLLM servers on synthetic ASGI requests (no vLLM needed): with a
key every route but the probes needs the token; without one the dev routes answer loopback
clients only. tests/rollout/test_vllm_lifetime.py checks it inside a real server."""

import asyncio
import json

import pytest

from openrs_jax.rollout.server_side.openrs_vllm_auth import TokenAuthMiddleware, is_loopback

DEV_ROUTES = ["/collective_rpc", "/pause", "/resume", "/update_weight_version", "/reset_prefix_cache", "/sleep",
              "/weight_info", "/start_profile", "/init_weight_transfer_engine"]


def call(middleware, path, *, token=None, client=("127.0.0.1", 5000), method="POST", kind="http"):
    """(status, body) the middleware answers, or "passed" when it hands the request on."""
    sent = []

    async def app(scope, receive, send):
        sent.append("passed")

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    scope = {"type": kind, "path": path, "method": method, "headers": headers, "client": client, "root_path": ""}
    asyncio.run(TokenAuthMiddleware(app, **middleware)(scope, receive, send))
    if sent == ["passed"]:
        return "passed"
    if kind == "websocket":
        return sent[0]["code"], sent[0]["reason"]
    return sent[0]["status"], json.loads(sent[1]["body"])["error"]


@pytest.mark.parametrize("path", DEV_ROUTES + ["/v1/completions", "/v1/models", "/tokenize", "/metrics"])
def test_with_a_key_every_route_needs_the_token(path):
    key = {"key": "s3cret"}
    status, reason = call(key, path)
    assert status == 401 and "Bearer" in reason
    assert call(key, path, token="wrong")[0] == 401
    assert call(key, path, token="s3cret") == "passed"
    assert call(key, path, token="s3cret", client=("203.0.113.9", 1)) == "passed"


def test_with_a_key_probes_and_preflight_stay_open():
    key = {"key": "s3cret"}
    for path in ("/health", "/ping", "/ready", "/readyz"):
        assert call(key, path, method="GET", client=("203.0.113.9", 1)) == "passed"
    assert call(key, "/collective_rpc", method="OPTIONS") == "passed"
    assert call(key, "/v1/realtime", kind="websocket")[0] == 1008


@pytest.mark.parametrize("path", DEV_ROUTES)
def test_without_a_key_dev_routes_answer_loopback_only(path):
    nokey = {"key": ""}
    for client in (("127.0.0.1", 1), ("::1", 1), ("::ffff:127.0.0.1", 1), None):
        assert call(nokey, path, client=client) == "passed"
    status, reason = call(nokey, path, client=("192.0.2.2", 1))
    assert status == 403 and path in reason and "API key" in reason


def test_without_a_key_the_inference_api_stays_open():
    nokey = {"key": ""}
    for path in ("/v1/completions", "/v1/models", "/health", "/tokenize", "/version"):
        assert call(nokey, path, client=("192.0.2.2", 1)) == "passed"


def test_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    assert call({}, "/pause")[0] == 401
    assert call({}, "/pause", token="from-env") == "passed"
    monkeypatch.delenv("VLLM_API_KEY")
    assert call({}, "/pause", client=("192.0.2.2", 1))[0] == 403


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1") and is_loopback(None)
    assert not is_loopback("192.0.2.2") and not is_loopback("0.0.0.0") and not is_loopback("example.org")
