"""Held-out accuracy on builtin:arithmetic (data/arithmetic.py), greedy, as the run samples it.

    python scripts/eval_arithmetic.py --config configs/smollm2_arithmetic.yaml          # the base model
    python scripts/eval_arithmetic.py --run checkpoints/smollm2_arithmetic [--step N]   # a trained run

Prompts are rendered exactly as in training (the run's data section: chat template, system
prompt, truncation); completions are decoded greedily with the built-in JAX sampler up to
`rollout.max_completion_length` tokens (or --max-new-tokens) and scored with the
`last_number` reward. Prints one JSON line (and writes it to --output): accuracy, n, the EOS
rate (completions that ended before the token limit), the mean completion length, seconds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a recipe: evaluate its model.name_or_path (the base model)")
    src.add_argument("--run", help="a training run directory: evaluate its checkpoint")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    ap.add_argument("--set", action="append", default=[], help="config overrides a.b=c (with --config)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--output", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import jax.numpy as jnp
    import numpy as np

    from openrs_jax.config import load_config
    from openrs_jax.data import PromptFormatter, load_tokenizer
    from openrs_jax.data.arithmetic import arithmetic_dataset
    from openrs_jax.rewards import get_reward
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.jax_engine import JaxEngine
    from openrs_jax.trainer.setup import eos_and_pad

    t0 = time.perf_counter()
    if args.run:
        from openrs_jax.checkpoint import load_model_from_run

        cfg = load_config(pathlib.Path(args.run) / "config.yaml")
        model, tokenizer, step = load_model_from_run(args.run, args.step, dtype=cfg.model.dtype)
        source = f"{args.run} step {step}"
    else:
        from openrs_jax.weights.resolve import resolve_model_dir
        from openrs_jax.weights import load_hf

        cfg = load_config(args.config, overrides=args.set)
        model = load_hf(resolve_model_dir(cfg.model.name_or_path), dtype=jnp.dtype(cfg.model.dtype))
        tokenizer = load_tokenizer(cfg.model.tokenizer_path)
        source, step = cfg.model.name_or_path, 0
    fmt = PromptFormatter(tokenizer, system_prompt=cfg.data.system_prompt,
                          add_think_prefill=cfg.data.add_think_prefill, max_prompt_length=cfg.data.max_prompt_length)
    rows = list(arithmetic_dataset(args.split))
    prompts = [fmt.encode(r["problem"])[0] for r in rows]
    eos, pad = eos_and_pad(tokenizer, model.config)
    engine = JaxEngine(model, eos_token_ids=eos, pad_token_id=pad, kv_bucket=32, segment_len=32, prompt_bucket=16)
    max_new = args.max_new_tokens or cfg.rollout.max_completion_length
    batch = engine.generate(prompts, 1, SamplingParams(max_new_tokens=max_new, temperature=0.0))
    texts = [tokenizer.decode(batch.completion_ids[i, : batch.lengths[i]], skip_special_tokens=True)
             for i in range(len(rows))]
    scores = get_reward("last_number")(texts, answer=[r["answer"] for r in rows])
    result = {
        "model": str(source), "step": step, "split": args.split, "n": len(rows),
        "accuracy": float(np.mean(scores)),
        "eos_rate": float(np.mean([r == "stop" for r in batch.finish_reasons])),
        "mean_length": float(np.mean(batch.lengths)), "max_new_tokens": max_new,
        "seconds": round(time.perf_counter() - t0, 1),
        "examples": [{"problem": r["problem"], "completion": t, "score": s} for r, t, s in list(zip(rows, texts, scores))[:5]],
    }
    line = json.dumps(result)
    print(line)
    if args.output:
        pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.output).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
