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
"""

from __future__ import annotations

import os
import sys
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


def run_cli(prog: str, main: Callable[[], int | None]) -> int:
    """Runs `main()` and returns the process exit code (`main`'s, or one for its error)."""
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_ENV_VAR):
            raise
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 — bugs are re-raised below, with their traceback
        if os.environ.get(DEBUG_ENV_VAR) or not is_user_error(e):
            raise
        print(error_line(e), file=sys.stderr, flush=True)
        return exit_code(e)
