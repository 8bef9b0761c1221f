"""Issue-7 benchmark workers: the GRPO update and the reference forward, JAX against PyTorch.

Each worker measures one thing (one phase, one implementation, one sequence length, one
variant) and returns a JSON-able record; `python -m openrs_jax.bench` runs every worker in its
own subprocess (`run_worker`) so allocators never share the GPU and an out-of-memory variant
costs one row, not the table.

The measured programs
- `jax_update`: exactly the trainer's update. The model is built as the trainer builds it
  (float32 master weights, bfloat16 compute, `create_sharded` on one device), the step
  is `trainer.step.build_train_step(..., num_micro=1)` with `make_optimizer` (global-norm clip
  1.0 + AdamW) and `LossSettings` as the trainer fills them (β = 0.04, "openrs" loss, entropy
  logged), params and optimizer state donated. Variants: `remat` ("none" | "dots" | "full")
  and `chunk` (`LossSettings.logprob_chunk`). The step runs its forward over all T tokens,
  right-padded, with no attention mask (cuDNN's causal flash kernel). Its first version ran
  over T − 1 tokens with an explicit mask: cuDNN rejected the odd length, and the mask cost
  13 % (the what-if rows that led to the change: docs/BENCHMARKS-update-notes.md).
- `jax_reference`: `trainer.step.build_logps_fn(graphdef, loss, 1)` on bfloat16 parameters
  (the trainer's frozen reference copy).
- `torch_update`: the TRL GRPO step (TRL 0.16, the version Open-RS ran): HF
  `Qwen2ForCausalLM` in bfloat16 with sdpa attention and non-reentrant gradient checkpointing,
  `logits_to_keep = C + 1`, TRL's `selective_log_softmax`, k3 KL against the given reference
  log-probs, loss = token mean, backward, `clip_grad_norm_(1.0)`, fused `torch.optim.AdamW`,
  `zero_grad(set_to_none=True)`. `compile=True` wraps the model in `torch.compile`, as HF's
  Trainer does with `torch_compile=True`.
- `torch_reference`: the same forward and log-probs under `torch.no_grad()`.

Batch: B rows of T = prompt + C tokens, random ids, full masks, random advantages; all T
tokens of every row count in tokens/s (as the PyTorch anchors in docs/design.md do).

Model FLOPs (`model_flops`), per row of T tokens with C completion tokens, the same count for
JAX and PyTorch; recomputation (remat, gradient checkpointing, chunked log-probs) is not
counted, as is usual for MFU:

    forward  = 2·N·T  +  2·D·V·C  +  2·L·N_h·H·T²
    update   = 3 × forward        (backward = 2 × forward)

N = non-embedding parameters (`ModelConfig.num_params(include_embeddings=False)`: attention,
MLP, norms); 2·D·V·C is the LM-head matmul, counted because both implementations run it, on
the C completion positions only (the forward's `logits_to_keep` in TRL, the chunked log-probs
here); 2·L·N_h·H·T² is causal attention (QKᵀ and AV, 2·T²·N_h·H each for full attention,
halved by the causal mask). The input embedding is a gather and is not counted. MFU = model
FLOPs / (time × bf16 matmul rate measured in the same run by `ceiling`).

Peak memory: JAX `memory_stats()['peak_bytes_in_use']` of the worker process (weights,
optimizer state and the step's buffers); PyTorch `torch.cuda.max_memory_allocated()` over the
worker's life. XLA's own plan for the compiled step (`memory_analysis`) is recorded too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

# Open-RS: G = 6 completions per prompt, one prompt per micro-batch of 6.
NUM_GENERATIONS = 6
BETA = 0.04
SEED = 0

# ---------------------------------------------------------------------- shapes and FLOPs


def model_config(overrides: dict[str, Any] | None = None):
    """The 1.5B shape (DeepSeek-R1-Distill-Qwen-1.5B) with `overrides` (ModelConfig fields;
    the smoke test shrinks it). Imported lazily: the orchestrator must not import JAX."""
    from openrs_jax.model.config import deepseek_r1_distill_qwen_1p5b

    cfg = deepseek_r1_distill_qwen_1p5b(**(overrides or {}))
    # A shrunken vocabulary cannot hold the preset's special ids (transformers warns).
    ids = {k: None for k in ("bos_token_id", "eos_token_id")
           if isinstance(getattr(cfg, k), int) and getattr(cfg, k) >= cfg.vocab_size}
    return cfg.replace(**ids)


def model_flops(cfg, seq: int, completion: int, phase: str) -> float:
    """Model FLOPs of one row of `seq` tokens with `completion` completion tokens (module
    docstring): forward = 2·N·T + 2·D·V·C + 2·L·N_h·H·T²; "update" = 3 × forward;
    "reference" = forward."""
    n = cfg.num_params(include_embeddings=False)
    fwd = (
        2 * n * seq
        + 2 * cfg.hidden_size * cfg.vocab_size * completion
        + 2 * cfg.num_layers * cfg.num_heads * cfg.resolved_head_dim * seq**2
    )
    if phase == "update":
        return 3.0 * fwd
    if phase == "reference":
        return float(fwd)
    raise ValueError(f"model_flops: phase must be 'update' or 'reference', got {phase!r}")


def decode_flops_per_token(cfg, context: float) -> float:
    """Forward FLOPs of one decoded token at an average `context` length:
    2·(N + D·V) + 4·L·N_h·H·context (the LM head on every token; attention over the cache)."""
    n = cfg.num_params(include_embeddings=False)
    return 2.0 * (n + cfg.hidden_size * cfg.vocab_size) + 4.0 * cfg.num_layers * cfg.num_heads * cfg.resolved_head_dim * context


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one worker measures. `model` holds ModelConfig overrides of the 1.5B shape."""

    batch: int = 6
    seq: int = 2048  # T, prompt + completion
    prompt: int = 256
    remat: str = "dots"
    chunk: int = 512
    compile: bool = False  # torch.compile
    warmup: int = 2
    repeats: int = 5
    ceiling_n: int = 16384
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    devices: int = 1  # JAX update over a mesh of this many GPUs
    parallel: str = "data"  # that mesh's one axis: "data" (replicated state) or "fsdp" (sharded state)

    @property
    def rows(self) -> int:
        """Rows of one step: `batch` per device."""
        return self.batch * self.devices

    @property
    def completion(self) -> int:
        return self.seq - self.prompt

    def __post_init__(self):
        if not 0 < self.prompt < self.seq:
            raise ValueError(f"prompt length {self.prompt} must be in (0, seq={self.seq})")
        if self.warmup < 1 or self.repeats < 1:
            raise ValueError(f"warmup ({self.warmup}) and repeats ({self.repeats}) must be >= 1")
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")
        if self.parallel not in ("fsdp", "data"):
            raise ValueError(f"parallel must be 'fsdp' or 'data', got {self.parallel!r}")


