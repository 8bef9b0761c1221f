"""Sample from a model or a training checkpoint.

    python -m openrs_jax.generate --model DIR --prompt "What is 2+3?" [--max-new-tokens 256]
        [--temperature 0.6] [--top-p 0.95] [--num-samples 1] [--engine jax|vllm] [--json]

DIR is an HF directory (config.json + safetensors + tokenizer) or a training run directory
(checkpoints/<run>, `--step N` picks a saved step; default the latest). The prompt is rendered
with the model's chat template (`--system` adds a system prompt, `--think` appends the
`<think>\\n` prefill of the R1-distill recipes). `--raw` skips the template and tokenizes the
text the way `tokenizer(text)` and vLLM's completions endpoint do: with the tokenizer's own
special tokens (a BOS for R1-distill/Llama-style tokenizers, none for Qwen's).
With `--json` each sample is printed as one JSON object with its token ids and per-token
log-probs. Progress (rows finished, with an ETA) and compilation lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from openrs_jax.cli import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m openrs_jax.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF model directory or training run directory")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step of a run directory (default: latest)")
    ap.add_argument("--prompt", required=True, help="the user message (or the raw text with --raw)")
    ap.add_argument("--system", default=None, help="a system prompt")
    ap.add_argument("--raw", action="store_true",
                    help="no chat template: the text tokenized as tokenizer(text) does (special tokens added)")
    ap.add_argument("--think", action="store_true", help="append the <think>\\n prefill")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                    help="compute dtype (default: bfloat16 on GPU, float32 on CPU)")
    ap.add_argument("--engine", default="jax", choices=["jax", "vllm"])
    ap.add_argument("--vllm-url", default=None, help="a running vLLM server (default: start one from --model)")
    ap.add_argument("--json", action="store_true", help="print token ids and log-probs as JSON lines")
    return ap


def _load(args):
    """(model or None, tokenizer, hf_dir or None)."""
    import jax
    import jax.numpy as jnp

    from openrs_jax.data import load_tokenizer

    path = pathlib.Path(args.model)
    dtype = args.dtype or ("bfloat16" if jax.default_backend() == "gpu" else "float32")
    if (path / "config.yaml").is_file():
        from openrs_jax.checkpoint import load_model_from_run

        model, tokenizer, step = load_model_from_run(path, args.step, dtype=dtype)
        print(f"[generate] {path} step {step}", file=sys.stderr)
        return model, tokenizer, None
    from openrs_jax.weights import hf_dir, load_hf

    path = hf_dir(path)  # a .gguf file: its dequantised, cached HF directory
    tokenizer = load_tokenizer(str(path))
    if args.engine == "vllm":
        return None, tokenizer, path
    return load_hf(path, dtype=jnp.dtype(dtype)), tokenizer, path


def eos_and_pad(model, tokenizer, hf_dir: pathlib.Path | None) -> tuple[list[int], int]:
    """EOS ids and pad id by the rule training uses (`openrs_jax.data.eos_and_pad`): the
    tokenizer's and the model config's (the loaded model's, else the HF directory's config.json)."""
    from openrs_jax.data import eos_and_pad as rule

    if model is not None:
        model_eos = model.config.eos_token_id
    else:
        assert hf_dir is not None  # load_model returns the model or the HF directory
        model_eos = json.loads((hf_dir / "config.json").read_text()).get("eos_token_id")
    return rule(tokenizer, model_eos)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # User errors (a bad --model, an unreachable server) as one line; OPENRS_DEBUG=1 for tracebacks.
    return run_cli("openrs_jax.generate", lambda: generate(args))


def generate(args) -> int:
    from openrs_jax.rollout.base import SamplingParams

    try:
        model, tokenizer, hf_dir = _load(args)
    except (ValueError, OSError, RuntimeError) as e:
        raise UserError(f"--model {args.model}: {e}") from e
    if args.raw:
        # The tokenizer's own convention, as `tokenizer(text)` and vLLM's /v1/completions apply it.
        ids = tokenizer(args.prompt)["input_ids"]
    else:
        from openrs_jax.data import PromptFormatter

        fmt = PromptFormatter(tokenizer, system_prompt=args.system, add_think_prefill=args.think,
                              max_prompt_length=1 << 20)
        ids, _ = fmt.encode(args.prompt)
    try:
        eos, pad = eos_and_pad(model, tokenizer, hf_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    import tempfile

    from openrs_jax.rollout.build import EngineSpec, VLLMOptions, build_engine

    # One engine builder for training, evaluation and sampling (openrs_jax.rollout.build).
    spec = EngineSpec(kind=args.engine, vllm=VLLMOptions(url=args.vllm_url, launch=args.vllm_url is None,
                                                          push_weights=hf_dir is None))
    engine, close_engine = build_engine(spec, model, eos_token_ids=eos, pad_token_id=pad,
                                        work_dir=pathlib.Path(tempfile.mkdtemp(prefix="openrs-generate-")),
                                        tokenizer=tokenizer, hf_dir=hf_dir)
    closers = [close_engine]
    try:
        from openrs_jax.compile_log import announce_compiles
        from openrs_jax.progress import Progress, write

        bar = Progress(args.num_samples, "generate", unit="seq", stream=sys.stderr, interval_s=30.0)
        engine.progress = lambda done, total: bar.update_to(done)
        with announce_compiles(lambda line: write(line, sys.stderr), prefix="[generate] "):
            batch = engine.generate([ids], args.num_samples, sampling)
        bar.update_to(args.num_samples)
        bar.close()
        for i, row in enumerate(batch.completion_token_lists()):
            text = tokenizer.decode(row, skip_special_tokens=True)
            if args.json:
                print(json.dumps({
                    "sample": i, "text": text, "token_ids": row,
                    "logprobs": batch.logprobs[i, : len(row)].tolist(),
                    "finish_reason": batch.finish_reasons[i], "prompt_token_ids": list(ids),
                }))
            else:
                if args.num_samples > 1:
                    print(f"--- sample {i} ({batch.finish_reasons[i]}, {len(row)} tokens)")
                print(text)
    finally:
        for close in closers:
            close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
