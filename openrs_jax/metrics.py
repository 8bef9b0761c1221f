"""Metric sinks with TRL's metric names: stdout, `metrics.jsonl`, TensorBoard, Weights & Biases,
and the sampled completions table (layer L0: no JAX).

`metrics.jsonl` keeps our names (`reward`, `val/score`); TensorBoard and W&B get the layout the
HF Trainer gives TRL's metrics (`transformers` `rewrite_logs`): `train/<name>` for training
metrics, `eval/<name>` for validation ones (ours are `val/<name>`), plotted against the
optimizer step (`train/global_step` in W&B). W&B also gets the completions table under
`completions` (columns step, prompt, completion, one per reward, advantage), as TRL logs it.

TensorBoard events are written with the `tensorboard` package's own event writer. (clu's
metric writers import TensorFlow at package import, which this project does not install.)
W&B is optional (`pip install 'openrs-jax[wandb]'`); `WANDB_MODE=offline` writes the run under
`<run_dir>/wandb` without an account.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import secrets
import sys
import time
from typing import Any, Iterable, Mapping

METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"

# Metrics that depend on the machine, its load and the compilation cache rather than on the run's
# numbers: wall times, throughput, compilation counts. Everything else in a row is a function of
# the config and seed (a resumed or re-launched run must reproduce it; the tests compare it).
MACHINE_DEPENDENT = ("time/", "tokens_per_s", "rollout/tokens_per_s", "rollout/compiles", "rollout/compile_s",
                     "compile/")


def run_dependent(row: Mapping[str, Any]) -> dict[str, Any]:
    """`row` without its MACHINE_DEPENDENT metrics."""
    return {k: v for k, v in row.items() if not k.startswith(MACHINE_DEPENDENT)}


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
        # Generated protobuf modules: their classes are made at import time, invisible to pyright.
        from tensorboard.compat.proto.event_pb2 import Event  # pyright: ignore[reportAttributeAccessIssue]
        from tensorboard.compat.proto.summary_pb2 import Summary  # pyright: ignore[reportAttributeAccessIssue]
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


def trl_tags(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metric names as the HF Trainer writes TRL's to TensorBoard and W&B: `train/<name>`, and
    `eval/<name>` for our validation metrics `val/<name>`."""
    return {(f"eval/{k[4:]}" if k.startswith("val/") else f"train/{k}"): v for k, v in metrics.items()}


class WandbWriter:
    """Scalars and tables to a Weights & Biases run (HF's layout: `train/global_step` is the x
    axis of every metric). The run id is kept in `<run_dir>/wandb_run_id`, so a resumed run
    continues the same W&B run."""

    RUN_ID_FILE = "wandb_run_id"

    def __init__(self, run_dir: str | os.PathLike, *, name: str, config: Mapping[str, Any] | None = None,
                 project: str | None = None, entity: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ImportError("log.report_to has wandb, but the wandb package is not installed: "
                              "pip install 'openrs-jax[wandb]' (or remove wandb from log.report_to)") from None
        self._wandb = wandb
        run_dir = pathlib.Path(run_dir)
        id_file = run_dir / self.RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", "openrs-jax"), entity=entity,
                              name=name, id=run_id, resume="allow", dir=str(run_dir), config=dict(config or {}))
        id_file.write_text(run_id + "\n")
        self.run.define_metric("train/global_step")
        self.run.define_metric("*", step_metric="train/global_step", step_sync=True)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = {k: _clean(v) for k, v in trl_tags(scalars).items()}
        self.run.log({**{k: v for k, v in values.items() if v is not None}, "train/global_step": step})

    def write_table(self, step: int, key: str, rows: list[Mapping[str, Any]]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        # [*columns]: a new list, typed as wandb's list[str | int] (list is invariant).
        table = self._wandb.Table(columns=[*columns], data=[[_clean(r.get(c)) for c in columns] for r in rows])
        self.run.log({key: table, "train/global_step": step})

    def close(self) -> None:
        self.run.finish()


def format_progress(step: int, max_steps: int, metrics: Mapping[str, Any], eta: str | None = None) -> str:
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
    if eta is not None:
        parts.append(f"eta {eta}")
    return " | ".join(parts)


class MetricsLogger:
    """Fans a step's metrics out to the configured sinks ("stdout", "jsonl", "tensorboard",
    "wandb"). `progress` (a `openrs_jax.progress.Progress` over the steps): the stdout line goes
    through it (above the bar) and carries its ETA. `wandb`: `WandbWriter` keyword arguments
    (name, config, project, entity)."""

    def __init__(self, run_dir: str | os.PathLike, report_to: Iterable[str], max_steps: int, stream=None,
                 *, progress: Any = None, wandb: Mapping[str, Any] | None = None):
        self.run_dir = pathlib.Path(run_dir)
        self.report_to = tuple(report_to)
        self.max_steps = max_steps
        self.stream = stream or sys.stdout
        self.progress = progress
        self._jsonl = JsonlWriter(self.run_dir / METRICS_FILE) if "jsonl" in self.report_to else None
        self._tb = TensorBoardWriter(self.run_dir / "tensorboard") if "tensorboard" in self.report_to else None
        self._wandb = None
        if "wandb" in self.report_to:
            self._wandb = WandbWriter(self.run_dir, **{"name": self.run_dir.name, **dict(wandb or {})})

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **metrics}
        if self._jsonl is not None:
            self._jsonl.write(record)
        if self._tb is not None:
            self._tb.write_scalars(step, trl_tags(metrics))
        if self._wandb is not None:
            self._wandb.write_scalars(step, metrics)
        if "stdout" in self.report_to:
            eta = self.progress.eta_text() if self.progress is not None else None
            line = format_progress(step, self.max_steps, metrics, eta)
            if self.progress is not None:
                self.progress.write(line)
            else:
                print(line, file=self.stream, flush=True)

    def log_table(self, step: int, rows: list[Mapping[str, Any]], *, unique_prompts: bool = False) -> None:
        """The completions of a step to W&B's `completions` table (TRL's columns; one row per
        prompt with `unique_prompts`). Other sinks keep completions.jsonl (the trainer's)."""
        if self._wandb is None:
            return
        if unique_prompts:
            seen: set = set()
            rows = [r for r in rows if not (r.get("prompt") in seen or seen.add(r.get("prompt")))]
        self._wandb.write_table(step, "completions", rows)

    def close(self) -> None:
        for w in (self._jsonl, self._tb, self._wandb):
            if w is not None:
                w.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    return _read_jsonl(pathlib.Path(run_dir) / METRICS_FILE)