def synthetic_batch(vocab: int, batch: int, seq: int, prompt: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Host arrays of one update batch: tokens [B, T], full masks, positions 0..T-1,
    advantages [B] ~ N(0, 1), reference log-probs [B, C] (negative, plausible magnitudes)."""
    rng = np.random.default_rng(seed)
    c = seq - prompt
    return {
        "tokens": rng.integers(0, vocab, size=(batch, seq), dtype=np.int32),
        "attention_mask": np.ones((batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
        "completion_mask": np.ones((batch, c), np.float32),
        "advantages": rng.standard_normal(batch).astype(np.float32),
        "ref_logps": (-1.0 - np.abs(rng.standard_normal((batch, c)))).astype(np.float32),
    }


def _num_generations(batch: int) -> int:
    return NUM_GENERATIONS if batch % NUM_GENERATIONS == 0 else batch


def _median(xs: list[float]) -> float:
    return float(np.median(np.asarray(xs)))


# ---------------------------------------------------------------------- JAX workers


def _mesh(spec: Spec):
    """None for one device; else a one-axis mesh of `spec.devices` GPUs with rows split over
    them: "data" (the trainer's default mesh: state replicated, gradients all-reduced) or
    "fsdp" (parameters, gradients and Adam state sharded too; `mesh: {data: 1, fsdp: -1}`)."""
    import jax

    from openrs_jax import sharding as shd

    if spec.devices == 1:
        return None
    if jax.device_count() < spec.devices:
        raise ValueError(f"devices={spec.devices} but this machine has {jax.device_count()} {jax.default_backend()} device(s)")
    axes = {"data": 1, "fsdp": 1, "tensor": 1, spec.parallel: spec.devices}
    return shd.make_mesh(axes, jax.devices()[: spec.devices])


def _jax_model(spec: Spec, param_dtype: str, remat: str):
    """(cfg, graphdef, params, mesh) of the policy built as the trainer builds it."""
    import jax
    from flax import nnx

    from openrs_jax import sharding as shd
    from openrs_jax.model import create_sharded

    cfg = model_config(spec.model).replace(dtype="bfloat16", param_dtype=param_dtype, remat=remat)
    # Created eagerly on one device and then placed: `create_sharded` with a mesh jits the
    # random init, which takes XLA minutes to compile for the 1.5B shape (the eager init
    # takes seconds). On one device the trainer's mesh constrains nothing, so none is set.
    model = create_sharded(cfg, None, seed=SEED)
    mesh = _mesh(spec)
    if mesh is not None:
        model.set_sharding(mesh, shd.TRAIN_RULES)  # activation constraints, as the trainer's model
    graphdef, params = nnx.split(model, nnx.Param)[:2]
    if mesh is not None:
        params = jax.device_put(params, shd.state_shardings(params, mesh, shd.TRAIN_RULES))
    return cfg, graphdef, params, mesh


def _jax_loss_settings(spec: Spec):
    """The loss settings the trainer builds for the openrs3 recipe (`trainer.step.loss_settings`,
    the one place they are read from a config), at this benchmark's shape."""
    import dataclasses

    from openrs_jax.config import load_config
    from openrs_jax.trainer.step import loss_settings

    cfg = load_config("openrs3", [f"grpo.beta={BETA}", f"grpo.num_generations={_num_generations(spec.batch)}",
                                  f"rollout.max_completion_length={spec.completion}",
                                  "optim.micro_batch_size=null", "optim.gradient_accumulation_steps=null",
                                  f"optim.num_prompts_per_step={max(1, spec.batch // _num_generations(spec.batch))}"])
    return dataclasses.replace(loss_settings(cfg), logprob_chunk=spec.chunk)


def _jax_batch(spec: Spec, cfg, with_ref: bool, mesh=None):
    import jax

    from openrs_jax import grpo
    from openrs_jax import sharding as shd
    from openrs_jax.trainer.step import TrainBatch

    host = synthetic_batch(cfg.vocab_size, spec.rows, spec.seq, spec.prompt)
    seq_w = np.asarray(
        grpo.sequence_weights(host["completion_mask"], loss_type="openrs", num_generations=_num_generations(spec.batch)),
        np.float32,
    )
    batch = TrainBatch(
        tokens=host["tokens"],
        prompt_lengths=np.full((spec.rows,), spec.prompt, np.int32),
        completion_mask=host["completion_mask"],
        advantages=host["advantages"],
        seq_weights=seq_w,
        ref_logps=host["ref_logps"] if with_ref else None,
    )
    if mesh is None:
        return jax.device_put(batch, jax.devices()[0])
    return jax.tree.map(lambda x: jax.device_put(x, shd.batch_sharding(mesh, shd.TRAIN_RULES, x.ndim)), batch)


def _memory_plan(compiled) -> dict[str, float]:
    """XLA's buffer plan of a compiled program in GiB (absent where the backend has none)."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 — not every backend implements it
        return {}
    if ma is None:
        return {}
    gib = 2**30
    args, out = ma.argument_size_in_bytes, ma.output_size_in_bytes
    alias, temp = ma.alias_size_in_bytes, ma.temp_size_in_bytes
    return {"plan_args_GiB": args / gib, "plan_temp_GiB": temp / gib, "plan_total_GiB": (args + out - alias + temp) / gib}


def _jax_peak_gib() -> float | None:
    from openrs_jax.bench import common

    peak = common.peak_bytes()
    return None if peak is None else peak / 2**30


def build_jax_update(spec: Spec):
    """The trainer's update for `spec`, compiled: (cfg, compiled step, params, opt_state, batch,
    compile seconds). Shared by `jax_update` and scripts/profile_gpu.py."""
    import jax

    from openrs_jax.trainer.step import (
        build_train_step, init_optimizer, lr_schedule, make_optimizer, optimizer_shardings,
    )

    cfg, graphdef, params, mesh = _jax_model(spec, "float32", spec.remat)
    loss = _jax_loss_settings(spec)
    schedule = lr_schedule(1e-6, 500, 50)
    optimizer = make_optimizer(schedule, max_grad_norm=1.0)
    if mesh is None:
        opt_state = init_optimizer(optimizer, params)
        step = build_train_step(graphdef, optimizer, schedule, loss, 1)
    else:  # as the trainer: outputs keep the inputs' shardings
        param_sh = jax.tree.map(lambda x: x.sharding, params)
        opt_sh = optimizer_shardings(optimizer, params)
        opt_state = init_optimizer(optimizer, params, opt_sh)
        step = build_train_step(graphdef, optimizer, schedule, loss, 1, param_shardings=param_sh, opt_shardings=opt_sh)
    batch = _jax_batch(spec, cfg, with_ref=True, mesh=mesh)
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, batch).compile()
    return cfg, compiled, params, opt_state, batch, time.perf_counter() - t0


def jax_update(spec: Spec) -> dict[str, Any]:
    """Median step time of the trainer's jitted update (see module docstring)."""
    import jax

    cfg, compiled, params, opt_state, batch, compile_s = build_jax_update(spec)
    plan = _memory_plan(compiled)

    metrics = None
    for _ in range(spec.warmup):
        params, opt_state, metrics = compiled(params, opt_state, batch)
    jax.block_until_ready((params, opt_state, metrics))
    times = []
    for _ in range(spec.repeats):
        t0 = time.perf_counter()
        params, opt_state, metrics = compiled(params, opt_state, batch)
        jax.block_until_ready((params, opt_state, metrics))
        times.append(time.perf_counter() - t0)
    loss_value = float(metrics["loss"])
    applied = float(metrics["update_applied"])
    if not np.isfinite(loss_value) or applied != 1.0:
        raise RuntimeError(f"jax_update: non-finite step (loss {loss_value}, update_applied {applied})")
    return {
        "step_s": _median(times), "min_s": min(times), "compile_s": compile_s,
        "peak_GiB": _jax_peak_gib(), "loss": loss_value, **plan,
        "attention_impl": _attention_impl(cfg),
    }


def _attention_impl(cfg) -> str:
    from openrs_jax.model import abstract_model

    return abstract_model(cfg).attention_impl()


def jax_reference(spec: Spec) -> dict[str, Any]:
    """Median time of the trainer's reference log-prob pass on bfloat16 parameters."""
    import jax

    from openrs_jax.trainer.step import build_logps_fn

    if spec.devices != 1:
        raise ValueError("the reference benchmark runs on one device (devices=1)")
    cfg, graphdef, params, _ = _jax_model(spec, "bfloat16", "none")
    fn = build_logps_fn(graphdef, _jax_loss_settings(spec), 1)
    batch = _jax_batch(spec, cfg, with_ref=False)
    t0 = time.perf_counter()
    compiled = fn.lower(params, batch).compile()
    compile_s = time.perf_counter() - t0
    plan = _memory_plan(compiled)
    out = None
    for _ in range(spec.warmup):
        out = compiled(params, batch)
    jax.block_until_ready(out)
    times = []
    for _ in range(spec.repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(params, batch))
        times.append(time.perf_counter() - t0)
    if not np.isfinite(np.asarray(out)).all():
        raise RuntimeError("jax_reference: non-finite log-probs")
    return {"step_s": _median(times), "min_s": min(times), "compile_s": compile_s,
            "peak_GiB": _jax_peak_gib(), **plan, "attention_impl": _attention_impl(cfg)}


# ---------------------------------------------------------------------- PyTorch workers


def selective_log_softmax(logits, index):
    """TRL's `selective_log_softmax` (trl/trainer/utils.py): log_softmax(logits)[index].
    float32/64: gather − logsumexp (row by row, to bound memory); other dtypes (bf16 logits,
    what HF returns here): a row-by-row log_softmax, as TRL does for stability."""
    import torch

    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        lse = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return selected - lse
    rows = []
    for row_logits, row_labels in zip(logits, index):
        row_logps = torch.nn.functional.log_softmax(row_logits, dim=-1)
        rows.append(row_logps.gather(dim=-1, index=row_labels.unsqueeze(-1)).squeeze(-1))
    return torch.stack(rows)


def _torch_setup(spec: Spec, train: bool):
    import torch
    from transformers import Qwen2ForCausalLM

    from openrs_jax.bench.common import hf_qwen2_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg = model_config(spec.model)
    torch.manual_seed(SEED)
    with device:
        model = Qwen2ForCausalLM(hf_qwen2_config(cfg, attn_implementation="sdpa")).to(torch.bfloat16)
    model.config.use_cache = False
    if train:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    else:
        model.eval()
    host = synthetic_batch(cfg.vocab_size, spec.batch, spec.seq, spec.prompt)
    batch = {k: torch.from_numpy(v).to(device) for k, v in host.items()}
    forward = torch.compile(model) if spec.compile else model
    return cfg, device, model, forward, batch


def _torch_logps(forward, batch, completion: int):
    """TRL `_get_per_token_logps`: logits of the last C + 1 positions, drop the last, take the
    completion tokens' log-probs. [B, C]."""
    logits = forward(
        input_ids=batch["tokens"], attention_mask=batch["attention_mask"], logits_to_keep=completion + 1
    ).logits
    logits = logits[:, :-1, :]
    return selective_log_softmax(logits, batch["tokens"][:, -completion:])


def _torch_time(fn: Callable[[], Any], device, warmup: int, repeats: int) -> list[float]:
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _torch_peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def torch_update(spec: Spec) -> dict[str, Any]:
    """Median step time of the TRL-style GRPO update in PyTorch (see module docstring)."""
    import torch

    cfg, device, model, forward, batch = _torch_setup(spec, train=True)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=device.type == "cuda"
    )
    mask, adv, ref = batch["completion_mask"], batch["advantages"], batch["ref_logps"]
    losses = []

    def step():
        logps = _torch_logps(forward, batch, spec.completion)
        diff = ref - logps
        kl = torch.exp(diff) - diff - 1
        # TRL 0.16, one pass per batch: ρ = exp(logp − sg(logp)) ≡ 1 with ∇ρ = ∇logp.
        per_token = -(torch.exp(logps - logps.detach()) * adv[:, None] - BETA * kl)
        loss = (per_token * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    times = _torch_time(step, device, spec.warmup - 1 if spec.warmup > 1 else 0, spec.repeats)
    loss_value = float(losses[-1])
    if not np.isfinite(loss_value):
        raise RuntimeError(f"torch_update: non-finite loss {loss_value}")
    return {"step_s": _median(times), "min_s": min(times), "compile_s": first_s,
            "peak_GiB": _torch_peak_gib(device), "loss": loss_value, "torch": torch.__version__}


def torch_reference(spec: Spec) -> dict[str, Any]:
    """Median time of the TRL-style reference log-prob pass in PyTorch (no_grad)."""
    import torch

    cfg, device, model, forward, batch = _torch_setup(spec, train=False)
    out = []

    def fwd():
        with torch.no_grad():
            out.append(_torch_logps(forward, batch, spec.completion))
            del out[:-1]

    t0 = time.perf_counter()
    fwd()
    first_s = time.perf_counter() - t0
    times = _torch_time(fwd, device, spec.warmup - 1 if spec.warmup > 1 else 0, spec.repeats)
    if not torch.isfinite(out[-1].float()).all():
        raise RuntimeError("torch_reference: non-finite log-probs")
    return {"step_s": _median(times), "min_s": min(times), "compile_s": first_s,
            "peak_GiB": _torch_peak_gib(device), "torch": torch.__version__}


# ---------------------------------------------------------------------- ceiling


def ceiling(spec: Spec) -> dict[str, Any]:
    """The run's environment and the bf16 matmul rate (n = spec.ceiling_n), the MFU
    denominator, measured by JAX on this device."""
    from openrs_jax.bench import common

    env = common.environment()
    try:
        import torch

        env["torch"] = torch.__version__
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    import flax

    env["flax"] = flax.__version__
    return {"env": env, "matmul_flops": common.matmul_flops(spec.ceiling_n), "matmul_n": spec.ceiling_n}


def ceiling_torch(spec: Spec) -> dict[str, Any]:
    """The bf16 matmul rate (FLOP/s) of an n × n × n product through PyTorch, timed with CUDA
    events (median of 10 after 3 warm-ups), n = spec.ceiling_n; the run's MFU denominator is
    the larger of this and `ceiling` (the device's best demonstrated rate)."""
    import torch

    n = spec.ceiling_n
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device).manual_seed(SEED)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    times = []
    for i in range(13):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            a @ b
            dt = time.perf_counter() - t0
        if i >= 3:
            times.append(dt)
    return {"matmul_flops": 2 * n**3 / _median(times), "matmul_n": n}


