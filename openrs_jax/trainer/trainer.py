"""The GRPO training loop (layer L5): start, step, log, validate, checkpoint, stop.

    start ─► build the run (setup.build_run), restore the state (--resume)
          ─► loop: state ─grpo_step─► state′ · metrics ─► sinks · validation · checkpoint
          ─► finish: plots, summary.json

One step is `grpo_step.grpo_step` (read it top to bottom); this module only sequences steps
and owns what surrounds them. Step s (1-based) samples with seed f(run seed, s) and reads the
next prompts at the state's data cursor, so a run resumed from the checkpoint of step k replays
steps k+1… exactly as the uninterrupted run did. SIGTERM/SIGINT finish the current step, save,
and exit (the CLI then exits 128 + the signal number).

Several processes (`openrs_jax.distributed`): every process runs this loop on one global mesh
and takes the same decisions (the metrics are the same everywhere). Process 0 alone holds the
run-directory lock and writes config.yaml, metrics, the completions table, plots,
summary.json and the best-checkpoint record; every process writes its shards of each Orbax
checkpoint. A signal received by any process stops all of them after the same step. A step whose loss, gradient or update is
not finite is not applied; after `optim.max_nonfinite_steps` in a row the run stops with its
last checkpoint intact.

Where we depart from TRL/Open-R1 (numbered; see also `openrs_jax.grpo.loss`):
1. One SPMD program: rollout, reference and update share the mesh (the `jax` engine), or
   rollouts come from an external vLLM server (the paper's layout).
2. Batches are padded to length buckets (total and completion length, 512 tokens) so the update
   compiles once per bucket; padding is masked out of every quantity.
3. The reference model is the initial policy, rebuilt from the config on resume (it is not
   stored in checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import signal
import sys
from typing import Any, Callable

from openrs_jax import distributed as dist
from openrs_jax.checkpoint import CheckpointError
from openrs_jax.config import ConfigError, RunConfig, config_to_dict, dump_yaml, load_config
from openrs_jax.hostmem import FreeMemoryReleaser
from openrs_jax.metrics import COMPLETIONS_FILE, JsonlWriter, MetricsLogger
from openrs_jax.progress import Progress
from openrs_jax.trainer import run_dir as rd
from openrs_jax.trainer import setup
from openrs_jax.metrics import PhaseTimer
from openrs_jax.model.summary import parameter_overview
from openrs_jax.trainer.grpo_step import Experience, experience_from_json, experience_to_json, grpo_step
from openrs_jax.trainer.schedule import Schedule, make_schedule
from openrs_jax.trainer.state import TrainState


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class RunWriteError(RuntimeError):
    """Writing the run's logs failed (a full disk, say); the message says what was saved."""


@dataclasses.dataclass
class Sinks:
    """Where a run's records go: metrics (stdout/JSONL/TensorBoard), the completions table,
    and validation with its best-step tracker (None when off). The logger and the table are
    None on processes other than 0."""

    logger: MetricsLogger | None
    completions: JsonlWriter | None
    validator: Any = None
    best: Any = None


