"""What every command-line tool does with an error (layer L6).

`run_cli(prog, main)` runs `main()` and reports the errors a user causes and can fix (a bad
flag, path, config, data file, checkpoint, an unreachable server, a full disk) as one line on
stderr with a non-zero exit code; only bugs (any other exception) keep their traceback.
`OPENRS_DEBUG=1` shows the traceback of every error.

Expected errors: `UserError`, every exception class defined in openrs_jax (ConfigError,
DataError, CheckpointError, WeightsError, VLLMError, ...: their messages are written for
users), `ValueError` and `OSError` (missing files, permissions, no space left).

Exit codes: 0 success; 2 the input was refused before any work (`UserError`, `ConfigError`);
1 any other expected error; 130 interrupted (Ctrl-C). `SystemExit` passes through unchanged.

Several processes (`openrs_jax.distributed`): the same program runs in every process. An error
in one of them is printed by that process, prefixed `[process k of N]`, and then stops all the
others (`distributed.fail`): each prints `error: process k of N stopped the run: ...` and exits
with the same code, instead of waiting forever in a collective for the process that left.
`add_distributed_arguments` / `start_distributed` give a tool the flags and the runtime.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from openrs_jax.config import ConfigError

DEBUG_ENV_VAR = "OPENRS_DEBUG"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UserError(Exception):
    """Bad input caught before any work: printed as `error: <message>`, exit code 2."""


def _is_ours(exc: BaseException) -> bool:
    return any(cls.__module__.split(".")[0] == "openrs_jax" for cls in type(exc).__mro__)


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is reported as one line (see the module docstring)."""
    return isinstance(exc, (UserError, ValueError, OSError)) or (isinstance(exc, Exception) and _is_ours(exc))


def _refused_input(exc: BaseException) -> bool:
    return isinstance(exc, (UserError, ConfigError))


def error_line(exc: BaseException) -> str:
    """`error: message` for refused input, `error: Type: message` otherwise."""
    return f"error: {exc}" if _refused_input(exc) else f"error: {type(exc).__name__}: {exc}"


def exit_code(exc: BaseException) -> int:
    return EXIT_USAGE if _refused_input(exc) else EXIT_ERROR


def _distributed():
    """The distributed module when this process is one of several, else None (not imported
    otherwise: a plain CLI error must not pull JAX in)."""
    dist = sys.modules.get("openrs_jax.distributed")
    return dist if dist is not None and dist.is_initialized() else None


def run_cli(prog: str, main: Callable[[], int | None]) -> int:
    """Runs `main()` and returns the process exit code (`main`'s, or one for its error)."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        dist = _distributed()
        if dist is not None:
            dist.fail(f"{prog}: interrupted", EXIT_INTERRUPTED)  # never returns
        if os.environ.get(DEBUG_ENV_VAR):
            raise
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except SystemExit as e:
        dist = _distributed()
        if dist is not None and e.code not in (None, 0):
            code = e.code if isinstance(e.code, int) else EXIT_ERROR
            dist.fail(f"{prog}: exit code {code}" if isinstance(e.code, int) else f"error: {e.code}", code)
        raise
    except Exception as e:  # bugs are re-raised below, with their traceback
        bug = bool(os.environ.get(DEBUG_ENV_VAR)) or not is_user_error(e)
        dist = _distributed()
        if dist is not None:
            if bug:
                traceback.print_exc()
            line = error_line(e) if not bug else f"error: {type(e).__name__}: {e}"
            dist.fail((line.splitlines() or [line])[0], EXIT_ERROR if bug else exit_code(e))  # never returns
        if bug:
            raise
        print(error_line(e), file=sys.stderr, flush=True)
        return exit_code(e)


# ---------------------------------------------------------------------------- several processes
def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a multi-process run (openrs_jax.distributed); all optional: SLURM, Open MPI
    and Kubernetes indexed jobs are read from the environment."""
    g = parser.add_argument_group(
        "several processes (one per host or per GPU; see docs/MULTIHOST.md)",
        "Read from the launcher's environment (SLURM srun, Open MPI mpirun, MPICH, Kubernetes indexed "
        "jobs / JobSet) or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; these flags win.",
    )
    g.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                   help="process 0's host and a free port, the same on every process")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="processes in the run (1: run alone, whatever the environment says)")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, 0..N-1")
    g.add_argument("--distributed-timeout", type=int, default=300, metavar="S",
                   help="seconds to wait for every process to join (default 300)")
    g.add_argument("--heartbeat-timeout", type=int, default=100, metavar="S",
                   help="a process silent this long is dead and the run stops (default 100)")


def start_distributed(args: argparse.Namespace, log: Callable[[str], None]) -> bool:
    """Joins the multi-process run the flags and the environment describe, before anything
    starts JAX's backend. Returns whether there are several processes."""
    from openrs_jax import distributed as dist

    try:
        spec = dist.resolve(coordinator_address=args.coordinator_address, num_processes=args.num_processes,
                            process_id=args.process_id)
    except dist.DistributedError as e:
        raise UserError(str(e)) from None
    if spec is None:
        return False
    dist.initialize(spec, init_timeout_s=args.distributed_timeout, heartbeat_timeout_s=args.heartbeat_timeout,
                    log=log if spec.process_id == 0 else (lambda msg: None))
    return True
