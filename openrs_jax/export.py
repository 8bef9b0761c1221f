"""Export a training checkpoint as a Hugging Face directory (config, safetensors, tokenizer,
generation config) that transformers and vLLM load as is.

    python -m openrs_jax.export --checkpoint RUN_DIR [--step N] --out DIR [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openrs_jax.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="the training run directory (holds config.yaml)")
    ap.add_argument("--step", type=int, default=None, help="which saved step (default: the latest)")
    ap.add_argument("--out", required=True, help="the HF directory to write (replaced if it exists)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32", "float16"],
                    help="tensor dtype of the export (default: the checkpoint's parameter dtype)")
    args = ap.parse_args(argv)
    from openrs_jax.checkpoint import CheckpointError, load_model_from_run
    from openrs_jax.weights import save_hf

    try:
        model, tokenizer, step = load_model_from_run(args.checkpoint, args.step)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = save_hf(model, args.out, tokenizer=tokenizer, dtype=args.dtype)
    print(f"exported step {step} of {args.checkpoint} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