class Trainer:
    """`Trainer(cfg, resume=...).run()` trains to `optim.max_steps` (or a signal) and returns
    the last step's metrics. After `run`, `run_parts` and `state` hold the run's parts and its
    final state; `stopped_by` is the signal number that stopped it, if any."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False, stream=None):
        self.cfg = cfg
        # One voice: with several processes only process 0 prints (errors still reach stderr).
        self.primary = dist.is_primary()
        self.stream = stream or (sys.stdout if self.primary else open(os.devnull, "w"))  # noqa: SIM115
        self.resume = resume or cfg.checkpoint.resume
        assert cfg.checkpoint.output_dir is not None  # RunConfig defaults it to checkpoints/<run_name>
        self.run_dir = pathlib.Path(cfg.checkpoint.output_dir).expanduser().absolute()
        self.run_parts: setup.Run | None = None
        self.state: TrainState | None = None
        self.sinks: Sinks | None = None
        self.schedule: Schedule | None = None
        self.stopped_by: int | None = None
        self.progress: Progress | None = None
        self._last_metrics: dict[str, float] = {}
        self._closers: list[Callable[[], None]] = []
        if self.stream is not sys.stdout and stream is None:
            self._closers.append(self.stream.close)

    def _built(self) -> tuple[setup.Run, TrainState, Schedule, Sinks]:
        """The run's parts and its current state, which `_setup` builds (`run` calls it first)."""
        if self.run_parts is None or self.state is None or self.schedule is None or self.sinks is None:
            raise RuntimeError("the trainer is not set up: Trainer.run() builds the run first")
        return self.run_parts, self.state, self.schedule, self.sinks

    def _print(self, msg: str) -> None:
        if self.progress is not None:  # above the bar, never through it
            self.progress.write(msg)
        else:
            print(msg, file=self.stream, flush=True)

    def write_line(self, msg: str) -> None:
        """A line of the run's log (above the progress bar while it is shown)."""
        self._print(msg)

    # ------------------------------------------------------------------ start
    def _setup(self) -> None:
        """Builds the run and its state. Fails before touching the run directory on bad input;
        changes nothing in an existing run directory until the state is restored."""
        cfg = self.cfg
        meshes = setup.build_meshes(cfg)  # layout errors before anything is written
        ckpt_dir = self.run_dir / "checkpoints"
        if ckpt_dir.exists() and any(ckpt_dir.iterdir()) and not self.resume:
            raise ConfigError(
                f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, or set "
                "checkpoint.output_dir to a new directory (nothing was overwritten)"
            )
        if self.resume and not self.run_dir.is_dir():
            raise ConfigError(
                f"--resume: {self.run_dir} does not exist (checkpoint.output_dir {cfg.checkpoint.output_dir!r}, "
                f"relative to {os.getcwd()}); nothing to resume"
            )
        if self.primary:
            # Process 0's lock stands for the whole run: the other processes write only their
            # checkpoint shards, in step with it. (Another run on this directory fails here,
            # on process 0, and its error stops that run's other processes.)
            lock = rd.RunDirLock(self.run_dir)
            lock.acquire()
            self._closers.append(lock.release)
        run, state = setup.build_run(cfg, meshes=meshes, run_dir=self.run_dir, resume=self.resume,
                                     log=self._print, closers=self._closers)
        self.cfg = cfg = run.cfg  # epoch-based settings resolved once the prompts were read
        # The state is restored: only now does the run directory change.
        if self.resume:
            self._warn_changed(state)
        if self.primary:
            stored = cfg.replace(checkpoint=dataclasses.replace(cfg.checkpoint, output_dir=str(self.run_dir)))
            dump_yaml(stored, self.run_dir / rd.CONFIG_FILE)
            overview = parameter_overview(run.policy.model(state.params), stats=False)  # clu's table
            (self.run_dir / rd.PARAMETERS_FILE).write_text(overview + "\n")
            self._print(f"[openrs] parameters: {overview.splitlines()[-1]} (table: {rd.PARAMETERS_FILE})")
            rd.truncate_logs(self.run_dir, state.step)
        in_flight = None if state.in_flight is None else experience_from_json(run, state.in_flight, state.data)
        if in_flight is not None and cfg.rollout.mode != "one_step_off":
            self._print(f"[openrs] note: the checkpoint holds a one-step-off batch; rollout.mode {cfg.rollout.mode!r} "
                        f"samples step {state.step + 1} again instead")
            in_flight = None
        self.schedule = make_schedule(run, in_flight)
        self._closers.append(self.schedule.close)
        self.run_parts, self.state = run, state
        self.sinks = self._build_sinks(run)

    def _warn_changed(self, state: TrainState) -> None:
        changed = {k: v for k, v in rd.changed_fields(self.run_dir, self.cfg).items()
                   if k not in ("checkpoint.resume", "checkpoint.output_dir")}
        if not changed:
            return
        listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
        self._print(f"[openrs] warning: resuming step {state.step} with changed settings: {listed}")
        moved = [k for k in changed if k in rd.SCHEDULE_KEYS]
        if moved:
            old_lr = setup.learning_rate_at(load_config(self.run_dir / rd.CONFIG_FILE), state.step)
            new_lr = setup.learning_rate_at(self.cfg, state.step)
            self._print(f"[openrs] warning: {', '.join(moved)} changed: the learning rate of step {state.step + 1} "
                        f"moves from {old_lr:.3e} to {new_lr:.3e} (the schedule is recomputed, not continued)")

    def _build_sinks(self, run: setup.Run) -> Sinks:
        cfg = self.cfg
        logger = completions = None
        if self.primary:
            wandb = {"name": cfg.run_name, "config": config_to_dict(cfg), "project": cfg.log.wandb_project,
                     "entity": cfg.log.wandb_entity}
            logger = MetricsLogger(self.run_dir, cfg.log.report_to, cfg.optim.max_steps, stream=self.stream,
                                   wandb=wandb)
            self._closers.append(logger.close)
            completions = JsonlWriter(self.run_dir / COMPLETIONS_FILE) if cfg.log.log_completions else None
            if completions is not None:
                self._closers.append(completions.close)
        sinks = Sinks(logger=logger, completions=completions)
        v = cfg.validation
        if v.benchmarks:
            from openrs_jax.eval import BestCheckpointTracker, EvalSettings, Validator

            settings = EvalSettings(samples=v.samples, max_new_tokens=v.max_new_tokens, temperature=v.temperature,
                                    top_p=v.top_p, seed=cfg.seed)
            sinks.validator = Validator.from_benchmarks(list(v.benchmarks), run.tokenizer, data_dir=v.data_dir,
                                                        limit=v.limit, settings=settings, metric=v.metric,
                                                        workers=max(1, cfg.rewards.num_workers))
            self._closers.append(getattr(sinks.validator, "close", lambda: None))
            # Every process tracks the best step (checkpoint rotation spares it everywhere alike).
            sinks.best = BestCheckpointTracker(self.run_dir, metric="score", mode="max", write=self.primary)
            best = sinks.best
            run.checkpointer.protect = lambda: [] if best.best_step is None else [best.best_step]
        return sinks

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame):
        if self.stopped_by is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        self.stopped_by = signum
        self._print(f"[openrs] {signal.Signals(signum).name}: finishing this step, then saving and exiting")

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, float]:
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._setup()
            return self._loop()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            self.close()

    def _loop(self) -> dict[str, float]:
        cfg = self.cfg
        run, state, schedule, sinks = self._built()
        last: dict[str, float] = {}
        if state.step >= cfg.optim.max_steps:
            self._print(f"[openrs] run already finished at step {state.step} (max_steps {cfg.optim.max_steps})")
            return last
        self._print(f"[openrs] training steps {state.step + 1}..{cfg.optim.max_steps}: "
                    f"{cfg.optim.num_prompts_per_step} prompts x {cfg.grpo.num_generations} generations, "
                    f"{run.policy.num_micro} micro-batches; run dir {self.run_dir}")
        # Steps with an ETA: a bar on a terminal, a periodic line in logs (openrs_jax.progress).
        self.progress = progress = Progress(cfg.optim.max_steps, "train", unit="step", stream=self.stream,
                                            initial=state.step, interval_s=60.0)
        if sinks.logger is not None:  # process 0
            sinks.logger.progress = progress
        self._closers.append(self._close_progress)
        # The step's freed host temporaries go back to the OS between steps (openrs_jax.hostmem:
        # on CPU, glibc would otherwise hold them: RSS 10.8 -> 7.2 GB on SmolLM2-135M).
        memory = FreeMemoryReleaser()
        while state.step < cfg.optim.max_steps:
            state, exp, metrics = grpo_step(run, state, schedule)
            self.state = state
            step = state.step
            self._last_metrics = metrics
            progress.update_to(step, postfix=f"reward {metrics.get('reward', float('nan')):.3g}")
            last = metrics
            nonfinite = metrics["update_applied"] < 1.0
            result = self._validate(step) if not nonfinite else None
            if result is not None:
                metrics.update(result["metrics"])
                metrics["time/validation"] = result["time_s"]
            try:
                self._log(step, metrics, exp, force=nonfinite)
            except OSError as e:
                raise RunWriteError(f"writing the logs of step {step} in {self.run_dir} failed: {e}; "
                                    f"{self._save_after_failure()}") from e
            if nonfinite:
                self._print(f"[openrs] step {step}: non-finite loss or gradient (loss {metrics.get('loss')}, "
                            f"grad_norm {metrics.get('grad_norm')}); update skipped "
                            f"({state.nonfinite_run}/{cfg.optim.max_nonfinite_steps} in a row)")
                if state.nonfinite_run >= cfg.optim.max_nonfinite_steps:
                    run.checkpointer.wait()
                    raise NonFiniteError(
                        f"{state.nonfinite_run} consecutive non-finite steps (last: step {step}); stopped. "
                        f"Last good checkpoint: step {run.checkpointer.latest_step()} in {run.checkpointer.directory}"
                    )
            stopping = self._stop_requested()
            if step % cfg.checkpoint.save_steps == 0 or step == cfg.optim.max_steps or stopping or result:
                self._save()
            if result is not None and sinks.best.update(step, result):
                # Recorded after the save so the `best` link points at a real checkpoint.
                self._print(f"[openrs] step {step}: new best validation score {result['score']:.4f}")
            if stopping:
                run.checkpointer.wait()
                self._print(f"[openrs] stopped by signal after step {step}; checkpoint saved. Continue with --resume.")
                return last
            memory.maybe_release()
        run.checkpointer.wait()
        self._finish()
        return last

    def _stop_requested(self) -> bool:
        """Whether a signal asked this run to stop; with several processes, whether any of them
        received one (all then stop after this step, with that signal's exit code)."""
        if dist.process_count() == 1:
            return self.stopped_by is not None
        signum = dist.first_set("stop", self.stopped_by)
        if signum is not None and self.stopped_by is None:
            self.stopped_by = signum
        return signum is not None

    def _validate(self, step: int) -> dict[str, Any] | None:
        run, state, schedule, sinks = self._built()
        v = sinks.validator
        if v is None or not (step % self.cfg.validation.eval_steps == 0 or step == self.cfg.optim.max_steps):
            return None
        schedule.quiesce(state, PhaseTimer())  # the engine is idle, with the newest weights
        return v.evaluate(run.engine, step=step)

    def _log(self, step: int, metrics: dict[str, float], exp: Experience, *, force: bool) -> None:
        cfg = self.cfg
        _, _, _, sinks = self._built()
        if sinks.logger is None:  # not process 0
            return
        if force or step % cfg.log.logging_steps == 0 or step == cfg.optim.max_steps:
            sinks.logger.log(step, metrics)  # a skipped step is always logged
        if sinks.completions is not None and step % cfg.log.logging_steps == 0:
            self._log_completions(step, exp, sinks.logger, sinks.completions)

    def _log_completions(self, step: int, exp: Experience, logger: MetricsLogger, completions: JsonlWriter) -> None:
        g = self.cfg.grpo.num_generations
        scores, advantages, truncated = exp.wait_scores(), exp.advantages, exp.truncated
        if advantages is None or truncated is None:
            raise RuntimeError(f"step {step}'s experience was not learned from (no advantages)")
        run, _, _, _ = self._built()
        names = run.rewards.names
        table = []
        for i, text in enumerate(scores.texts):
            row = {"step": step, "prompt": exp.examples[i // g].get("prompt_text", ""), "completion": text,
                   "advantage": float(advantages[i]), "truncated": bool(truncated[i])}
            rewards = {}
            for r, name in enumerate(names):
                value = scores.per_reward[i, r]
                rewards[name] = None if math.isnan(value) else float(value)
            completions.write({**row, **{f"rewards/{k}": v for k, v in rewards.items()}})
            # W&B: TRL's columns (step, prompt, completion, one per reward function, advantage).
            table.append({"step": step, "prompt": row["prompt"], "completion": text, **rewards,
                          "advantage": row["advantage"]})
        logger.log_table(step, table, unique_prompts=self.cfg.log.log_unique_prompts)
        for i in range(min(self.cfg.log.num_completions_to_print, len(scores.texts))):
            self._print(f"[openrs] step {step} completion {i}: {scores.texts[i][:500]!r}")

    def _save(self) -> None:
        run, state, schedule, _ = self._built()
        in_flight = schedule.in_flight()  # the next batch, when sampled ahead (one-step-off)
        state.in_flight = None if in_flight is None else experience_to_json(in_flight)
        run.checkpointer.save(state.step, state.params, state.opt_state,
                                         state.meta(seed=self.cfg.seed, run_name=self.cfg.run_name))
        if self.cfg.checkpoint.save_hf:
            self._save_hf_snapshot()

    def _save_hf_snapshot(self) -> None:
        """<run>/hf/step-N beside the Orbax step (checkpoint.save_hf): written now, before the
        next update donates the parameters; kept as long as the Orbax step is."""
        import jax

        from openrs_jax.checkpoint import write_hf_snapshot
        from openrs_jax.weights.card import model_card
        from openrs_jax.weights.resolve import source_generation_config

        if jax.process_count() > 1:  # the export gathers every parameter on this host
            self._print("[openrs] warning: checkpoint.save_hf is single-host only; no HF snapshot written")
            return
        run, state, _, _ = self._built()
        cfg, step = self.cfg, state.step
        ckpt = run.checkpointer
        keep = None
        if cfg.checkpoint.save_total_limit is not None:
            keep = set(ckpt.all_steps()) | set(ckpt.protect() if ckpt.protect else ())
        card = model_card(run_name=cfg.run_name, step=step, config_yaml=dump_yaml(cfg),
                          base_model=cfg.model.name_or_path, metrics=self._last_metrics)
        out = write_hf_snapshot(self.run_dir, step, run.policy.model(state.params), run.tokenizer,
                                dtype=cfg.model.dtype or None, model_card=card,
                                generation_config=source_generation_config(cfg.model.name_or_path), keep=keep)
        self._print(f"[openrs] step {step}: HF snapshot {out}")

    def _save_after_failure(self) -> str:
        """Tries to checkpoint the current state after a failed log write; says what it got."""
        run, state, _, _ = self._built()
        ckpt = run.checkpointer
        if dist.process_count() > 1:  # a save needs every process, and the others are a step ahead
            return f"not saved (several processes); last complete checkpoint: {ckpt.latest_step()}"
        try:
            self._save()
            ckpt.wait()
            return f"the checkpoint of step {state.step} was saved: fix the disk, then --resume"
        except (CheckpointError, OSError) as e:
            return f"saving step {state.step} failed too ({e}); last complete checkpoint: {ckpt.latest_step()}"

    def _finish(self) -> None:
        if not self.primary:
            return
        try:
            from openrs_jax.plotting import plot_run

            paths = plot_run(self.run_dir)
            self._print(f"[openrs] plots: {', '.join(str(p) for p in paths)}")
        except Exception as e:  # noqa: BLE001 — plotting is a convenience, never fails a run
            self._print(f"[openrs] warning: plotting failed: {type(e).__name__}: {e}")
        summary = {"final_step": self.cfg.optim.max_steps, "run_dir": str(self.run_dir)}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    def _close_progress(self) -> None:
        progress, self.progress = self.progress, None
        if progress is not None:
            progress.close()
        if self.sinks is not None and self.sinks.logger is not None:
            self.sinks.logger.progress = None

    def close(self) -> None:
        """Releases everything the run started, newest first; errors are reported, not raised."""
        while self._closers:
            close = self._closers.pop()
            try:
                close()
            except Exception as e:  # noqa: BLE001 — closing must not hide the real error
                self._print(f"[openrs] warning: while closing: {type(e).__name__}: {e}")
        from openrs_jax.rewards import close_shared_pools

        close_shared_pools()
