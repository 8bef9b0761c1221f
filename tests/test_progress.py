"""Progress bars with ETA (openrs_jax.progress) and compilation lines (openrs_jax.compile_log)."""

import io

import jax
import jax.numpy as jnp

from openrs_jax.compile_log import COMPILE_EVENT, _Announcer, announce_compiles
from openrs_jax.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_lines_mode_in_logs_prints_counts_rate_and_eta(monkeypatch):
    monkeypatch.delenv("OPENRS_PROGRESS", raising=False)
    out = io.StringIO()  # not a terminal: plain lines, no carriage returns
    bar = Progress(4, "eval aime24", unit="seq", stream=out, interval_s=0.0)
    assert bar.mode == "lines" and bar.eta_text() == "?"
    bar.update(1, postfix="1 correct")
    bar.write("a line of the run")
    bar.update(2)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("eval aime24: 1/4 [") and lines[0].endswith("seq/s, 1 correct]")
    assert lines[1] == "a line of the run"
    assert lines[2].startswith("eval aime24: 3/4 [")
    assert len(lines) == 3  # close() repeats no line for an unchanged count
    assert "\r" not in out.getvalue()


def test_lines_mode_prints_at_most_every_interval(monkeypatch):
    monkeypatch.delenv("OPENRS_PROGRESS", raising=False)
    out = io.StringIO()
    bar = Progress(100, "train", unit="step", stream=out, interval_s=3600.0, initial=10)
    for _ in range(20):
        bar.update(1)
    assert out.getvalue() == ""  # no line inside the interval ...
    bar.close()
    assert out.getvalue().startswith("train: 30/100 [")  # ... one at the end


def test_bar_mode_on_a_terminal_and_forced_modes(monkeypatch):
    monkeypatch.delenv("OPENRS_PROGRESS", raising=False)
    term = Terminal()
    bar = Progress(3, "generate", unit="seq", stream=term)
    assert bar.mode == "bar"
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    monkeypatch.setenv("OPENRS_PROGRESS", "off")
    quiet = Terminal()
    bar = Progress(3, "x", stream=quiet)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_announcer_lines_for_long_compilations_only():
    lines = []
    a = _Announcer(lines.append, threshold_s=10.0, prefix="[openrs] ")
    a.on_start(COMPILE_EVENT, 0.0, fun_name="jit_fast")
    a.on_end(COMPILE_EVENT, 0.2, fun_name="jit_fast")
    assert lines == []  # quick: silent
    a.on_start(COMPILE_EVENT, 0.0, fun_name="jit_grpo_update")
    a._announce(next(iter(a._running)))  # what the threshold timer does once it expires
    a.on_end(COMPILE_EVENT, 31.25, fun_name="jit_grpo_update")
    assert lines == ["[openrs] compiling jit(grpo_update) ...", "[openrs] compiled jit(grpo_update) in 31.2 s"]
    a.on_end(COMPILE_EVENT, 12.0, fun_name="jit_prefill")  # no start event (older JAX): end line alone
    a.on_end("/jax/other/event", 99.0, fun_name="x")
    assert lines[-1] == "[openrs] compiled jit(prefill) in 12.0 s" and len(lines) == 3
    a.stop()


def test_announce_compiles_hears_jax_and_stops_after_the_block():
    lines = []

    def openrs_probe(x):
        return jnp.sin(x) * 3 + 1

    with announce_compiles(lines.append, threshold_s=0.0):
        jax.jit(openrs_probe)(jnp.ones(5)).block_until_ready()
    assert any(line.startswith("[openrs] compiled jit(openrs_probe) in ") for line in lines), lines
    count = len(lines)

    def openrs_probe_after(x):
        return jnp.cos(x) - 2

    jax.jit(openrs_probe_after)(jnp.ones(5)).block_until_ready()
    assert len(lines) == count
