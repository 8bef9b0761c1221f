"""One GRPO step, top to bottom (layer L5).

    state ──► 1. prompts at the state's data cursor
          ──► 2. rollouts (engine.generate: P prompts × G samples, seed f(run seed, step))
          ──► 3. rewards (process pool; in a thread, overlapped with 5.)
          ──► 4. the training batch: rows laid out and bucketed, put on the mesh
          ──► 5. reference log-probs (jit, dispatched before the rewards are awaited)
          ──► 6. group advantages from the rewards
          ──► 7. the update (one jit: micro-batches, clip, AdamW; non-finite → not applied)
          ──► 8. weight sync to the rollout engine
          ──► state′, metrics

Steps 1–3 make an `Experience` (what was sampled, with what weights, and its rewards); steps
4–8 learn from it. `grpo_step` runs both halves back to back (on-policy); the split is where an
overlapped schedule puts its queue.

Several processes (`openrs_jax.distributed`) run this same step on one global mesh. The data
cursor, the step and the sampling seed are global, so the step is the same whatever the process
count. Process k owns a contiguous share of the P prompts (`distributed.share`): it reads and
tokenizes only those (1) and scores only their completions (3); the shares are exchanged
through the coordination service, so every process holds the whole step (all P prompts, the
rollouts, which the sampler gathers to every process, and all rewards) and computes the same
advantages, the same training batch (placed on the global mesh from identical host arrays) and
the same metrics. Only process 0 writes them (trainer.py).
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from openrs_jax import distributed as dist
from openrs_jax import grpo
from openrs_jax import sharding as shd
from openrs_jax.compile_stats import CompileCounter
from openrs_jax.metrics import PhaseTimer
from openrs_jax.rollout.base import FINISH_LENGTH, RolloutBatch, SamplingParams
from openrs_jax.trainer.setup import Run
from openrs_jax.trainer.state import TrainState, step_seed
from openrs_jax.trainer.step import build_train_batch, round_up

# Coarse length buckets: each new (total, completion) bucket compiles the update and the
# reference pass once (about 40 s for the 1.5B model on an H100), so few buckets matter more
# than the last padded token. Rows carry their own prompt length, so only the total length T
# and the completion width C shape the program: for openrs3 (prompts <= 512, completions
# <= 3584) C takes at most 7 values and T - C at most 3, against 112 (prompt, completion)
# pairs with 128-token buckets of each.
LENGTH_BUCKET = 512
_SCORER: concurrent.futures.ThreadPoolExecutor | None = None


def _scorer() -> concurrent.futures.ThreadPoolExecutor:
    """One thread scores rewards while the devices run the reference pass (the scoring itself
    fans out to the reward functions' process pools). Created on first use."""
    global _SCORER
    if _SCORER is None:
        _SCORER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="openrs-rewards")
    return _SCORER


@dataclasses.dataclass
class Scores:
    """Rewards of B completions: per_reward [B, R] (NaN: the function answered None), total [B]
    (TRL's weighted nansum), texts (decoded completions, special tokens skipped)."""

    per_reward: np.ndarray
    total: np.ndarray
    texts: list[str]


@dataclasses.dataclass
class Experience:
    """What step `step` sampled: P prompts, their P·G rollouts, and the rewards (a future
    while they are being scored). `data` is the cursor after these prompts; `policy_step` the
    optimizer step of the weights that sampled them (step − 1 on-policy); `times` the
    sampler's phase times (rollout, and rewards when scored on the spot)."""

    step: int
    examples: list[dict]
    batch: RolloutBatch
    scores: Scores | concurrent.futures.Future[Scores] | Callable[[], Scores]
    data: dict[str, Any]
    policy_step: int
    times: dict[str, float] = dataclasses.field(default_factory=dict)
    dropped: int = 0
    advantages: np.ndarray | None = None  # [B], set by `learn`
    truncated: np.ndarray | None = None  # [B] bool: cut at the length limit, set by `learn`
    engine_stats: dict[str, float] = dataclasses.field(default_factory=dict)  # the engine's, for this batch

    def wait_scores(self) -> Scores:
        """The rewards: awaited (scored in a background thread) or computed now, in the calling
        thread (deferred: rewards that must run in the main thread)."""
        scores = self.scores
        if isinstance(scores, concurrent.futures.Future):
            scores = scores.result()
        elif not isinstance(scores, Scores):
            scores = scores()
        self.scores = scores
        return scores


