"""Chunked vs naive per-token log-probs, forward + backward (grads wrt hidden, lm_head).

Default shape is the Open-RS update on DeepSeek-R1-Distill-Qwen-1.5B: micro-batch 6, T = 4096,
D = 1536, V = 151,936, bf16 inputs (float32 accumulation and log-softmax). Each variant runs in
its own subprocess (`bench.runner`), because JAX cannot reset a device's peak-memory counter; the worker reports
the allocator's peak (`memory_stats()["peak_bytes_in_use"]`, where the backend has it, e.g.
GPU) and the compiled program's own accounting (`compiled.memory_analysis()`).

    python -m openrs_jax.bench.logprobs --out /tmp/bench_logprobs.json                  # GPU
    python -m openrs_jax.bench.logprobs --vocab 1000 --seq 256 --dim 64 --batch 2 --iters 2 \
        --chunks 64 128 --out /tmp/b.json                                            # CPU smoke

Model FLOPs counted per step: 6·B·T·D·V (forward matmul + the two backward matmuls); the
chunked variant also recomputes the forward matmul (8·B·T·D·V executed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import cast

from openrs_jax.bench import runner


def _worker(args: argparse.Namespace) -> dict:
    import jax
    import jax.numpy as jnp

    from openrs_jax.grpo import token_logprobs, token_logprobs_from_logits

    dtype = jnp.dtype(args.dtype)
    kh, kw, ky = jax.random.split(jax.random.PRNGKey(0), 3)
    hidden = jax.random.normal(kh, (args.batch, args.seq, args.dim), dtype)
    lm_head = (jax.random.normal(kw, (args.dim, args.vocab)) * args.dim**-0.5).astype(dtype)
    targets = jax.random.randint(ky, (args.batch, args.seq), 0, args.vocab)

    # Without return_entropy both return the log-probs alone (their annotation is the union).
    def naive(h, w):
        logits = jnp.einsum("btd,dv->btv", h, w, preferred_element_type=jnp.float32)
        return cast(jax.Array, token_logprobs_from_logits(logits, targets, args.temperature))

    def chunked(h, w):
        chunk = int(args._variant.split("=")[1])
        return cast(jax.Array, token_logprobs(h, w, targets, temperature=args.temperature, chunk_size=chunk))

    logps_fn = naive if args._variant == "naive" else chunked

    step = jax.jit(jax.value_and_grad(lambda h, w: logps_fn(h, w).mean(), argnums=(0, 1)))
    t0 = time.perf_counter()
    compiled = step.lower(hidden, lm_head).compile()
    compile_s = time.perf_counter() - t0
    analysis = compiled.memory_analysis()
    result = {"variant": args._variant, "compile_s": compile_s}
    if analysis is not None:
        for key in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
            result[key] = int(getattr(analysis, key))

    jax.block_until_ready(compiled(hidden, lm_head))  # warm-up
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(hidden, lm_head))
        times.append(time.perf_counter() - t0)
    result["time_s_median"] = statistics.median(times)
    result["time_s_min"] = min(times)
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    model_flops = 6 * args.batch * args.seq * args.dim * args.vocab
    result["model_tflops_per_s"] = model_flops / result["time_s_median"] / 1e12
    result["tokens_per_s"] = args.batch * args.seq / result["time_s_median"]
    result["device"] = str(jax.devices()[0].device_kind)
    result["jax_version"] = jax.__version__
    return result


def _run_variant(args: argparse.Namespace, variant: str) -> dict:
    """One variant in its own process; a failure is {"variant", "error", "detail"}."""
    cmd = [sys.executable, "-m", "openrs_jax.bench.logprobs", "--_variant", variant]
    for name in ("batch", "seq", "dim", "vocab", "dtype", "iters", "temperature"):
        cmd += [f"--{name}", str(getattr(args, name))]
    return {"variant": variant, **runner.run_json(cmd, timeout_s=args.timeout)}


def _fmt_bytes(n) -> str:
    return "-" if n is None else f"{n / 2**30:8.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--no-naive", action="store_true", help="skip the naive variant")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--_variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._variant:  # a worker (`_run_variant`)
        with open(args._result, "w") as f:
            json.dump(_worker(args), f)
        return

    variants = ([] if args.no_naive else ["naive"]) + [f"chunk={c}" for c in args.chunks]
    results = []
    for variant in variants:
        results.append(_run_variant(args, variant))
        print(f"done {variant}: {results[-1]}", file=sys.stderr, flush=True)

    shape = f"B={args.batch} T={args.seq} D={args.dim} V={args.vocab} {args.dtype}"
    print(f"\nlog-probs forward+backward, {shape}")
    print(f"{'variant':>12} {'ms':>9} {'TFLOP/s':>8} {'tok/s':>10} {'peak GiB':>9} {'temp GiB':>9}")
    for r in results:
        if "error" in r:
            detail = (r.get("detail") or "").strip().splitlines()[-1:] or [""]
            print(f"{r['variant']:>12}  failed: {r['error']}: {detail[0][-200:]}")
            continue
        print(
            f"{r['variant']:>12} {1e3 * r['time_s_median']:9.2f} {r['model_tflops_per_s']:8.1f} "
            f"{r['tokens_per_s']:10.0f} {_fmt_bytes(r.get('peak_bytes_in_use')):>9} "
            f"{_fmt_bytes(r.get('temp_size_in_bytes')):>9}"
        )
    if args.out:
        keys = ("batch", "seq", "dim", "vocab", "dtype", "chunks", "iters")
        config = {k: getattr(args, k) for k in keys}
        with open(args.out, "w") as f:
            json.dump({"config": config, "results": results}, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
