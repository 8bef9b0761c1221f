"""Metric sinks with TRL's metric names: stdout, `metrics.jsonl`, TensorBoard, and the sampled
completions table (layer L0: no JAX).

TensorBoard events are written with the `tensorboard` package's own event writer. (clu's
metric writers import TensorFlow at package import, which this project does not install.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Mapping

METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"

# The columns of the one-line progress report, in order.
PROGRESS_KEYS = (
    ("reward", "reward"),
    ("kl", "kl"),
    ("completions/mean_length", "len"),
    ("grad_norm", "gnorm"),
    ("learning_rate", "lr"),
    ("tokens_per_s", "tok/s"),
    ("time/step", "s/step"),
)


class PhaseTimer:
    """Wall time per named phase: `with timer("rollout"): ...` adds to `timer.times["rollout"]`
    (a phase entered twice accumulates). The one timing helper of the training loop."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


def _clean(v: Any) -> Any:
    """JSON-safe scalars: NaN/inf become null, numpy/JAX scalars become Python numbers."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _read_jsonl(path: pathlib.Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a killed run
    return rows


def truncate_after(path: str | os.PathLike, step: int) -> None:
    """Drops the records with `step` > `step` (and a torn last line): a resumed run rewrites
    the steps after its checkpoint, so the log ends up as if it had never stopped."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    keep = [r for r in _read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


class JsonlWriter:
    """One JSON object per line, flushed per record (a killed run loses at most one line)."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a")

    def write(self, record: Mapping[str, Any]) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardWriter:
    """Scalars to a TensorBoard event file in `logdir`."""

    def __init__(self, logdir: str | os.PathLike):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._Event, self._Summary = Event, Summary
        self._writer = EventFileWriter(str(logdir))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = []
        for k, v in scalars.items():
            v = _clean(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values.append(self._Summary.Value(tag=k, simple_value=float(v)))
        self._writer.add_event(self._Event(wall_time=time.time(), step=step, summary=self._Summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def format_progress(step: int, max_steps: int, metrics: Mapping[str, Any]) -> str:
    parts = [f"step {step}/{max_steps}"]
    for key, short in PROGRESS_KEYS:
        v = _clean(metrics.get(key))
        if v is None:
            continue
        if key == "learning_rate":
            parts.append(f"{short} {v:.2e}")
        elif abs(v) >= 100:
            parts.append(f"{short} {v:,.0f}")
        else:
            parts.append(f"{short} {v:.4g}")
    return " | ".join(parts)


class MetricsLogger:
    """Fans a step's metrics out to the configured sinks ("stdout", "jsonl", "tensorboard")."""

    def __init__(self, run_dir: str | os.PathLike, report_to: Iterable[str], max_steps: int, stream=None):
        self.run_dir = pathlib.Path(run_dir)
        self.report_to = tuple(report_to)
        self.max_steps = max_steps
        self.stream = stream or sys.stdout
        self._jsonl = JsonlWriter(self.run_dir / METRICS_FILE) if "jsonl" in self.report_to else None
        self._tb = TensorBoardWriter(self.run_dir / "tensorboard") if "tensorboard" in self.report_to else None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **metrics}
        if self._jsonl is not None:
            self._jsonl.write(record)
        if self._tb is not None:
            self._tb.write_scalars(step, metrics)
        if "stdout" in self.report_to:
            print(format_progress(step, self.max_steps, metrics), file=self.stream, flush=True)

    def close(self) -> None:
        for w in (self._jsonl, self._tb):
            if w is not None:
                w.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    return _read_jsonl(pathlib.Path(run_dir) / METRICS_FILE)