def _pack(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(np.ascontiguousarray(a).tobytes())
            .decode("ascii")}


def _unpack(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=d["dtype"]).reshape(d["shape"]).copy()


def experience_to_json(exp: Experience) -> dict[str, Any]:
    """A sampled, scored experience as JSON (arrays bit-exact, base64), for a checkpoint that
    must hold the batch in flight (one-step-off). Prompts are not stored: they are the ones at
    the cursor the experience was drawn from, which the checkpointed state holds."""
    scores, b = exp.wait_scores(), exp.batch
    return {
        "step": exp.step, "policy_step": exp.policy_step, "data": exp.data, "times": exp.times,
        "completion_ids": _pack(b.completion_ids), "completion_mask": _pack(b.completion_mask),
        "logprobs": _pack(b.logprobs), "lengths": _pack(b.lengths), "finish_reasons": list(b.finish_reasons),
        "weight_version": int(b.weight_version), "per_reward": _pack(scores.per_reward), "total": _pack(scores.total),
    }


def experience_from_json(run: Run, d: dict[str, Any], cursor: dict[str, Any]) -> Experience:
    """Inverse of `experience_to_json`: the prompts are drawn again at `cursor` (where the
    experience's prompts were drawn), the texts decoded again from the stored tokens."""
    run.data.load_state_dict(cursor)
    examples = draw_prompts(run, run.cfg.optim.num_prompts_per_step)
    batch = RolloutBatch(
        completion_ids=_unpack(d["completion_ids"]), completion_mask=_unpack(d["completion_mask"]),
        logprobs=_unpack(d["logprobs"]), lengths=_unpack(d["lengths"]), finish_reasons=list(d["finish_reasons"]),
        prompt_ids=[e["prompt_ids"] for e in examples], num_generations=run.cfg.grpo.num_generations,
        weight_version=int(d["weight_version"]),
    )
    texts = run.tokenizer.batch_decode(batch.completion_token_lists(), skip_special_tokens=True)
    scores = Scores(_unpack(d["per_reward"]), _unpack(d["total"]), texts)
    return Experience(int(d["step"]), examples, batch, scores, d["data"], int(d["policy_step"]), dict(d["times"]))


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


# ---------------------------------------------------------------------- 1–3: experience
def draw_prompts(run: Run, n: int) -> list[dict]:
    """The next `n` prompts of the stream (advances the cursor). Every process advances the
    same global cursor, reads only its share of the examples, and receives the others'."""
    if dist.process_count() == 1:
        return run.data.next_batch(n)
    indices = run.data.next_indices(n)
    lo, hi = dist.share(n)
    mine = [run.data.example(k, i) for k, i in indices[lo:hi]]
    return [e for part in dist.allgather_objects("prompts", mine) for e in part]


