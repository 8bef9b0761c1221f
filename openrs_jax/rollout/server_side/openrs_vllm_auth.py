"""ASGI middleware for the vLLM servers we start: the weight-sync routes answer only the token
holder, or only loopback clients when there is no token (stdlib only; see __init__).

vLLM's `--api-key` guards the inference API (/v1, /v2, /inference, /cohere) and nothing else,
so the routes that `VLLM_SERVER_DEV_MODE=1` turns on for our weight sync (/collective_rpc,
which reloads weights from any path on the server, /pause, /resume, /update_weight_version,
/reset_prefix_cache, /sleep, ...) answered anyone. `vllm_server` loads this class with
`--middleware openrs_vllm_auth.TokenAuthMiddleware`; vLLM adds it last, so it sees every
request first. The token is the server's API key, read from env `VLLM_API_KEY` (where
`vllm_server` puts it, also for vLLM's own check, so it is not on the command line).

  - With a key: every request but OPTIONS and the probes in `PROBES` needs
    `Authorization: Bearer <key>` (401 otherwise).
  - Without a key: the inference API and the read-only routes in `OPEN_WITHOUT_KEY` answer
    anyone who can connect; every other route answers loopback clients only (403 otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os

API_KEY_ENV = "VLLM_API_KEY"
PROBES = frozenset({"/health", "/ping", "/ready", "/readyz"})
API_PREFIXES = ("/v1/", "/v2/", "/inference/", "/cohere/")
OPEN_WITHOUT_KEY = PROBES | {"/version", "/load", "/metrics", "/tokenize", "/detokenize"}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine (None: a Unix socket, also local)."""
    if host is None:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class TokenAuthMiddleware:
    """Pure ASGI middleware; `key` defaults to env VLLM_API_KEY (see the module docstring)."""

    def __init__(self, app, key: str | None = None):
        self.app = app
        key = key if key is not None else os.environ.get(API_KEY_ENV) or None
        self._key_digest = _digest(key) if key else None

    def verdict(self, path: str, authorization: str | None, client_host: str | None) -> tuple[int, str] | None:
        """None to pass the request on, else (HTTP status, reason)."""
        if self._key_digest is not None:
            if path in PROBES:
                return None
            scheme, _, token = (authorization or "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(_digest(token.strip()), self._key_digest):
                return None
            return 401, "Unauthorized: this server needs 'Authorization: Bearer <api key>' on every route"
        if path.startswith(API_PREFIXES) or path in OPEN_WITHOUT_KEY or is_loopback(client_host):
            return None
        return 403, (f"Forbidden: {path} answers only clients on the server's machine when it has no API key; "
                     "start it with an API key to use it from elsewhere")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        authorization = headers.get(b"authorization")
        client = scope.get("client")
        refused = self.verdict(
            path, authorization.decode("latin-1") if authorization else None, client[0] if client else None
        )
        if refused is None:
            return await self.app(scope, receive, send)
        status, reason = refused
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            return
        body = json.dumps({"error": reason}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
