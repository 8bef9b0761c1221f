"""Checkpoint load and forward: a random-init 1.5B-shape bf16 HF checkpoint loaded through
`load_hf`, then a forward of B × T tokens; load time, forward time and peak memory.

    python -m openrs_jax.bench.load_forward --ckpt /tmp/r1 --out results.json
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from openrs_jax.bench import common
from openrs_jax.model import deepseek_r1_distill_qwen_1p5b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="/tmp/openrs_bench_r1", help="where the random HF checkpoint is written/read")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers (CPU smoke runs)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from openrs_jax.weights import load_hf

    overrides = {} if args.layers is None else {"num_layers": args.layers}
    cfg = deepseek_r1_distill_qwen_1p5b(**overrides)
    t0 = time.perf_counter()
    common.random_hf_checkpoint(args.ckpt, cfg)
    t_save = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = load_hf(args.ckpt, dtype=jnp.bfloat16)
    jax.block_until_ready(nnx.state(model))
    t_load = time.perf_counter() - t0
    mem_after_load = common.peak_bytes()

    tokens = jnp.asarray(common.np_random_tokens(args.batch, args.seq, cfg.vocab_size))
    results = {"env": common.environment(), "load_s": t_load, "hf_save_s": t_save, "batch": args.batch, "seq": args.seq,
               "attention_impl": model.attention_impl(), "peak_bytes_after_load": mem_after_load}
    rows = []
    for name, kwargs in [("hidden", {"return_hidden": True}), ("logits_f32", {})]:
        fwd = nnx.jit(lambda m, t, kw=kwargs: m(t, **kw))
        t0 = time.perf_counter()
        jax.block_until_ready(fwd(model, tokens))
        compile_s = time.perf_counter() - t0
        timing = common.time_fn(lambda fwd=fwd: fwd(model, tokens), warmup=1, repeats=5)
        toks = args.batch * args.seq
        rows.append({
            "output": name,
            "compile+first_s": compile_s,
            "forward_s": timing["median_s"],
            "tokens_per_s": toks / timing["median_s"],
            "peak_GiB": (common.peak_bytes() or 0) / 2**30,
        })
    results["forward"] = rows
    print(f"device {common.device_name()}  load_hf {t_load:.1f} s  (HF save {t_save:.1f} s)  attention {results['attention_impl']}")
    print(common.fmt_table(rows, ["output", "compile+first_s", "forward_s", "tokens_per_s", "peak_GiB"]))
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
