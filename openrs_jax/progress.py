"""Progress bars with an ETA that stay readable in CI logs (layer L0: no JAX).

    bar = Progress(total=500, desc="train", unit="step", initial=0)
    bar.update(1, postfix="reward 0.41")      # per step
    bar.write("[openrs] a line")              # printed above the bar, never through it
    bar.close()

On a terminal this is a tqdm bar (rate and ETA, redrawn in place). When the stream is not a
terminal (a pipe, a CI log, a file) nothing is redrawn: a plain line with the same counts, rate
and ETA is printed at most every `interval_s` seconds and once at the end, so a log holds a
handful of lines instead of carriage-return noise. `OPENRS_PROGRESS=bar|lines|off` forces a
mode. Lines of other code go through `write` (or `Progress.write`), which keeps an active bar
intact.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from tqdm import tqdm

PROGRESS_ENV = "OPENRS_PROGRESS"
# The line format of both modes: counts, elapsed<remaining, rate, then the caller's postfix.
LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _is_tty(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_mode(stream: IO) -> str:
    """"bar" on a terminal, "lines" otherwise; OPENRS_PROGRESS overrides (bar, lines, off)."""
    forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    return "bar" if _is_tty(stream) else "lines"


def write(line: str, stream: IO | None = None) -> None:
    """Prints `line` to `stream` (default stdout) without breaking an active bar."""
    out = stream or sys.stdout
    tqdm.write(line, file=out)
    out.flush()


class Progress:
    """A counter with rate and ETA over `total` units (module docstring). `initial`: units done
    before this process started (a resumed run), excluded from the rate."""

    def __init__(self, total: int, desc: str, *, unit: str = "it", stream: IO | None = None, initial: int = 0,
                 interval_s: float = 30.0, mode: str | None = None):
        self.stream = stream or sys.stdout
        self.mode = mode or progress_mode(self.stream)
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = int(initial)
        self._start_n = self.n
        self.interval_s = interval_s
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._last_n = None  # the count of the last printed line
        self._postfix = ""
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=self.unit, file=self.stream,
                             dynamic_ncols=True, bar_format=BAR_FORMAT, leave=True, smoothing=0.1)

    # ------------------------------------------------------------------ reading
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def rate(self) -> float | None:
        """Units per second since this bar started (None before the first unit)."""
        done = self.n - self._start_n
        return done / self.elapsed if done > 0 and self.elapsed > 0 else None

    def remaining_s(self) -> float | None:
        rate = self.rate()
        return None if rate is None else max(self.total - self.n, 0) / rate

    def eta_text(self) -> str:
        """"1:02:03" (tqdm's interval format), or "?" before a rate is known."""
        remaining = self.remaining_s()
        return "?" if remaining is None else tqdm.format_interval(remaining)

    def line(self) -> str:
        """The state as one line (the "lines" mode's output)."""
        return tqdm.format_meter(self.n, self.total, self.elapsed, prefix=self.desc, unit=self.unit,
                                 bar_format=LINE_FORMAT, postfix=self._postfix or None,
                                 rate=self.rate())

    # ------------------------------------------------------------------ writing
    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.update_to(self.n + n, postfix)

    def update_to(self, n: int, postfix: str | None = None) -> None:
        """Sets the count to `n` (never backwards)."""
        n = max(int(n), self.n)
        if postfix is not None:
            self._postfix = postfix
        delta, self.n = n - self.n, n
        if self._bar is not None:
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(delta)
        elif self.mode == "lines" and time.monotonic() - self._last_line >= self.interval_s and self.n < self.total:
            self._emit()

    def _emit(self) -> None:
        self._last_line, self._last_n = time.monotonic(), self.n
        print(self.line(), file=self.stream, flush=True)

    def write(self, line: str) -> None:
        """Prints a line above the bar (or plainly in the lines mode)."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Ends the bar; the lines mode prints its final line (unless nothing was done)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.n > self._start_n and self._last_n != self.n:
            self._emit()
        self.mode = "closed"

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
