"""The `vllm` rollout engine: an HTTP client of an external vLLM OpenAI server (layer L4).

Rollouts: each request sends token-id prompts to `/v1/completions` with `n = G`,
`logprobs = 0` (the sampled token's log-prob) and `return_token_ids`; requests of
`prompts_per_request` prompts run concurrently on a thread pool, and choice `p·G + g` of the
answers becomes row `p·G + g` of the `RolloutBatch` (prompt-major, like the JAX engine), packed
by `pack_completions` so masks match. Connection errors and 5xx are retried with exponential
backoff for up to `retry.timeout` s; then a `VLLMUnavailableError` names the URL and the
command that starts a server.

Timeouts. Each request connects within `retry.connect_timeout` s (a host that drops packets
fails in seconds, not after the generation timeout), then waits up to its own read timeout
(`request_timeout` for generation and reloads). Before the server has answered once, refused
connections are retried only for `retry.connect_timeout` s: a URL where nothing listens fails
fast, saying how to start a server. Once it has answered, connection errors mean a restart,
waited out for `retry.timeout` s. A re-sync run inside a retry shares the deadline of the call
that retries (no second full retry loop inside the first).

Weight sync (`update_weights`, every step; docs/design.md): HF-named safetensors are written to
`<sync_dir>/.tmp-…/` and renamed atomically to `<sync_dir>/v<version>/`, then
`/pause?mode=wait` → `/collective_rpc {"method": "reload_weights", "kwargs":
{"weights_path": DIR}}` → `/reset_prefix_cache` (else cached attention states of the old
weights are reused) → `/update_weight_version` → `/resume`. The sync dir must be on a file
system the server sees under the same path.

Stale-server detection: the version stamped on the server is `"<session>:<version>"` with a
random session id per engine, read back from `/weight_info` after every sync and before every
`generate` (and before each retry). A server restarted since the last sync reports vLLM's
`"default"`, a server synced by another engine reports another session: either way the engine
reloads its latest weights directory before sampling. `RolloutBatch.weight_version` is the
integer version that produced the batch.

Departures from TRL's vLLM server mode:
1. Per-request seeds: request r gets `seed + r·prompts_per_request·G` and vLLM gives child g
   of a request `seed + g`, so with `prompts_per_request = 1` every completion has its own
   seed and a step is reproducible. (On GPUs seeded requests are somewhat slower.)
2. Weights go through the file system (safetensors, HF names), not NCCL.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import pathlib
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import requests

from openrs_jax.rollout import vllm_server
from openrs_jax.rollout.base import FINISH_LENGTH, FINISH_STOP, RolloutBatch, RolloutEngine, SamplingParams, pack_completions

_RETRY_STATUS = frozenset(range(500, 600))
_VERSION_DIR_PREFIX = "v"
_VERSION_FILE = "openrs_weight_version.json"
_DEFAULT_SERVER_VERSION = "default"
FINISH_ABORT = "abort"  # vLLM's finish_reason for a request its engine dropped


class VLLMError(RuntimeError):
    """The server answered, but not with what we need (4xx, malformed answer, failed reload)."""


class VLLMUnavailableError(VLLMError):
    """The server could not be reached (or kept failing with 5xx) within the retry timeout."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: sleep `initial`, `initial·factor`, … (at most `max_sleep`) until
    `timeout` s have passed since the first failure of a call. `connect_timeout`: the TCP
    connect timeout of every request, and how long a server that never answered yet may
    refuse connections (module docstring)."""

    timeout: float = 120.0
    initial: float = 0.5
    factor: float = 2.0
    max_sleep: float = 10.0
    connect_timeout: float = 10.0


def to_hf_tensors(params: Any) -> dict[str, np.ndarray]:
    """HF tensor name → host array, from a mapping of HF-named arrays or an NNX `Qwen2`."""
    if isinstance(params, Mapping):
        out = {}
        for name, arr in params.items():
            if not isinstance(name, str):
                raise TypeError(f"update_weights: tensor names must be HF names (str), got {name!r}")
            out[name] = np.ascontiguousarray(np.asarray(arr))
        return out
    # Imported lazily: the weights module pulls in JAX and the model, which a pure HTTP use
    # of this engine (and its unit tests) does not need.
    from openrs_jax.weights import to_hf_state_dict

    return {k: np.ascontiguousarray(v) for k, v in to_hf_state_dict(params).items()}


def write_weights_dir(tensors: Mapping[str, np.ndarray], sync_dir: str | os.PathLike, version: int) -> pathlib.Path:
    """Writes `<sync_dir>/v<version:08d>/model.safetensors` (+ a version file) atomically:
    assembled in a temp dir beside it, then renamed, so the server never reads half a file."""
    from safetensors.numpy import save_file

    sync_dir = pathlib.Path(sync_dir)
    sync_dir.mkdir(parents=True, exist_ok=True)
    final = sync_dir / f"{_VERSION_DIR_PREFIX}{version:08d}"
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=sync_dir))
    try:
        save_file(dict(tensors), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / _VERSION_FILE).write_text(json.dumps({"version": version}))
        if final.exists():  # left by an engine that died between rename and reload
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class VLLMEngine(RolloutEngine):
    """Rollouts from a vLLM server at `base_url`; see the module docstring for the protocol.

    eos_token_ids / pad_token_id: as for `pack_completions` (rows are cut after the first EOS).
    sync_dir: where weight versions are written; must be readable by the server at that path.
    model_name: the served model name (None: the first of `/v1/models`).
    keep_versions: weight directories kept on disk (>= 1; the newest is needed for re-syncs).
    """

    def __init__(
        self,
        base_url: str,
        *,
        sync_dir: str | os.PathLike,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        model_name: str | None = None,
        api_key: str | None = None,
        prompts_per_request: int = 1,
        max_workers: int = 8,
        request_timeout: float = 3600.0,
        retry: RetryPolicy = RetryPolicy(),
        keep_versions: int = 2,
        max_attempts: int = 3,
        server_hint: str | None = None,
        logprobs_mode: str = "processed_logprobs",
    ):
        if prompts_per_request < 1:
            raise ValueError(f"prompts_per_request must be >= 1, got {prompts_per_request}")
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.base_url = base_url.rstrip("/")
        self.sync_dir = pathlib.Path(sync_dir).resolve()
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.api_key = api_key
        self.prompts_per_request = prompts_per_request
        self.max_workers = max_workers
        self.request_timeout = request_timeout
        self.retry = retry
        self.keep_versions = keep_versions
        self.max_attempts = max_attempts
        self.server_hint = server_hint or self._default_hint()
        if logprobs_mode not in ("processed_logprobs", "raw_logprobs"):
            raise ValueError(f"logprobs_mode must be processed_logprobs or raw_logprobs, got {logprobs_mode!r}")
        self.logprobs_mode = logprobs_mode
        self.session_id = uuid.uuid4().hex[:12]
        self.version = 0  # 0: the weights the server started with
        self.weights_dir: pathlib.Path | None = None
        self._model_name = model_name
        self._sync_lock = threading.RLock()
        self._resyncs = 0  # re-syncs of a stale server (not counting update_weights)
        self._answered = False  # the server has answered at least once (any HTTP status)
        self._scope = threading.local()  # .deadline: of the retrying call a re-sync runs inside

    # ------------------------------------------------------------------ HTTP
    def _default_hint(self) -> str:
        host_port = self.base_url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        if not port.isdigit():
            host, port = host_port, "80"
        return vllm_server.serve_hint("DIR", host=host or vllm_server.DEFAULT_HOST, port=int(port))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float = 60.0,
        before_retry: Callable[[], None] | None = None,
        retry_if: Callable[[requests.Response], str | None] | None = None,
    ) -> requests.Response:
        """One HTTP call, retried on connection errors and 5xx with backoff; `before_retry`
        runs before each resend (e.g. to re-sync a restarted server), under this call's
        deadline. `retry_if` reads a successful answer and names why it must be sent again
        (None: keep it), retried the same way. 4xx and a read timeout raise VLLMError."""
        url = self.base_url + path
        outer = getattr(self._scope, "deadline", None)  # set when we run inside a retry
        first_failure = None
        deadline = math.inf  # set at the first failure, before any retry reads it
        sleep = self.retry.initial
        while True:
            try:
                if first_failure is not None and before_retry is not None:
                    self._scope.deadline = deadline
                    try:
                        before_retry()
                    finally:
                        self._scope.deadline = outer
                r = requests.request(method, url, json=json_body, params=params, headers=self._headers(),
                                     timeout=(self.retry.connect_timeout, timeout))
                self._answered = True
                if r.status_code < 400:
                    why = None if retry_if is None else retry_if(r)
                    if why is None:
                        return r
                    error = why
                elif r.status_code not in _RETRY_STATUS:
                    raise VLLMError(f"{method} {url} failed with {r.status_code}: {r.text[:2000]}")
                else:
                    error = f"HTTP {r.status_code}: {r.text[:500]}"
            except requests.ConnectionError as e:  # refused, unreachable, connect timeout
                error = f"connection error: {e}"
            except requests.Timeout as e:  # the server took the connection but not the answer
                raise VLLMError(
                    f"{method} {url}: no answer within {timeout:.0f} s ({e}); the server is up but stuck or too "
                    "slow for this timeout"
                ) from None
            except VLLMUnavailableError as e:  # from before_retry: keep waiting for the server
                error = str(e)
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            window = self.retry.timeout if self._answered else min(self.retry.connect_timeout, self.retry.timeout)
            deadline = first_failure + window if outer is None else min(first_failure + window, outer)
            if now + sleep > deadline:
                raise self._unavailable(method, path, error, now - first_failure)
            time.sleep(sleep)
            sleep = min(sleep * self.retry.factor, self.retry.max_sleep)

    def _unavailable(self, method: str, path: str, error: str, waited: float) -> VLLMUnavailableError:
        if not self._answered:
            return VLLMUnavailableError(
                f"no vLLM server answers at {self.base_url} ({method} {path}: {error}; retried for {waited:.1f} s). "
                f"Start one with: {self.server_hint} and wait for 'ready', or fix the URL"
            )
        return VLLMUnavailableError(
            f"vLLM server at {self.base_url} unavailable for {waited:.1f} s ({method} {path}: {error}); it answered "
            f"before, so it stopped or is restarting. Check its log, or start one with: {self.server_hint}"
        )

    def _post(self, path: str, body: Any = None, **kw) -> requests.Response:
        return self._request("POST", path, json_body=body, **kw)

    @property
    def model_name(self) -> str:
        if self._model_name is None:
            data = self._request("GET", "/v1/models").json()["data"]
            if not data:
                raise VLLMError(f"{self.base_url}/v1/models lists no model")
            self._model_name = data[0]["id"]
        return self._model_name

    # ------------------------------------------------------------------ weights
    def server_weight_version(self) -> str:
        """The version string stamped on the server (vLLM's "default" after a (re)start)."""
        return str(self._request("GET", "/weight_info").json()["weight_version"])

    def _version_tag(self, version: int) -> str:
        return f"{self.session_id}:{version}"

    def _reload(self, weights_dir: pathlib.Path, version: int) -> None:
        """pause(wait) → reload_weights → reset_prefix_cache → stamp version → resume, then
        read the stamp back. No retries inside: a failure leaves the server paused or dead, and
        `ensure_synced` starts over."""
        if not (weights_dir / "model.safetensors").exists():
            # vLLM's engine dies on a failed reload, so never send it a bad path.
            raise VLLMError(f"weights directory {weights_dir} has no model.safetensors")
        self._post("/pause", params={"mode": "wait"}, timeout=self.request_timeout)
        try:
            self._post(
                "/collective_rpc",
                {"method": "reload_weights", "kwargs": {"weights_path": str(weights_dir)}},
                timeout=self.request_timeout,
            )
            reset = self._post("/reset_prefix_cache").json()
            if not reset.get("success", False):
                raise VLLMError(f"{self.base_url}/reset_prefix_cache did not reset: {reset}")
            self._post("/update_weight_version", {"new_version": self._version_tag(version)})
        finally:
            self._post("/resume")
        got = self.server_weight_version()
        if got != self._version_tag(version):
            raise VLLMError(
                f"{self.base_url} reports weight version {got!r} after syncing {self._version_tag(version)!r}"
            )

    @property
    def resync_count(self) -> int:
        """How often a stale (e.g. restarted) server was re-synced; a metric worth logging."""
        return self._resyncs

    def ensure_synced(self) -> None:
        """Reloads our latest weights into the server if it does not hold them (restarted, or
        synced by someone else). No-op before the first `update_weights`."""
        with self._sync_lock:
            if self.weights_dir is None:
                return
            if self.server_weight_version() != self._version_tag(self.version):
                self._reload(self.weights_dir, self.version)
                self._resyncs += 1

    def update_weights(self, params: Any) -> None:
        """Makes the server sample from `params`: a mapping of HF-named arrays or an NNX
        `Qwen2`. Arrays are written in their dtype; the server casts to its own."""
        tensors = to_hf_tensors(params)
        with self._sync_lock:
            version = self.version + 1
            weights_dir = write_weights_dir(tensors, self.sync_dir, version)
            # Committed before the reload: if it fails, `ensure_synced` retries this version.
            self.version, self.weights_dir = version, weights_dir
            # Waits out a (re)starting server with the usual backoff before pausing it.
            self._request("GET", "/health")
            self._reload(weights_dir, version)
            self._prune(keep=weights_dir)

    def _prune(self, keep: pathlib.Path) -> None:
        dirs = sorted(p for p in self.sync_dir.glob(f"{_VERSION_DIR_PREFIX}[0-9]*") if p.is_dir())
        for old in dirs[: -self.keep_versions]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ sampling
    def _request_body(self, prompts: list[list[int]], num_generations: int, sampling: SamplingParams, seed: int):
        body = {
            "model": self.model_name,
            "prompt": prompts,
            "n": num_generations,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else 0,
            "seed": seed,
            "logprobs": 0,
            "return_token_ids": True,
        }
        stop = sorted(set(sampling.stop_token_ids))
        if stop:
            body["stop_token_ids"] = stop
        return body

    def _complete(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        r = self._post(
            "/v1/completions", body, timeout=self.request_timeout, before_retry=self.ensure_synced, retry_if=_aborted
        )
        return r.json()["choices"]

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], num_generations: int, sampling: SamplingParams
    ) -> RolloutBatch:
        """P prompts × G samples → RolloutBatch with rows p·G + g (see module docstring).

        If the server had to be re-synced while the requests ran (it restarted mid-call), some
        requests may have been sampled from its start-up weights before the reload, so the
        whole batch is sampled again (at most `max_attempts` times)."""
        prompts = [[int(t) for t in p] for p in prompt_token_ids]
        if not prompts:
            raise ValueError("generate: no prompts")
        if any(not p for p in prompts):
            raise ValueError("generate: empty prompt")
        g = int(num_generations)
        check_logprobs_mode(self.logprobs_mode, sampling)
        for _ in range(self.max_attempts):
            self.ensure_synced()
            resyncs, version = self._resyncs, self.version
            rows = self._sample(prompts, g, sampling)
            with self._sync_lock:
                stale = self.weights_dir is not None and (
                    self._resyncs != resyncs or self.server_weight_version() != self._version_tag(version)
                )
            if not stale:
                ids, lps, reasons = zip(*rows)
                return pack_completions(
                    ids, lps, reasons, prompts, g, self.pad_token_id, self.eos_token_ids, weight_version=version
                )
        raise VLLMError(
            f"{self.base_url} lost its weights (restarted) during each of {self.max_attempts} rollout attempts"
        )

    def _sample(
        self, prompts: list[list[int]], g: int, sampling: SamplingParams
    ) -> list[tuple[list[int], list[float], str]]:
        chunks = _chunks(len(prompts), self.prompts_per_request)
        bodies = [
            self._request_body([prompts[i] for i in c], g, sampling, sampling.seed + c.start * g) for c in chunks
        ]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.max_workers, len(bodies))) as pool:
            futures = [pool.submit(self._complete, body) for body in bodies]
            if self.progress is not None:  # rows of the requests answered so far
                done_rows = 0
                size = {f: len(c) * g for f, c in zip(futures, chunks)}
                for future in concurrent.futures.as_completed(futures):
                    done_rows += size[future]
                    self.progress(done_rows, len(prompts) * g)
            answers = [f.result() for f in futures]
        rows = []
        for chunk, choices in zip(chunks, answers):
            rows += parse_choices(choices, len(chunk), g, self.base_url)
        return rows

    def prompt_logprobs(self, prompt_token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Server-side log p(x_t | x_<t) for t = 1..T-1 of each prompt (float32 [T-1]), at
        temperature 1 (vLLM skips sampling processors for prompt tokens). For checks."""
        self.ensure_synced()
        out = []
        for p in prompt_token_ids:
            body = {"model": self.model_name, "prompt": [[int(t) for t in p]], "max_tokens": 1, "prompt_logprobs": 0}
            choice = self._complete(body)[0]
            entries = choice["prompt_logprobs"][1:]
            out.append(np.array([e[str(int(t))]["logprob"] for e, t in zip(entries, p[1:])], np.float32))
        return out

    def close(self) -> None:
        """Nothing to release: the server belongs to whoever started it."""


def check_logprobs_mode(mode: str, sampling: SamplingParams) -> None:
    """The server's `--logprobs-mode` fixes which log-probs it returns: processed (the sampling
    distribution: after temperature, top-p, top-k) or raw (softmax of the logits, T = 1).
    Raises ValueError when that is not what `sampling.logprob_temperature` asks for."""
    filtered = sampling.top_p < 1.0 or sampling.top_k > 0
    want = sampling.logprob_temperature
    if want is None:
        ok = mode == "processed_logprobs" or (sampling.temperature == 1.0 and not filtered)
        need = "processed_logprobs"
    elif want == 1.0 and mode == "raw_logprobs":
        ok, need = True, "raw_logprobs"
    else:
        ok = mode == "processed_logprobs" and want == sampling.temperature and not filtered
        need = "raw_logprobs" if want == 1.0 else "processed_logprobs (with the log-prob temperature equal to the "
        need += "" if want == 1.0 else "sampling temperature, no top-p/top-k)"
    if not ok:
        raise ValueError(
            f"the vLLM server returns {mode} but log-probs at temperature {want or sampling.temperature} were asked "
            f"for (sampling temperature {sampling.temperature}, top_p {sampling.top_p}, top_k {sampling.top_k}): "
            f"start it with --logprobs-mode {need}"
        )


def _aborted(r: requests.Response) -> str | None:
    """A 200 whose completions vLLM aborted: its engine stopped under the API server (a kill or a
    shutdown reaches the engine process first and the API server answers the open requests
    with finish_reason 'abort'). The server is going down or restarting: send the request again.
    Every rollout answer passes here and `_complete` parses it afterwards: the JSON (megabytes
    for long completions) is parsed a second time only when the word occurs in it at all."""
    if FINISH_ABORT.encode() not in r.content:
        return None
    try:
        reasons = [c.get("finish_reason") for c in r.json().get("choices", [])]
    except ValueError:  # not JSON: parse_choices' caller reports it
        return None
    n = sum(reason == FINISH_ABORT for reason in reasons)
    return f"{n} of {len(reasons)} completions finished with 'abort' (the server is stopping)" if n else None


def parse_choices(
    choices: Sequence[Mapping[str, Any]], num_prompts: int, num_generations: int, url: str = "server"
) -> list[tuple[list[int], list[float], str]]:
    """/v1/completions choices → (token ids, sampled-token log-probs, finish reason) in order
    p·G + g (vLLM numbers choice `index` that way)."""
    expected = num_prompts * num_generations
    if len(choices) != expected:
        raise VLLMError(f"{url} returned {len(choices)} choices, expected {num_prompts}·{num_generations}")
    out = []
    for choice in sorted(choices, key=lambda c: int(c["index"])):
        ids = choice.get("token_ids")
        if ids is None:
            raise VLLMError(f"{url} returned no token_ids (does the server support return_token_ids?)")
        lp = (choice.get("logprobs") or {}).get("token_logprobs")
        if lp is None or len(lp) != len(ids) or any(x is None for x in lp):
            raise VLLMError(f"{url} returned {0 if lp is None else len(lp)} logprobs for {len(ids)} tokens")
        reason = choice.get("finish_reason")
        if reason not in (FINISH_STOP, FINISH_LENGTH):
            raise VLLMError(f"{url}: completion {choice['index']} finished with {reason!r} (aborted?)")
        out.append((list(map(int, ids)), [float(x) for x in lp], reason))
    if [int(c["index"]) for c in sorted(choices, key=lambda c: int(c["index"]))] != list(range(expected)):
        raise VLLMError(f"{url} returned choice indices that are not 0..{expected - 1}")
    return out
