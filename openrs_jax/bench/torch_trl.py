"""The PyTorch reference of the update benchmark (`python -m openrs_jax.bench`): the GRPO step
as TRL ran it for Open-RS, measured on the same shape and batch as the JAX workers of
`bench.update` (`bench.spec`).

- `torch_update`: the TRL GRPO step (TRL 0.16, the version Open-RS ran): HF
  `Qwen2ForCausalLM` in bfloat16 with sdpa attention and non-reentrant gradient checkpointing,
  `logits_to_keep = C + 1`, TRL's `selective_log_softmax`, k3 KL against the given reference
  log-probs, loss = token mean, backward, `clip_grad_norm_(1.0)`, fused `torch.optim.AdamW`,
  `zero_grad(set_to_none=True)`. `compile=True` wraps the model in `torch.compile`, as HF's
  Trainer does with `torch_compile=True`.
- `torch_reference`: the same forward and log-probs under `torch.no_grad()`.
- `ceiling_torch`: PyTorch's bf16 matmul rate, one of the two MFU denominators.

Peak memory: `torch.cuda.max_memory_allocated()` over the worker's life. torch is imported
inside the workers (the optional [bench] extra).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from openrs_jax.bench.spec import BETA, SEED, Spec, model_config, synthetic_batch


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
        model = Qwen2ForCausalLM(hf_qwen2_config(cfg, attn_implementation="sdpa")).to(torch.bfloat16)  # pyright: ignore[reportArgumentType]  (transformers types .to() as nn.Module's __call__)
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
    return {"step_s": statistics.median(times), "min_s": min(times), "compile_s": first_s,
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
    return {"step_s": statistics.median(times), "min_s": min(times), "compile_s": first_s,
            "peak_GiB": _torch_peak_gib(device), "torch": torch.__version__}


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
            _ = a @ b
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            _ = a @ b
            dt = time.perf_counter() - t0
        if i >= 3:
            times.append(dt)
    return {"matmul_flops": 2 * n**3 / statistics.median(times), "matmul_n": n}