def score(run: Run, examples: list[dict], batch: RolloutBatch) -> Scores:
    """Rewards of a rollout batch: each completion with its prompt's dataset columns. With
    several processes each scores the completions of its share of the prompts, and the
    scores are exchanged (every process returns all of them)."""
    from openrs_jax.rewards import combine_rewards

    g = run.cfg.grpo.num_generations
    lo, hi = dist.share(len(examples))
    ids = batch.completion_token_lists()[lo * g : hi * g]
    texts = run.tokenizer.batch_decode(ids, skip_special_tokens=True)
    columns = {key: [examples[lo + i // g][key] for i in range(len(texts))] for key in examples[0]
               if key != "prompt_ids"}
    columns["completion_ids"] = ids
    if texts:
        per_reward, total = combine_rewards(run.rewards.fns, run.rewards.weights, texts, **columns)
    else:  # fewer prompts than processes: nothing to score here
        per_reward, total = np.zeros((0, len(run.rewards.fns))), np.zeros(0)  # float64, as combine_rewards
    if dist.process_count() == 1:
        return Scores(per_reward, total, texts)
    parts = dist.allgather_objects("scores", (per_reward, total, texts))
    return Scores(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                  [t for p in parts for t in p[2]])


def sample(run: Run, step: int, examples: list[dict]) -> RolloutBatch:
    """G completions for each prompt, seeded by (run seed, step)."""
    cfg = run.cfg
    sampling = SamplingParams(
        max_new_tokens=cfg.max_completion_length_at(step - 1),
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
        seed=step_seed(cfg.seed, step),
        # The sampler correction compares these with the trainer's log-probs: same temperature.
        logprob_temperature=cfg.grpo.logprob_temperature if cfg.sampler_correction else None,
    )
    return run.engine.generate([e["prompt_ids"] for e in examples], cfg.grpo.num_generations, sampling)


def collect(run: Run, step: int, cursor: dict[str, Any], policy_step: int) -> Experience:
    """Steps 1–3 for step `step`: prompts at the data cursor `cursor`, rollouts with the
    engine's current weights (those of optimizer step `policy_step`), and their rewards (scored
    in the background unless DAPO's dynamic sampling needs them now)."""
    cfg = run.cfg
    timer = PhaseTimer()
    p, g = cfg.optim.num_prompts_per_step, cfg.grpo.num_generations
    run.data.load_state_dict(cursor)
    examples = draw_prompts(run, p)
    with timer("rollout"):
        batch = sample(run, step, examples)
    engine_stats = dict(getattr(run.engine, "last_stats", {}))
    if not cfg.grpo.drop_zero_std_groups:
        if cfg.rewards.num_workers > 0:
            scores = _scorer().submit(score, run, examples, batch)
        else:
            # In-process rewards may need the main thread (math-verify 0.5.2 sets its timeouts
            # with signals): scored when the trainer waits for them, in its own thread.
            scores = functools.partial(score, run, examples, batch)
        return Experience(step, examples, batch, scores, run.data.state_dict(), policy_step, timer.times,
                          engine_stats=engine_stats)
    # DAPO dynamic sampling: the groups need their rewards to be picked.
    with timer("rewards"):
        parts = [(examples, batch, score(run, examples, batch))]
    for _ in range(grpo.MAX_DYNAMIC_SAMPLING_ROUNDS):
        if grpo.enough_signal([s.total for *_, s in parts], p, g):
            break
        more = draw_prompts(run, p)
        with timer("rollout"):
            extra = sample(run, step, more)
        with timer("rewards"):
            parts.append((more, extra, score(run, more, extra)))
    examples, batch, scores, dropped = select_groups(parts, p, g)
    return Experience(step, examples, batch, scores, run.data.state_dict(), policy_step, timer.times, dropped,
                      engine_stats=engine_stats)


def select_groups(parts: list[tuple[list[dict], RolloutBatch, Scores]], p: int, g: int):
    """DAPO dynamic sampling: the groups `grpo.select_groups` picks (the first P with signal,
    topped up with zero-std ones), gathered into one batch. Returns (examples, batch, scores,
    completions dropped)."""
    sel, dropped = grpo.select_groups([s.total for *_, s in parts], p, g)
    width = max(parts[pi][1].completion_ids.shape[1] for pi, _ in sel)

    def rows(pi, gi, arr):
        a = arr[gi * g : (gi + 1) * g]
        if a.ndim == 2 and a.shape[1] < width:
            a = np.pad(a, ((0, 0), (0, width - a.shape[1])))
        return a

    examples = [parts[pi][0][gi] for pi, gi in sel]
    cat = lambda attr: np.concatenate([rows(pi, gi, getattr(parts[pi][1], attr)) for pi, gi in sel])
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
    scores = Scores(
        per_reward=np.concatenate([parts[pi][2].per_reward[gi * g : (gi + 1) * g] for pi, gi in sel]),
        total=np.concatenate([parts[pi][2].total[gi * g : (gi + 1) * g] for pi, gi in sel]),
        texts=[t for pi, gi in sel for t in parts[pi][2].texts[gi * g : (gi + 1) * g]],
    )
    return examples, batch, scores, dropped


# ---------------------------------------------------------------------- 4–8: learning
def learn(run: Run, state: TrainState, exp: Experience, timer: PhaseTimer) -> tuple[TrainState, dict[str, Any]]:
    """Steps 4–7: the update from one experience. Returns the new state and the update's
    metrics (device values fetched), plus the host-side quantities `step_metrics` needs."""
    cfg, policy = run.cfg, run.policy
    g = cfg.grpo.num_generations
    batch = exp.batch
    # 4. The training batch, bucketed by total and completion length.
    mask = batch.completion_mask.astype(np.float32)
    truncated = np.array([r == FINISH_LENGTH for r in batch.finish_reasons])
    if cfg.grpo.mask_truncated_completions:
        mask = mask * (~truncated)[:, None]
    total_len, comp_len = length_buckets(max(len(e["prompt_ids"]) for e in exp.examples), mask.shape[1],
                                         cfg.data.max_prompt_length, cfg.rollout.max_completion_length)
    host = build_train_batch(
        [e["prompt_ids"] for e in exp.examples], batch.completion_ids, mask, np.zeros(mask.shape[0], np.float32),
        num_generations=g, pad_token_id=run.pad_id, loss=policy.loss, total_length=total_len,
        completion_length=comp_len,
        sampling_logps=batch.logprobs if cfg.sampler_correction else None,
    )
    shardings = jax.tree.map(lambda x: shd.batch_sharding(run.mesh, shd.TRAIN_RULES, x.ndim), host)
    train_batch = jax.device_put(host, shardings)

    # 5. Reference (and old-policy) log-probs: dispatched now, they run on the devices while
    # the host waits for the rewards (JAX dispatch is asynchronous).
    with timer("reference"):
        if policy.ref_params is not None:
            train_batch = dataclasses.replace(train_batch, ref_logps=policy.logps_fn(policy.ref_params, train_batch))
        if cfg.grpo.num_iterations > 1:
            train_batch = dataclasses.replace(train_batch, old_logps=policy.logps_fn(state.params, train_batch))
    with timer("rewards"):
        scores = exp.wait_scores()
    # 6. Group advantages.
    advantages = np.asarray(grpo.group_advantages(jnp.asarray(scores.total, jnp.float32), g,
                                                  scale=cfg.grpo.scale_rewards, epsilon=cfg.grpo.advantage_epsilon))
    exp.advantages = advantages
    exp.truncated = truncated
    with timer("reference"):  # the part of the reference pass the rewards did not hide
        jax.block_until_ready(train_batch)
    train_batch = dataclasses.replace(train_batch, advantages=jax.device_put(advantages, shardings.advantages))

    # 7. The update (μ passes over the batch; one with Open-RS).
    with timer("update"):
        params, opt_state, m = policy.train_step(state.params, state.opt_state, train_batch)
        for _ in range(cfg.grpo.num_iterations - 1):
            params, opt_state, m = policy.train_step(params, opt_state, train_batch)
        m = jax.device_get(m)
    applied = bool(m["update_applied"] >= 1.0)
    # TRL's num_input_tokens_seen: every row's prompt and completion tokens.
    seen = g * sum(len(e["prompt_ids"]) for e in exp.examples) + int(batch.lengths.sum())
    new_state = TrainState(step=exp.step, params=params, opt_state=opt_state, data=exp.data,
                           nonfinite_run=0 if applied else state.nonfinite_run + 1,
                           num_tokens=state.num_tokens + seen)
    return new_state, {"update": m, "truncated": truncated}


def sync_weights(run: Run, state: TrainState, timer: PhaseTimer, *, own_copy: bool = False) -> None:
    """Step 8: the rollout engine samples the next batch with the new weights. `own_copy`:
    the engine gets buffers of its own (an overlapped sampler keeps using them while the next
    update donates the state's)."""
    with timer("sync"):
        params = run.policy.sampler_params(state.params) if own_copy else state.params
        run.engine.update_weights(run.policy.model(params))


def grpo_step(run: Run, state: TrainState, rollouts) -> tuple[TrainState, Experience, dict[str, float]]:
    """One GRPO step: (new state, its experience, metrics). `rollouts` (a `schedule.Schedule`)
    says when the batch was sampled: on-policy (`sync`: now, then the new weights go to the
    sampler after the update) or one step off (sampled while the previous update ran)."""
    timer = PhaseTimer()
    with timer("step"), CompileCounter() as compiles:
        exp = rollouts.next_experience(state, timer)  # 1–3
        state, learned = learn(run, state, exp, timer)  # 4–7
        rollouts.after_update(state, timer)  # 8
    metrics = step_metrics(run, exp, learned, timer, staleness=state.step - 1 - exp.policy_step)
    # XLA compilations during the step (0 once every program of the run's shapes exists).
    metrics.update({"compile/count": float(compiles.count), "time/compile": compiles.seconds})
    metrics["num_tokens"] = float(state.num_tokens)
    return state, exp, {**metrics, **rollouts.metrics()}


# ---------------------------------------------------------------------- metrics
def epoch_of(cursor: dict[str, Any]) -> float:
    """HF's fractional `epoch` from a data cursor (`PromptIterator.state_dict()`): prompts
    drawn / rows, over all sources (a mixture's epoch is of its rows together)."""
    sources = cursor["sources"]
    drawn = sum(int(s["epoch"]) * int(s["num_rows"]) + int(s["position"]) for s in sources)
    return drawn / max(sum(int(s["num_rows"]) for s in sources), 1)


def step_metrics(run: Run, exp: Experience, learned: dict[str, Any], timer: PhaseTimer,
                 staleness: int = 0) -> dict[str, float]:
    """TRL's metric names for one step (current TRL's meanings: `reward_std` is the std over the
    batch; `reward_group_std` the mean group std, reward_std of TRL < 0.27 with group scaling), plus `epoch`,
    timings (`time/<phase>`: the step's phases, and the sampler's `rollout` time of this batch,
    which overlapped modes hide behind the previous update), throughput, and
    `rollout/staleness` (updates between sampling and training). `num_tokens` (cumulative) is
    added by `grpo_step` from the state."""
    cfg = run.cfg
    g = cfg.grpo.num_generations
    scores, batch, truncated = exp.wait_scores(), exp.batch, learned["truncated"]
    lengths = batch.lengths.astype(np.float64)
    term = lengths[~truncated]
    if term.size == 0:  # TRL: zeros when no completion terminated
        term = np.zeros(1)
    stats = grpo.reward_stats(jnp.asarray(scores.total, jnp.float32), g, scale=cfg.grpo.scale_rewards)
    out = {
        **{k: float(v) for k, v in stats.items()},  # reward, reward_std, reward_group_std, frac_reward_zero_std
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(truncated.mean()),
        "completions/mean_terminated_length": float(term.mean()),
        "completions/min_terminated_length": float(term.min()),
        "completions/max_terminated_length": float(term.max()),
        "epoch": epoch_of(exp.data),
    }
    for r, name in enumerate(run.rewards.names):
        col = scores.per_reward[:, r]
        out[f"rewards/{name}/mean"] = float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
        out[f"rewards/{name}/std"] = float(np.nanstd(col, ddof=1)) if np.isfinite(col).sum() > 1 else 0.0
    out.update({k: float(v) for k, v in learned["update"].items() if k != "completion_tokens"})
    times = {**exp.times, **timer.times}
    if "rewards" in exp.times and "rewards" in timer.times:
        times["rewards"] = exp.times["rewards"] + timer.times["rewards"]
    n_tok = float(batch.lengths.sum())
    out.update({f"time/{k}": v for k, v in times.items()})
    out["tokens_per_s"] = n_tok / max(times.get("step", 0.0), 1e-9)
    out["rollout/tokens_per_s"] = n_tok / max(times.get("rollout", 0.0), 1e-9)
    out["num_completions_dropped"] = float(exp.dropped)
    out["rollout/staleness"] = float(staleness)
    stats = exp.engine_stats
    if "rollout/prefill_s" in stats:
        out["time/rollout_prefill"] = stats["rollout/prefill_s"]
    if "rollout/compiles" in stats:
        out["rollout/compiles"] = stats["rollout/compiles"]
    return out
