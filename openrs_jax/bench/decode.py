"""Decode throughput of the `jax` engine for the 1.5B shape (random init,
bf16) next to HF `generate` in the same run and the HBM roofline.

    python -m openrs_jax.bench.decode --out results.json            # both, one table
    python -m openrs_jax.bench.decode --only jax --batches 96 --new 1024

Random weights never choose EOS on purpose, so every row generates the full length; that
is the worst case for the sampler (no early stop, no compaction).
Roofline tokens/s = B / (bytes per step / HBM bandwidth), bytes per step = weights read
(non-embedding parameters + LM head) + the filled KV cache at the average context
(prompt + new/2), bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from openrs_jax.bench import common, flops, runner


def _jax_run(batch: int, prompt: int, new: int, repeats: int, layers: int | None = None,
             cache_mode: str = "auto", temperature: float = 0.7, decode_attention: str = "auto",
             decode_kernel: str | None = None, kv_dtype: str | None = None, compiler_options: str | None = None,
             logp_rows: int = 0) -> dict:
    from openrs_jax.model import create_sharded, deepseek_r1_distill_qwen_1p5b
    from openrs_jax.model import decode_attention as da

    if decode_kernel:  # tuning of the fused kernel (JSON of decode_attention.DEFAULTS entries)
        text = pathlib.Path(decode_kernel).read_text() if decode_kernel.endswith(".json") else decode_kernel
        da.DEFAULTS.update(json.loads(text))
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.jax_engine import JaxEngine

    cfg = deepseek_r1_distill_qwen_1p5b(**({} if layers is None else {"num_layers": layers}))
    model = create_sharded(cfg, seed=0)
    # No EOS: measure full-length decoding.
    engine = JaxEngine(model, eos_token_ids=[], pad_token_id=0, max_batch_size=batch, cache_mode=cache_mode,
                       max_prompt_len=512,  # as the trainer passes the recipes' prompt limit
                       decode_attention=decode_attention, kv_cache_dtype=kv_dtype,
                       compiler_options=json.loads(compiler_options) if compiler_options else None)
    prompts = common.np_random_tokens(batch, prompt, 150000).tolist()
    sp = SamplingParams(max_new_tokens=new, temperature=temperature, seed=0)
    t0 = time.perf_counter()
    out = engine.generate(prompts, 1, sp)
    first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = engine.generate(prompts, 1, SamplingParams(max_new_tokens=new, temperature=temperature, seed=i + 1))
        times.append(time.perf_counter() - t0)
    ntok = int(out.lengths.sum())
    best = min(times)
    mode = engine.resolved_cache_mode(batch, engine._layout(batch, prompt, new)[0].full_len)
    mismatch = _logp_mismatch(model, prompts[:logp_rows], out, temperature) if logp_rows else {}
    return {"engine": f"jax/{mode}/{engine.decode_attention}/T={temperature}", "batch": batch, "prompt": prompt,
            "new": new, "tokens": ntok, "first_call_s": first, "time_s": best, "tokens_per_s": ntok / best,
            "prefill_s": engine.last_stats["rollout/prefill_s"], "compiles_last_call": engine.last_stats["rollout/compiles"],
            "decode_kernel": dict(da.DEFAULTS), "kv_dtype": str(engine.kv_dtype),
            "compiler_options": engine.compiler_options, **mismatch, "peak_GiB": (common.peak_bytes() or 0) / 2**30}


def _logp_mismatch(model, prompts, out, temperature: float, chunk: int = 256) -> dict:
    """|sampler log-prob − teacher-forced log-prob| of the sampled tokens, the latter from a
    full forward of the model (the trainer's path: no KV cache, compute dtype) at the same
    temperature; mean and max over the completion tokens of the given rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    diffs = []
    hidden_fn = jax.jit(lambda ids: model(ids, return_hidden=True))
    logp_fn = jax.jit(lambda h, tok: jnp.take_along_axis(
        jax.nn.log_softmax(model.logits(h) / max(temperature, 1e-6), axis=-1), tok[..., None], axis=-1)[..., 0])
    for i, p in enumerate(prompts):
        n = int(out.lengths[i])
        comp = out.completion_ids[i, :n]
        ids = jnp.asarray(np.concatenate([p, comp])[None], jnp.int32)
        h = hidden_fn(ids)[:, len(p) - 1 : len(p) - 1 + n]  # the position before each completion token
        ref = np.concatenate([np.asarray(logp_fn(h[:, j : j + chunk], jnp.asarray(comp[None, j : j + chunk])))[0]
                              for j in range(0, n, chunk)])
        diffs.append(np.abs(ref - out.logprobs[i, :n]))
    d = np.concatenate(diffs)
    return {"logp_diff_mean": float(d.mean()), "logp_diff_max": float(d.max()), "logp_rows": len(prompts)}


def _hf_run(batch: int, prompt: int, new: int, repeats: int, layers: int | None = None) -> dict:
    import torch
    from transformers import Qwen2ForCausalLM

    from openrs_jax.model import deepseek_r1_distill_qwen_1p5b

    cfg = deepseek_r1_distill_qwen_1p5b(**({} if layers is None else {"num_layers": layers}))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(common.hf_qwen2_config(cfg, attn_implementation="sdpa")).to(torch.bfloat16).eval()  # pyright: ignore[reportArgumentType]  (transformers types .to() as nn.Module's __call__)
    ids = torch.tensor(common.np_random_tokens(batch, prompt, 150000), device="cuda")
    mask = torch.ones_like(ids)

    def gen():
        with torch.no_grad():
            return model.generate(  # pyright: ignore[reportAttributeAccessIssue]  (GenerationMixin, untyped)
                input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                do_sample=True, temperature=0.7, top_p=1.0, top_k=0, pad_token_id=0)

    out = gen()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = gen()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    ntok = int((out.shape[1] - prompt) * batch)
    best = min(times)
    return {"engine": "hf_generate", "batch": batch, "prompt": prompt, "new": new, "tokens": ntok,
            "time_s": best, "tokens_per_s": ntok / best,
            "peak_GiB": torch.cuda.max_memory_allocated() / 2**30}


def _in_subprocess(kind: str, batch: int, prompt: int, new: int, repeats: int, layers: int | None,
                   cache_mode: str, temperature: float, decode_attention: str, decode_kernel: str | None = None,
                   extra_args: tuple[str, ...] = ()) -> dict:
    """Each engine in its own process (`bench.runner`): JAX and torch do not share the GPU
    allocator. A failed run is a row with the engine, batch, new tokens and the error."""
    cmd = [sys.executable, "-m", "openrs_jax.bench.decode", "--_worker", kind, "--batches", str(batch),
           "--prompt", str(prompt), "--new", str(new), "--repeats", str(repeats)]
    if layers is not None:
        cmd += ["--layers", str(layers)]
    cmd += ["--cache-mode", cache_mode, "--temperature", str(temperature), "--decode-attention", decode_attention]
    if decode_kernel:
        cmd += ["--decode-kernel", decode_kernel]
    cmd += list(extra_args)
    res = runner.run_json(cmd)
    if "error" in res:
        return {"engine": kind, "batch": batch, "new": new, **res}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="96,72")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", default="1024,3584")
    ap.add_argument("--only", choices=["jax", "hf"], default=None)
    ap.add_argument("--hf-new", default="1024", help="new-token lengths also run with HF generate")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers (CPU smoke runs)")
    ap.add_argument("--cache-mode", default="auto", choices=["auto", "full", "grow", "slice"], help="JaxEngine cache_mode")
    ap.add_argument("--kv-dtype", default=None, help="JaxEngine kv_cache_dtype, e.g. float8_e4m3fn")
    ap.add_argument("--compiler-options", default=None, help="JaxEngine compiler_options as JSON")
    ap.add_argument("--logp-rows", type=int, default=0,
                    help="rows whose sampled log-probs are checked against a teacher-forced forward")
    ap.add_argument("--decode-kernel", default=None,
                    help="fused decode kernel tuning: JSON (or a .json file) of decode_attention.DEFAULTS entries")
    ap.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    ap.add_argument("--decode-attention", default="auto",
                    help="JaxEngine decode_attention: auto, xla, pallas, or a comma list (one jax row each)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batches = [int(x) for x in args.batches.split(",")]
    attns = [a.strip() for a in args.decode_attention.split(",") if a.strip()]
    news = [int(x) for x in args.new.split(",")]
    if args.__dict__["_worker"]:
        fn = _jax_run if args._worker == "jax" else _hf_run
        extra = ({"cache_mode": args.cache_mode, "temperature": args.temperature, "decode_attention": attns[0],
                  "decode_kernel": args.decode_kernel, "kv_dtype": args.kv_dtype,
                  "compiler_options": args.compiler_options, "logp_rows": args.logp_rows} if fn is _jax_run else {})
        res = fn(batches[0], args.prompt, news[0], args.repeats, args.layers, **extra)
        with open(args._result, "w") as f:
            json.dump(res, f)
        return

    from openrs_jax.model import deepseek_r1_distill_qwen_1p5b

    cfg = deepseek_r1_distill_qwen_1p5b(**({} if args.layers is None else {"num_layers": args.layers}))
    env = common.environment()
    rows = []
    # The workers run first, each in its own process: this process must not touch the GPU
    # before them, or its allocator would hold most of the memory they need.
    for new in news:
        for b in batches:
            if args.only in (None, "jax"):
                for attn in attns:
                    extra_args = sum(([flag, str(val)] for flag, val in (
                        ("--kv-dtype", args.kv_dtype), ("--compiler-options", args.compiler_options),
                        ("--logp-rows", args.logp_rows)) if val), [])
                    rows.append(_in_subprocess("jax", b, args.prompt, new, args.repeats, args.layers, args.cache_mode,
                                               args.temperature, attn, args.decode_kernel, tuple(extra_args)))
                    print(rows[-1], flush=True)
            if args.only in (None, "hf") and str(new) in args.hf_new.split(","):
                rows.append(_in_subprocess("hf", b, args.prompt, new, args.repeats, args.layers, args.cache_mode,
                                           args.temperature, "auto"))
                print(rows[-1], flush=True)
            common.write_json(args.out, {"env": env, "rows": rows, "partial": True})
    bw = common.hbm_bandwidth()
    for r in rows:
        avg_ctx = args.prompt + r["new"] / 2
        step_bytes = flops.decode_weight_bytes(cfg) + r["batch"] * avg_ctx * flops.kv_bytes_per_token(cfg)
        r["roofline_tok_s"] = r["batch"] / (step_bytes / bw)
        if "tokens_per_s" in r:
            r["frac_roofline"] = r["tokens_per_s"] / r["roofline_tok_s"]
    print(f"device {env['device']}  HBM copy {bw / 1e12:.2f} TB/s  date {env['date']}")
    print(common.fmt_table(rows, ["engine", "batch", "prompt", "new", "tokens_per_s", "roofline_tok_s",
                                  "frac_roofline", "time_s", "first_call_s", "peak_GiB", "error"]))
    common.write_json(args.out, {"env": env, "hbm_bytes_per_s": bw, "rows": rows})


if __name__ == "__main__":
    main()
