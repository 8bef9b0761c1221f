"""Measurement helpers shared by the benchmarks: timing with device sync, peak memory,
the device's own ceilings (HBM copy bandwidth, bf16 matmul rate), result records and tables,
random inputs and checkpoints. (FLOP and byte counts: `bench.flops`; running a measurement in
its own process: `bench.runner`.)"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.device_kind} ({d.platform}) x{jax.device_count()}"


def peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def time_fn(fn: Callable[[], Any], warmup: int = 1, repeats: int = 3) -> dict[str, float]:
    """Median wall time of `fn()` (blocked on its outputs) after `warmup` calls."""
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def hbm_bandwidth(nbytes: int = 2 * 1024**3) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    copy = jax.jit(lambda a: a * 1.0000001)
    # Best of many after a long warm-up: a cold GPU (clocks ramping) read 1.0 TB/s once.
    t = time_fn(lambda: copy(x), warmup=10, repeats=20)["min_s"]
    return 2 * nbytes / t


def matmul_flops(n: int = 8192) -> float:
    """bf16 matmul rate (FLOP/s) on random data, the MFU denominator."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (n, n), jnp.bfloat16)
    b = jax.random.normal(k2, (n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: a @ b)
    t = time_fn(lambda: mm(a, b), warmup=2, repeats=10)["median_s"]
    return 2 * n**3 / t


def environment() -> dict[str, Any]:
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        git = ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "git": git,
    }


def write_json(path: str | os.PathLike | None, record: dict[str, Any]) -> None:
    if not path:
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=float))


def random_hf_checkpoint(out_dir: str | os.PathLike, cfg, dtype: str = "bfloat16", seed: int = 0) -> pathlib.Path:
    """A random-init HF Qwen2 of config `cfg` saved by transformers (as users' checkpoints are)."""
    import torch
    from transformers import Qwen2ForCausalLM

    out_dir = pathlib.Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(hf_qwen2_config(cfg)).to(getattr(torch, dtype))
    model.save_pretrained(out_dir)
    del model
    return out_dir


def hf_qwen2_config(cfg, **kwargs):
    """The `transformers.Qwen2Config` of a ModelConfig (the PyTorch side of the benchmarks)."""
    from transformers import Qwen2Config

    hf = cfg.to_hf_config()
    for key in ("architectures", "model_type", "torch_dtype"):
        hf.pop(key)
    return Qwen2Config(**hf, **kwargs)


def fmt_table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def f(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    widths = [max(len(c), *(len(f(r.get(c, ""))) for r in rows)) for c in cols]
    line = " | ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "-|-".join("-" * w for w in widths)
    body = "\n".join(" | ".join(f(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)) for r in rows)
    return f"{line}\n{sep}\n{body}"


def np_random_tokens(b: int, t: int, vocab: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(b, t), dtype=np.int32)