WORKERS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "ceiling": ceiling,
    "ceiling_torch": ceiling_torch,
    "jax_update": jax_update,
    "jax_reference": jax_reference,
    "torch_update": torch_update,
    "torch_reference": torch_reference,
}


# ---------------------------------------------------------------------- subprocess plumbing


def _error_kind(text: str) -> str:
    low = text.lower()
    if "resource_exhausted" in low or "out of memory" in low or "outofmemory" in low:
        return "OOM"
    return "error"


def run_worker(kind: str, spec: Spec, *, timeout_s: float | None = None, in_process: bool = False) -> dict[str, Any]:
    """Runs worker `kind` on `spec`, in a fresh Python process unless `in_process`.

    Returns the worker's record, or {"error": "OOM" | "timeout" | "error", "detail": ...}
    when it failed; never raises for a failed measurement.
    """
    if kind not in WORKERS:
        raise ValueError(f"unknown worker {kind!r}; known: {', '.join(WORKERS)}")
    if in_process:
        try:
            return WORKERS[kind](spec)
        except Exception as e:  # noqa: BLE001 — one failed variant is one row
            text = f"{type(e).__name__}: {e}"
            return {"error": _error_kind(text), "detail": text[-2000:]}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, "-m", "openrs_jax.bench.update", "--_worker", kind,
           "--_spec", json.dumps(dataclasses.asdict(spec)), "--_result", path]
    return run_command(cmd, path, timeout_s)


def run_command(cmd: list[str], result_path: str, timeout_s: float | None) -> dict[str, Any]:
    """Runs a worker command line that writes its JSON record to `result_path`."""
    env = dict(os.environ)
    # JAX takes 75% of the GPU by default; the benchmark gives it what PyTorch gets.
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-1500:]
        return {"error": "timeout", "detail": f"over {timeout_s} s; " + (tail.decode(errors="replace") if isinstance(tail, bytes) else tail)}
    try:
        if proc.returncode != 0:
            text = proc.stderr + proc.stdout
            return {"error": _error_kind(text), "detail": text[-2000:]}
        with open(result_path) as f:
            return json.load(f)
    finally:
        if os.path.exists(result_path):
            os.unlink(result_path)


def _worker_main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="one benchmark worker (run by `python -m openrs_jax.bench`)")
    ap.add_argument("--_worker", required=True, choices=sorted(WORKERS))
    ap.add_argument("--_spec", required=True)
    ap.add_argument("--_result", required=True)
    args = ap.parse_args(argv)
    res = WORKERS[args._worker](Spec(**json.loads(args._spec)))
    with open(args._result, "w") as f:
        json.dump(res, f, default=float)


if __name__ == "__main__":
    _worker_main()
