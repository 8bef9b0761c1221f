"""Evaluation throughput of the 1.5B shape with the `jax` engine.

Random-init DeepSeek-R1-Distill-Qwen-1.5B shape (bf16), the real tokenizer, the real eval
prompts (lighteval template, chat template) of the first --limit problems of each benchmark,
and a fixed --max-new-tokens. EOS is disabled, so every row generates exactly
max-new-tokens: a fixed workload (random weights would otherwise stop at random). The whole
evaluation path runs (runner.evaluate_benchmark: prompts, generate, decode, grading), without
records on disk.

    python -m openrs_jax.bench.eval_throughput --tokenizer ../shared/data/tokenizer-qwen2 \\
        --data-dir ../shared/data --limit 32 --max-new-tokens 2048 --out eval_throughput.json
    python -m openrs_jax.bench.eval_throughput --tokenizer ... --data-dir ... \\
        --layers 1 --max-new-tokens 4 --limit 2                  # CPU smoke run

A warm-up pass over one benchmark per batch shape compiles prefill and decode (reported
as `warmup_s`); prompts are padded to one --prompt-bucket (1024 tokens by default) so that no
later benchmark compiles again. Per benchmark it then reports: generated tokens/s, grading
time, wall time per problem, and the time the whole benchmark would take at this
max-new-tokens and chunk size (measured time per chunk x number of chunks: an estimate).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

from openrs_jax.bench import common


def run(args: argparse.Namespace) -> dict:
    from openrs_jax.data import eos_and_pad, load_tokenizer
    from openrs_jax.eval import benchmarks as bm
    from openrs_jax.eval import grading
    from openrs_jax.eval.runner import EvalSettings, evaluate_benchmark, make_formatter
    from openrs_jax.model import create_sharded, deepseek_r1_distill_qwen_1p5b
    from openrs_jax.rollout.jax_engine import JaxEngine, next_pow2

    overrides = {} if args.layers is None else {"num_layers": args.layers}
    cfg = deepseek_r1_distill_qwen_1p5b(**overrides)
    tokenizer = load_tokenizer(args.tokenizer)
    t0 = time.perf_counter()
    model = create_sharded(cfg, seed=0)
    init_s = time.perf_counter() - t0
    _, pad = eos_and_pad(tokenizer, cfg.eos_token_id)  # the rule evaluation uses
    # No EOS: every row decodes exactly max_new_tokens (see the module docstring).
    engine = JaxEngine(model, eos_token_ids=[], pad_token_id=pad, max_batch_size=args.max_batch_size,
                       prompt_bucket=args.prompt_bucket, pow2_rows=True)  # as the evaluate CLI
    chunk = args.chunk_size or args.limit
    settings = EvalSettings(samples=args.samples, max_new_tokens=args.max_new_tokens, seed=0, chunk_size=chunk)
    formatter = make_formatter(tokenizer, settings)
    pool = grading.grading_pool(args.grading_workers)
    names = bm.parse_benchmarks(args.benchmarks)
    problems_by_name = {name: bm.load_benchmark(name, args.data_dir, args.limit) for name in names}
    # Warm-up: one benchmark per distinct batch shape (rows of its first chunk, rounded up to
    # a power of two as the engine pads them), so that no timed run includes a compilation.
    # (A benchmark's last, smaller chunk can still compile a new shape; with --limit equal to
    # --chunk-size there is one chunk per benchmark.)
    t0 = time.perf_counter()
    shapes = {}
    for name in names:
        rows_first = min(chunk, len(problems_by_name[name])) * args.samples
        shapes.setdefault(next_pow2(rows_first), name)
    for name in shapes.values():
        evaluate_benchmark(problems_by_name[name], engine, tokenizer, settings, pool)
    warmup_s = time.perf_counter() - t0
    measured = dataclasses.replace(settings, seed=1)
    rows = []
    for name in names:
        problems = problems_by_name[name]
        prompt_tokens = [len(formatter.encode(p.query)[0]) for p in problems]
        t0 = time.perf_counter()
        result = evaluate_benchmark(problems, engine, tokenizer, measured, pool)
        wall_s = time.perf_counter() - t0
        n_chunks_full = math.ceil(bm.BENCHMARKS[name].size / chunk)
        n_chunks_run = math.ceil(len(problems) / chunk)
        rows.append({
            "benchmark": name,
            "problems": len(problems),
            "samples": args.samples,
            "rows": len(problems) * args.samples,
            "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
            "new_tokens": args.max_new_tokens,
            "generated_tokens": result.generated_tokens,
            "generate_s": result.generate_s,
            "tokens_per_s": result.generated_tokens / max(result.generate_s, 1e-9),
            "grade_s": result.grade_s,
            "wall_s": wall_s,
            "s_per_problem": wall_s / len(problems),
            "full_benchmark_problems": bm.BENCHMARKS[name].size,
            "est_full_benchmark_s": wall_s / n_chunks_run * n_chunks_full,
        })
        print(rows[-1], flush=True)
    return {"env": common.environment(), "model": "deepseek_r1_distill_qwen_1p5b (random init)",
            "num_layers": cfg.num_layers, "dtype": cfg.dtype, "init_s": init_s, "warmup_s": warmup_s,
            "chunk_size": chunk, "prompt_bucket": args.prompt_bucket,
            "peak_GiB": (common.peak_bytes() or 0) / 2**30, "rows": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="tokenizer directory (e.g. ../shared/data/tokenizer-qwen2)")
    ap.add_argument("--data-dir", required=True, help="directory with <benchmark>.jsonl (e.g. ../shared/data)")
    ap.add_argument("--benchmarks", default="all")
    ap.add_argument("--limit", type=int, default=16, help="problems per benchmark")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--chunk-size", type=int, default=None, help="problems per generate call (default: --limit)")
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--prompt-bucket", type=int, default=1024, help="prompt lengths round up to this")
    ap.add_argument("--grading-workers", type=int, default=2)
    ap.add_argument("--layers", type=int, default=None, help="fewer layers (CPU smoke runs)")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    args = ap.parse_args(argv)
    record = run(args)
    env = record["env"]
    print(f"device {env['device']}  date {env['date']}  layers {record['num_layers']}  "
          f"chunk {record['chunk_size']}  warm-up {record['warmup_s']:.1f} s  peak {record['peak_GiB']:.1f} GiB")
    print(common.fmt_table(record["rows"], ["benchmark", "problems", "samples", "prompt_tokens_mean", "new_tokens",
                                            "tokens_per_s", "generate_s", "grade_s", "s_per_problem",
                                            "est_full_benchmark_s"]))
    common.write_json(args.out, record)


if __name__ == "__main__":
    main()
