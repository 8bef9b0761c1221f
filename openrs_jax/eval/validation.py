"""Validation during training and keeping the best checkpoint (early stopping by selection).

Layer L0 by its imports (the engine is passed in). The paper's scores peak after 50-100 steps
and then degrade, so a run should say which checkpoint was best on held-out problems:

    validator = Validator.from_benchmarks(["aime24", "amc23"], tokenizer, data_dir="data", limit=None,
                                          settings=EvalSettings(samples=4, max_new_tokens=4096))
    tracker = BestCheckpointTracker(run_dir, metric="score", mode="max")
    ...
    if step % every_n == 0:
        result = validator.evaluate(engine, step=step)       # the trainer's rollout engine
        log(result["metrics"])                              # "val/score", "val/aime24/avg@k", ...
        tracker.update(step, result)                        # best_checkpoint.json + `best` link

`score` is the unweighted mean over the validation benchmarks of `metric` (avg@k by default,
the lower-variance estimate). The tracker writes `<run_dir>/best_checkpoint.json` atomically
and points the symlink `<run_dir>/best` at the best step's checkpoint directory
(`<run_dir>/checkpoints/<step>` by default, the layout of openrs_jax.checkpoint). Checkpoint
rotation (keep-N) must not delete that step: pass `tracker.best_step` to whatever prunes old
checkpoints, or give Orbax the same metric (`CheckpointManagerOptions(best_fn=...,
best_mode="max")`).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

from openrs_jax.eval import benchmarks as bm
from openrs_jax.eval import grading
from openrs_jax.eval.report import atomic_write_text
from openrs_jax.eval.runner import EvalSettings, evaluate_benchmark
from openrs_jax.rewards.verify_pool import VerifyPool
from openrs_jax.rollout.base import RolloutEngine

_METRICS = ("pass@1", "avg@k", "pass@k")


class Validator:
    """Evaluates a fixed set of validation problems with whatever engine the trainer holds.

    problems: {benchmark: [Problem, ...]} (each list a prefix of its benchmark, in order) or a
      flat list of Problems (grouped by their benchmark).
    metric: "avg@k" (default), "pass@1" or "pass@k"; `score` is its mean over benchmarks.
    pool: grading pool (default: the shared one with `workers` processes).
    """

    def __init__(
        self,
        problems: Mapping[str, Sequence[bm.Problem]] | Sequence[bm.Problem],
        tokenizer: Any,
        settings: EvalSettings = EvalSettings(),
        *,
        metric: str = "avg@k",
        pool: VerifyPool | None = None,
        workers: int = 2,
        log: Callable[[str], None] | None = None,
    ):
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        if isinstance(problems, Mapping):
            grouped = {name: list(ps) for name, ps in problems.items()}
        else:
            grouped: dict[str, list[bm.Problem]] = {}
            for p in problems:
                grouped.setdefault(p.benchmark, []).append(p)
        if not grouped or any(not ps for ps in grouped.values()):
            raise ValueError("Validator needs at least one problem per benchmark")
        self.problems = grouped
        self.tokenizer = tokenizer
        self.settings = settings
        self.metric = metric
        self.pool = pool if pool is not None else grading.grading_pool(workers)
        self.log = log

    @classmethod
    def from_benchmarks(
        cls,
        names: Sequence[str] | str,
        tokenizer: Any,
        *,
        data_dir: str | os.PathLike | None = None,
        limit: int | None = None,
        settings: EvalSettings = EvalSettings(),
        **kwargs: Any,
    ) -> "Validator":
        """The first `limit` problems of each named benchmark (local JSONL or hub)."""
        problems = {n: bm.load_benchmark(n, data_dir, limit) for n in bm.parse_benchmarks(names)}
        return cls(problems, tokenizer, settings, **kwargs)

    def evaluate(self, engine: RolloutEngine, step: int | None = None) -> dict[str, Any]:
        """{"score", "metric", "step", "per_benchmark": {name: summary}, "metrics": flat
        {"val/score", "val/<name>/<metric>", ...} for the metric writers, "time_s"}."""
        t0 = time.perf_counter()
        per_benchmark = {}
        for name, problems in self.problems.items():
            run = evaluate_benchmark(problems, engine, self.tokenizer, self.settings, self.pool, log=self.log)
            per_benchmark[name] = run.summary
        score = sum(s[self.metric] for s in per_benchmark.values()) / len(per_benchmark)
        flat = {"val/score": score}
        for name, s in per_benchmark.items():
            for key in (*_METRICS, "mean_completion_tokens", "clipped_ratio"):
                flat[f"val/{name}/{key}"] = s[key]
        return {
            "score": score,
            "metric": self.metric,
            "step": step,
            "per_benchmark": per_benchmark,
            "metrics": flat,
            "time_s": time.perf_counter() - t0,
        }


class BestCheckpointTracker:
    """Remembers the best validation step of a run in `<run_dir>/best_checkpoint.json` and
    links `<run_dir>/<link_name>` to that step's checkpoint directory.

    metric: the key read from the dicts passed to `update` ("score" for Validator results).
    mode: "max" or "min". Ties keep the earlier step (fewer updates, less drift).
    step_dir: step -> checkpoint directory (default `<run_dir>/checkpoints/<step>`, the layout
      of openrs_jax.checkpoint); the link is relative, so the run directory can be moved.
    write: False tracks without writing the file or the link (a trainer's processes other
      than process 0 take the same decisions; process 0 writes them).
    An existing best_checkpoint.json is read back (a resumed run keeps its best).
    """

    FILE = "best_checkpoint.json"

    def __init__(
        self,
        run_dir: str | os.PathLike,
        metric: str = "score",
        mode: str = "max",
        *,
        step_dir: Callable[[int], str | os.PathLike] | None = None,
        link_name: str = "best",
        write: bool = True,
    ):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.run_dir = pathlib.Path(run_dir)
        self.metric = metric
        self.mode = mode
        # openrs_jax.checkpoint.CHECKPOINT_SUBDIR; not imported: that module pulls in Orbax/JAX.
        self.step_dir = step_dir or (lambda step: self.run_dir / "checkpoints" / str(step))
        self.link_name = link_name
        self.write = write
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.history: list[dict[str, Any]] = []
        path = self.run_dir / self.FILE
        if path.exists():
            state = json.loads(path.read_text())
            if state.get("metric") != metric or state.get("mode") != mode:
                raise ValueError(
                    f"{path} tracks {state.get('metric')!r} ({state.get('mode')}), not {metric!r} ({mode}); "
                    "use the same metric or remove the file"
                )
            self.best_step, self.best_value = state.get("best_step"), state.get("best_value")
            self.history = list(state.get("history", []))

    @property
    def path(self) -> pathlib.Path:
        return self.run_dir / self.FILE

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def update(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Records `metrics[metric]` at `step`; returns True if it is the new best (then the
        file and the link are rewritten). A NaN value is recorded but never best."""
        if self.metric not in metrics:
            raise KeyError(f"BestCheckpointTracker: metrics have no {self.metric!r} (keys: {sorted(metrics)})")
        value = float(metrics[self.metric])
        self.history = [h for h in self.history if h["step"] != step] + [{"step": int(step), "value": value}]
        improved = not math.isnan(value) and self._better(value)
        if improved:
            self.best_step, self.best_value = int(step), value
        if self.write:
            self._write()
            if improved:
                self._link()
        return improved

    def best_path(self) -> pathlib.Path | None:
        return None if self.best_step is None else pathlib.Path(self.step_dir(self.best_step))

    def _write(self) -> None:
        state = {
            "metric": self.metric,
            "mode": self.mode,
            "best_step": self.best_step,
            "best_value": self.best_value,
            "best_path": None if self.best_step is None else str(self.best_path()),
            "history": self.history,
        }
        atomic_write_text(self.path, json.dumps(state, indent=2) + "\n")

    def _link(self) -> None:
        target = self.best_path()
        if target is None:  # called after an improvement, so there is a best step
            raise RuntimeError("no best step to link to")
        try:
            target = target.relative_to(self.run_dir)
        except ValueError:
            pass  # outside the run dir: keep the absolute path
        link = self.run_dir / self.link_name
        tmp = self.run_dir / f".{self.link_name}.tmp-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic: readers see the old or the new link, never none
