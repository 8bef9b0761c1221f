"""The GRPO training loop (layer L5).

    prompts ─► rollouts (jax | vllm) ─► rewards (process pool) ─► group advantages
            ─► reference log-probs (jit) ─► train_step (jit, donated) ─► weight sync
            ─► metrics (stdout, metrics.jsonl, TensorBoard, completions.jsonl)
            ─► Orbax checkpoint every `save_steps` (async, atomic, keep-N)

Step s (1-based) samples with seed f(run seed, s) and reads the next prompts of the data
cursor, so a run resumed from the checkpoint of step k replays steps k+1… exactly as the
uninterrupted run did. SIGTERM/SIGINT finish the current step, save, and exit. A step whose
loss or gradient norm is not finite is not applied; after `optim.max_nonfinite_steps` in a row
the run stops with its last checkpoint intact.

Overlap: the reference (and old-policy) log-prob passes need only the sampled tokens, so they
are dispatched to the devices before the rewards are scored on the host; `time/reference` is
the part that the rewards did not hide. With `mesh.rollout_devices` (the paper's split layout)
the sampler has its own devices and receives the weights after each update.

Where we depart from TRL/Open-R1 (numbered, see also `openrs_jax.grpo.loss`):
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
import pathlib
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from openrs_jax import grpo
from openrs_jax import sharding as shd
from openrs_jax.checkpoint import RunCheckpointer, abstract_with_shardings
from openrs_jax.config import ConfigError, RunConfig, dump_yaml
from openrs_jax.metrics import COMPLETIONS_FILE, METRICS_FILE, JsonlWriter, MetricsLogger, truncate_after
from openrs_jax.rollout.base import FINISH_LENGTH, SamplingParams
from openrs_jax.trainer import setup
from openrs_jax.trainer.step import (
    LossSettings,
    build_logps_fn,
    build_train_batch,
    build_train_step,
    init_optimizer,
    lr_schedule,
    make_optimizer,
    optimizer_shardings,
    round_up,
)

# Coarse length buckets: each new (total, completion) bucket compiles the update and the
# reference pass once (about 40 s for the 1.5B model on an H100), so few buckets matter more
# than the last padded token. Rows carry their own prompt length, so only the total length T
# and the completion width C shape the program: for openrs3 (prompts <= 512, completions
# <= 3584) C takes at most 7 values and T - C at most 3, against 112 (prompt, completion)
# pairs with 128-token buckets of each.
LENGTH_BUCKET = 512
MAX_DYNAMIC_SAMPLING_ROUNDS = 3


def length_buckets(
    max_prompt: int, completion_width: int, max_prompt_length: int, max_completion_length: int
) -> tuple[int, int]:
    """(T, C) for a step: T covers the longest prompt + the completion width, C the width;
    each rounded up to LENGTH_BUCKET (or to the configured maximum when that is smaller, so a
    small model's run is one bucket)."""
    t_bucket = min(LENGTH_BUCKET, max_prompt_length + max_completion_length)
    c_bucket = min(LENGTH_BUCKET, max_completion_length)
    comp_len = round_up(max(completion_width, 1), c_bucket)
    total_len = round_up(max_prompt + max(completion_width, 1), t_bucket)
    return total_len, comp_len


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of step `step`: a function of (run seed, step) only."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


class Trainer:
    def __init__(self, cfg: RunConfig, *, resume: bool = False, stream=None):
        self.cfg = cfg
        self.stream = stream or sys.stdout
        self.run_dir = pathlib.Path(cfg.checkpoint.output_dir)
        self.resume = resume or cfg.checkpoint.resume
        self._stop_signal: int | None = None
        self._closers: list[Any] = []

    # ------------------------------------------------------------------ set-up
    def _print(self, msg: str) -> None:
        print(msg, file=self.stream, flush=True)

    def _setup(self) -> None:
        cfg = self.cfg
        from openrs_jax.data import build_prompt_iterator, load_tokenizer

        ckpt_dir = self.run_dir / "checkpoints"
        if ckpt_dir.exists() and any(ckpt_dir.iterdir()) and not self.resume:
            raise ConfigError(
                f"{ckpt_dir} already holds checkpoints: pass --resume to continue that run, or set "
                "checkpoint.output_dir to a new directory (nothing was overwritten)"
            )
        self.mesh, self.rollout_mesh = setup.build_meshes(cfg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, self.run_dir / "config.yaml")

        layout = "" if self.rollout_mesh is None else f", sampling on {len(self.rollout_mesh.devices.flat)} more"
        self._print(f"[openrs] devices: {len(self.mesh.devices.flat)} x {jax.devices()[0].device_kind} training, "
                    f"mesh {dict(self.mesh.shape)}{layout}")
        self.tokenizer = load_tokenizer(cfg.model.tokenizer_path)
        t0 = time.perf_counter()
        model = setup.build_model(cfg, self.mesh)
        self.model_cfg = model.config
        self._print(f"[openrs] model: {self.model_cfg.num_params() / 1e6:.1f}M parameters "
                    f"({self.model_cfg.param_dtype} weights, {self.model_cfg.dtype} compute) in "
                    f"{time.perf_counter() - t0:.1f} s")
        if len(self.tokenizer) > self.model_cfg.vocab_size:
            raise ConfigError(
                f"tokenizer {cfg.model.tokenizer_path} has {len(self.tokenizer)} tokens but the model's "
                f"vocab_size is {self.model_cfg.vocab_size}"
            )
        self.eos_ids, self.pad_id = setup.eos_and_pad(self.tokenizer, self.model_cfg)
        self.graphdef, params = nnx.split(model, nnx.Param)[:2]
        self.params = params
        self.param_shardings = jax.tree.map(lambda x: x.sharding, params)

        o = cfg.optim
        self.schedule = lr_schedule(o.learning_rate, o.max_steps, o.num_warmup_steps, o.lr_scheduler_type, o.min_lr_rate)
        self.optimizer = make_optimizer(
            self.schedule, b1=o.adam_beta1, b2=o.adam_beta2, eps=o.adam_epsilon,
            weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm,
        )
        self.opt_shardings = optimizer_shardings(self.optimizer, params)
        self.opt_state = init_optimizer(self.optimizer, params, self.opt_shardings)

        g = cfg.grpo
        self.loss = LossSettings(
            beta=g.beta,
            epsilon_low=g.epsilon,
            epsilon_high=g.resolved_epsilon_high,
            loss_type=g.loss_type,
            num_generations=g.num_generations,
            max_completion_length=cfg.rollout.max_completion_length,
            logprob_temperature=g.logprob_temperature,
            sampling_is_mode="sequence_truncate",
            sampling_is_cap=g.vllm_importance_sampling_cap,
        )
        self.num_micro = cfg.gradient_accumulation_steps
        self.train_step = build_train_step(
            self.graphdef, self.optimizer, self.schedule, self.loss, self.num_micro,
            param_shardings=self.param_shardings, opt_shardings=self.opt_shardings,
        )
        self.logps_fn = build_logps_fn(self.graphdef, self.loss, self.num_micro)
        # The reference model: the initial policy in the compute dtype (frozen).
        compute = jnp.dtype(self.model_cfg.dtype)
        self.ref_params = (
            jax.jit(lambda p: jax.tree.map(lambda x: x.astype(compute), p), out_shardings=self.param_shardings)(params)
            if g.beta != 0.0 else None
        )

        self.rewards = setup.build_rewards(cfg)
        self.reward_names = list(cfg.rewards.reward_funcs)
        self.reward_weights = list(cfg.rewards.resolved_weights)
        required = self._reward_columns()
        self.data = build_prompt_iterator(cfg.data, self.tokenizer, cfg.seed, required_columns=required)

        self.validator, self.best = self._build_validation()
        self.checkpointer = RunCheckpointer(
            self.run_dir, keep=cfg.checkpoint.save_total_limit,
            protect=lambda: [] if self.best is None or self.best.best_step is None else [self.best.best_step],
        )
        self._closers.append(self.checkpointer.close)
        self.start_step = 0
        self.nonfinite_run = 0
        if self.resume:
            self._restore()
        model = nnx.merge(self.graphdef, self.params)
        self.engine = self._build_engine(model)
        self._closers.append(self.engine.close)

        report_to = cfg.log.report_to
        if self.start_step > 0:
            truncate_after(self.run_dir / METRICS_FILE, self.start_step)
            truncate_after(self.run_dir / COMPLETIONS_FILE, self.start_step)
        self.logger = MetricsLogger(self.run_dir, report_to, cfg.optim.max_steps, stream=self.stream)
        self._closers.append(self.logger.close)
        self.completions = JsonlWriter(self.run_dir / COMPLETIONS_FILE) if cfg.log.log_completions else None
        if self.completions is not None:
            self._closers.append(self.completions.close)

    def _build_validation(self):
        v = self.cfg.validation
        if not v.benchmarks:
            return None, None
        from openrs_jax.eval import BestCheckpointTracker, EvalSettings, Validator

        settings = EvalSettings(samples=v.samples, max_new_tokens=v.max_new_tokens, temperature=v.temperature,
                                top_p=v.top_p, seed=self.cfg.seed)
        validator = Validator.from_benchmarks(list(v.benchmarks), self.tokenizer, data_dir=v.data_dir,
                                              limit=v.limit, settings=settings, metric=v.metric,
                                              workers=max(1, self.cfg.rewards.num_workers))
        self._closers.append(getattr(validator, "close", lambda: None))
        return validator, BestCheckpointTracker(self.run_dir, metric="score", mode="max")

    def _reward_columns(self) -> list[str]:
        cols = []
        if "exact_match" in self.reward_names:
            cols.append(self.cfg.rewards.reward_kwargs.get("exact_match", {}).get("answer_column", "answer"))
        return cols

    def _build_engine(self, model):
        cfg = self.cfg
        if cfg.rollout.engine == "jax":
            from openrs_jax.rollout.jax_engine import JaxEngine

            return JaxEngine(
                model,
                eos_token_ids=self.eos_ids,
                pad_token_id=self.pad_id,
                mesh=self.rollout_mesh or self.mesh,
                rules=shd.SAMPLE_RULES,
                max_batch_size=cfg.rollout.batch_size or cfg.completions_per_step,
                max_prompt_len=cfg.data.max_prompt_length,  # one prompt region: no compile per prompt length
                decode_attention=cfg.rollout.decode_attention,
            )
        from openrs_jax.rollout.vllm_engine import RetryPolicy, VLLMEngine

        sync_dir = pathlib.Path(cfg.rollout.vllm_sync_dir or self.run_dir / "vllm_weights")
        url = cfg.rollout.vllm_server_url
        if cfg.rollout.vllm_launch:
            from openrs_jax.rollout.vllm_server import VLLMServer, free_port
            from openrs_jax.weights import save_hf

            init_dir = save_hf(model, self.run_dir / "vllm_init", tokenizer=self.tokenizer, dtype=jnp.dtype(self.model_cfg.dtype))
            extra = list(cfg.rollout.vllm_server_args) + [
                "--gpu-memory-utilization", str(cfg.rollout.vllm_gpu_memory_utilization)]
            if cfg.rollout.vllm_max_model_len:
                extra += ["--max-model-len", str(cfg.rollout.vllm_max_model_len)]
            server = VLLMServer(str(init_dir), port=free_port(), api_key=cfg.rollout.vllm_api_key,
                                extra_args=extra, log_path=str(self.run_dir / "vllm_server.log"))
            server.start()
            self._closers.append(server.stop)
            url = server.url
        engine = VLLMEngine(
            url,
            sync_dir=str(sync_dir),
            eos_token_ids=self.eos_ids,
            pad_token_id=self.pad_id,
            api_key=cfg.rollout.vllm_api_key,
            retry=RetryPolicy(timeout=cfg.rollout.vllm_timeout_s),
        )
        engine.update_weights(model)  # the server must sample from this run's weights
        return engine

    def _restore(self) -> None:
        step = self.checkpointer.latest_step()
        if step is None:
            self._print(f"[openrs] --resume: no checkpoint in {self.checkpointer.directory}; starting at step 0")
            return
        abstract_params = abstract_with_shardings(self.params)
        abstract_opt = abstract_with_shardings(self.opt_state)
        params, opt_state, meta = self.checkpointer.restore(step, abstract_params, abstract_opt)
        self.params, self.opt_state = params, opt_state
        self.data.load_state_dict(meta["data"])
        self.start_step = int(meta["step"])
        self.nonfinite_run = int(meta.get("nonfinite_run", 0))
        self._print(f"[openrs] resumed from {self.checkpointer.directory}/{step} (step {self.start_step})")

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame):  # noqa: ARG002
        if self._stop_signal is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        self._stop_signal = signum
        self._print(f"[openrs] {signal.Signals(signum).name}: finishing this step, then saving and exiting")

    # ------------------------------------------------------------------ one step
    def _rollout(self, step: int, examples: list[dict]):
        cfg = self.cfg
        sampling = SamplingParams(
            max_new_tokens=cfg.max_completion_length_at(step - 1),
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            top_k=cfg.rollout.top_k,
            seed=step_seed(cfg.seed, step),
        )
        return self.engine.generate([e["prompt_ids"] for e in examples], cfg.grpo.num_generations, sampling)

    def _score(self, examples: list[dict], batch) -> tuple[np.ndarray, np.ndarray, list[str]]:
        from openrs_jax.rewards import combine_rewards

        g = self.cfg.grpo.num_generations
        ids = batch.completion_token_lists()
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        columns: dict[str, list] = {}
        for key in examples[0]:
            if key in ("prompt_ids",):
                continue
            columns[key] = [examples[i // g][key] for i in range(len(texts))]
        columns["completion_ids"] = ids
        per_reward, total = combine_rewards(self.rewards, self.reward_weights, texts, **columns)
        return per_reward, total, texts

    def _collect(self, step: int):
        """Prompts → rollouts (→ rewards, only with DAPO's dynamic sampling, which needs them
        to pick groups). Returns (examples, batch, scored or None, rollout time, reward time,
        completions dropped)."""
        cfg = self.cfg
        p, g = cfg.optim.num_prompts_per_step, cfg.grpo.num_generations
        examples = self.data.next_batch(p)
        t0 = time.perf_counter()
        batch = self._rollout(step, examples)
        t_roll = time.perf_counter() - t0
        if not cfg.grpo.drop_zero_std_groups:
            return examples, batch, None, t_roll, 0.0, 0
        t0 = time.perf_counter()
        parts = [(examples, batch, *self._score(examples, batch))]
        t_rew = time.perf_counter() - t0
        for _ in range(MAX_DYNAMIC_SAMPLING_ROUNDS):
            kept = sum(int((t.reshape(-1, g).std(1) > 0).sum()) for *_, t, _ in parts)
            if kept >= p:
                break
            more = self.data.next_batch(p)
            t0 = time.perf_counter()
            b2 = self._rollout(step, more)
            t_roll += time.perf_counter() - t0
            t0 = time.perf_counter()
            parts.append((more, b2, *self._score(more, b2)))
            t_rew += time.perf_counter() - t0
        examples, batch, per_reward, total, texts, dropped = _select_groups(parts, p, g)
        return examples, batch, (per_reward, total, texts), t_roll, t_rew, dropped

    def _step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        g = cfg.grpo.num_generations
        t_step = time.perf_counter()
        examples, batch, scored, t_roll, t_rew, dropped = self._collect(step)

        mask = batch.completion_mask.astype(np.float32)
        truncated = np.array([r == FINISH_LENGTH for r in batch.finish_reasons])
        if cfg.grpo.mask_truncated_completions:
            mask = mask * (~truncated)[:, None]
        total_len, comp_len = length_buckets(
            max(len(e["prompt_ids"]) for e in examples), mask.shape[1],
            cfg.data.max_prompt_length, cfg.rollout.max_completion_length,
        )
        host = build_train_batch(
            [e["prompt_ids"] for e in examples], batch.completion_ids, mask, np.zeros(mask.shape[0], np.float32),
            num_generations=g, pad_token_id=self.pad_id, loss=self.loss,
            total_length=total_len, completion_length=comp_len,
            sampling_logps=batch.logprobs if cfg.grpo.vllm_importance_sampling_correction else None,
        )
        shardings = self._batch_shardings(host)
        train_batch = jax.device_put(host, shardings)

        # The reference (and old-policy) passes need only the tokens: dispatch them now and score
        # the rewards on the host while the devices run them (JAX dispatch is asynchronous).
        t0 = time.perf_counter()
        if self.ref_params is not None:
            train_batch = dataclasses.replace(train_batch, ref_logps=self.logps_fn(self.ref_params, train_batch))
        if cfg.grpo.num_iterations > 1:
            train_batch = dataclasses.replace(train_batch, old_logps=self.logps_fn(self.params, train_batch))
        t_dispatch = time.perf_counter() - t0
        if scored is None:
            t0 = time.perf_counter()
            scored = self._score(examples, batch)
            t_rew += time.perf_counter() - t0
        per_reward, total, texts = scored
        advantages = np.asarray(grpo.group_advantages(jnp.asarray(total, jnp.float32), g, scale=cfg.grpo.scale_rewards))
        t0 = time.perf_counter()
        jax.block_until_ready(train_batch)
        t_ref = t_dispatch + time.perf_counter() - t0  # the part not hidden behind the rewards
        train_batch = dataclasses.replace(train_batch, advantages=jax.device_put(advantages, shardings.advantages))

        t0 = time.perf_counter()
        for _ in range(cfg.grpo.num_iterations):
            self.params, self.opt_state, m = self.train_step(self.params, self.opt_state, train_batch)
        m = jax.device_get(m)
        t_upd = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.engine.update_weights(nnx.merge(self.graphdef, self.params))
        t_sync = time.perf_counter() - t0
        step_time = time.perf_counter() - t_step

        metrics = self._metrics(per_reward, total, batch, truncated, m, g)
        n_tok = float(batch.lengths.sum())
        metrics.update({
            "time/rollout": t_roll, "time/rewards": t_rew, "time/reference": t_ref,
            "time/update": t_upd, "time/sync": t_sync, "time/step": step_time,
            "tokens_per_s": n_tok / step_time, "rollout/tokens_per_s": n_tok / max(t_roll, 1e-9),
            "num_completions_dropped": float(dropped),
        })
        if "rollout/prefill_s" in getattr(self.engine, "last_stats", {}):
            metrics["time/rollout_prefill"] = self.engine.last_stats["rollout/prefill_s"]
        if self.completions is not None and step % cfg.log.logging_steps == 0:
            self._log_completions(step, examples, texts, per_reward, advantages)
        return metrics

    def _batch_shardings(self, host):
        def one(x):
            if x is None:
                return None
            return shd.batch_sharding(self.mesh, shd.TRAIN_RULES, x.ndim)

        return jax.tree.map(one, host)

    def _metrics(self, per_reward, total, batch, truncated, m, g) -> dict[str, float]:
        lengths = batch.lengths.astype(np.float64)
        term = lengths[~truncated]
        stats = grpo.reward_stats(jnp.asarray(total, jnp.float32), g, scale=self.cfg.grpo.scale_rewards)
        out = {
            **{k: float(v) for k, v in stats.items()},  # reward, reward_std, frac_reward_zero_std
            "completions/mean_length": float(lengths.mean()),
            "completions/min_length": float(lengths.min()),
            "completions/max_length": float(lengths.max()),
            "completions/clipped_ratio": float(truncated.mean()),
            "completions/mean_terminated_length": float(term.mean()) if term.size else 0.0,
        }
        for r, name in enumerate(self.reward_names):
            col = per_reward[:, r]
            out[f"rewards/{name}/mean"] = float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
            out[f"rewards/{name}/std"] = float(np.nanstd(col, ddof=1)) if np.isfinite(col).sum() > 1 else 0.0
        for k, v in m.items():
            if k == "completion_tokens":
                continue
            out[k] = float(v)
        return out

    def _log_completions(self, step, examples, texts, per_reward, advantages):
        g = self.cfg.grpo.num_generations
        for i, text in enumerate(texts):
            row = {"step": step, "prompt": examples[i // g].get("prompt_text", ""), "completion": text,
                   "advantage": float(advantages[i])}
            for r, name in enumerate(self.reward_names):
                row[f"rewards/{name}"] = None if math.isnan(per_reward[i, r]) else float(per_reward[i, r])
            self.completions.write(row)
        k = self.cfg.log.num_completions_to_print
        for i in range(min(k, len(texts))):
            self._print(f"[openrs] step {step} completion {i}: {texts[i][:500]!r}")

    def _save(self, step: int) -> None:
        meta = {"step": step, "data": self.data.state_dict(), "seed": self.cfg.seed,
                "nonfinite_run": self.nonfinite_run, "run_name": self.cfg.run_name}
        self.checkpointer.save(step, self.params, self.opt_state, meta)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, float]:
        cfg = self.cfg
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        last: dict[str, float] = {}
        step = 0
        try:
            self._setup()
            step = self.start_step
            if step >= cfg.optim.max_steps:
                self._print(f"[openrs] run already finished at step {step} (max_steps {cfg.optim.max_steps})")
                return last
            self._print(f"[openrs] training steps {step + 1}..{cfg.optim.max_steps}: "
                        f"{cfg.optim.num_prompts_per_step} prompts x {cfg.grpo.num_generations} generations, "
                        f"{self.num_micro} micro-batches; run dir {self.run_dir}")
            while step < cfg.optim.max_steps:
                step += 1
                metrics = self._step(step)
                last = metrics
                nonfinite = metrics["update_applied"] < 1.0
                validate = self.validator is not None and (
                    step % cfg.validation.eval_steps == 0 or step == cfg.optim.max_steps)
                if validate and not nonfinite:
                    result = self.validator.evaluate(self.engine, step=step)
                    metrics.update(result["metrics"])
                    metrics["time/validation"] = result["time_s"]
                if nonfinite or step % cfg.log.logging_steps == 0 or step == cfg.optim.max_steps:
                    self.logger.log(step, metrics)  # a skipped step is always logged
                if nonfinite:
                    self.nonfinite_run += 1
                    self._print(f"[openrs] step {step}: non-finite loss or gradient (loss {metrics.get('loss')}, "
                                f"grad_norm {metrics.get('grad_norm')}); update skipped "
                                f"({self.nonfinite_run}/{cfg.optim.max_nonfinite_steps} in a row)")
                    if self.nonfinite_run >= cfg.optim.max_nonfinite_steps:
                        self.checkpointer.wait()
                        raise NonFiniteError(
                            f"{self.nonfinite_run} consecutive non-finite steps (last: step {step}); stopped. "
                            f"Last good checkpoint: step {self.checkpointer.latest_step()} in {self.checkpointer.directory}"
                        )
                else:
                    self.nonfinite_run = 0
                stopping = self._stop_signal is not None
                if step % cfg.checkpoint.save_steps == 0 or step == cfg.optim.max_steps or stopping or validate:
                    self._save(step)
                if validate and not nonfinite:
                    # Recorded after the save so the `best` link points at a real checkpoint.
                    if self.best.update(step, result):
                        self._print(f"[openrs] step {step}: new best validation score {result['score']:.4f}")
                if stopping:
                    self.checkpointer.wait()
                    self._print(f"[openrs] stopped by signal after step {step}; checkpoint saved. "
                                f"Continue with --resume.")
                    break
            self.checkpointer.wait()
            if step == cfg.optim.max_steps:
                self._finish()
            return last
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            for close in reversed(self._closers):
                try:
                    close()
                except Exception as e:  # noqa: BLE001 — closing must not hide the real error
                    self._print(f"[openrs] warning: while closing: {type(e).__name__}: {e}")
            from openrs_jax.rewards import close_shared_pools

            close_shared_pools()

    def _finish(self) -> None:
        try:
            from openrs_jax.plotting import plot_run

            paths = plot_run(self.run_dir)
            self._print(f"[openrs] plots: {', '.join(str(p) for p in paths)}")
        except Exception as e:  # noqa: BLE001 — plotting is a convenience, never fails a run
            self._print(f"[openrs] warning: plotting failed: {type(e).__name__}: {e}")
        summary = {"final_step": self.cfg.optim.max_steps, "run_dir": str(self.run_dir)}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def _select_groups(parts, p: int, g: int):
    """DAPO dynamic sampling: the first P groups whose rewards are not all equal, topped up with
    zero-std groups when the extra rounds did not find enough."""
    from openrs_jax.rollout.base import RolloutBatch

    chosen, fallback = [], []
    for pi, (examples, batch, per_reward, total, texts) in enumerate(parts):
        for gi in range(len(examples)):
            rows = slice(gi * g, (gi + 1) * g)
            (chosen if total[rows].std() > 0 else fallback).append((pi, gi))
    sel = (chosen + fallback)[:p]
    dropped = sum(len(ex) for ex, *_ in parts) * g - p * g
    width = max(parts[pi][1].completion_ids.shape[1] for pi, _ in sel)

    def rows_of(pi, gi, arr):
        a = arr[gi * g : (gi + 1) * g]
        if a.ndim == 2 and a.shape[1] < width:
            a = np.pad(a, ((0, 0), (0, width - a.shape[1])))
        return a

    examples = [parts[pi][0][gi] for pi, gi in sel]
    cat = lambda attr: np.concatenate([rows_of(pi, gi, getattr(parts[pi][1], attr)) for pi, gi in sel])
    batch = RolloutBatch(
        completion_ids=cat("completion_ids"),
        completion_mask=cat("completion_mask"),
        logprobs=cat("logprobs"),
        lengths=cat("lengths"),
        finish_reasons=[r for pi, gi in sel for r in parts[pi][1].finish_reasons[gi * g : (gi + 1) * g]],
        prompt_ids=[e["prompt_ids"] for e in examples],
        num_generations=g,
        weight_version=parts[0][1].weight_version,
    )
    per_reward = np.concatenate([parts[pi][2][gi * g : (gi + 1) * g] for pi, gi in sel])
    total = np.concatenate([parts[pi][3][gi * g : (gi + 1) * g] for pi, gi in sel])
    texts = [t for pi, gi in sel for t in parts[pi][4][gi * g : (gi + 1) * g]]
    return examples, batch, per_reward, total, texts, dropped
