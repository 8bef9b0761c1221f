"""Export a training checkpoint as a Hugging Face directory (config, safetensors, tokenizer,
generation config, model card) that transformers and vLLM load as is. The generation config
is the source model's (when the run started from an HF model), the model card (README.md)
names the run, the step, its logged metrics and the recipe. `checkpoint.save_hf: true` writes
the same directory for every saved step during training (<run>/hf/step-N).

    python -m openrs_jax.export --checkpoint RUN_DIR [--step N] --out DIR [--dtype bfloat16] [--overwrite]

--out must be new, empty, or an earlier export (a directory holding the marker file export
writes, `.openrs_export.json`); an earlier export is replaced. A directory with anything else
in it is refused unless --overwrite, which writes the export's files into it (same names
replaced) and deletes nothing else. The run directory itself and its checkpoints are never
a valid --out.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from openrs_jax.cli import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m openrs_jax.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="the training run directory (holds config.yaml)")
    ap.add_argument("--step", type=int, default=None, help="which saved step (default: the latest)")
    ap.add_argument("--out", required=True, help="the HF directory to write (new, empty, or an earlier export)")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into a non-empty --out that is not an earlier export (deletes nothing of it)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32", "float16"],
                    help="tensor dtype of the export (default: the checkpoint's parameter dtype)")
    return ap


def check_out_dir(run_dir: str, out: str) -> None:
    """Refuses an --out that is the run directory, lies inside its checkpoints, or contains
    the run directory (a parent of it): those hold the run, not an export."""
    run, target = pathlib.Path(run_dir).resolve(), pathlib.Path(out).resolve()
    checkpoints = run / "checkpoints"
    if target == run or run.is_relative_to(target):
        raise UserError(f"--out {out} is the training run directory {run_dir} or contains it; "
                        f"choose a new directory (e.g. {pathlib.Path(run_dir) / 'hf'})")
    if target.is_relative_to(checkpoints):
        raise UserError(f"--out {out} lies inside the run's checkpoints ({checkpoints}); choose another directory")


def export(args: argparse.Namespace) -> int:
    check_out_dir(args.checkpoint, args.out)
    from openrs_jax.checkpoint import load_model_from_run
    from openrs_jax.weights import save_hf

    from openrs_jax.weights.hf import foreign_entries

    out = pathlib.Path(args.out)
    foreign = foreign_entries(out)
    if foreign and not args.overwrite:  # save_hf refuses too; saying so now skips the restore
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserError(f"--out {out} is not empty and was not written by export (it holds {shown}); pass "
                        "--overwrite to write into it anyway (files of the same names are replaced, nothing else "
                        "is deleted), or choose another directory")
    model, tokenizer, step = load_model_from_run(args.checkpoint, args.step)
    from openrs_jax.config import dump_yaml, load_config
    from openrs_jax.metrics import read_metrics
    from openrs_jax.weights.card import model_card
    from openrs_jax.weights.resolve import source_generation_config

    cfg = load_config(pathlib.Path(args.checkpoint) / "config.yaml")
    logged = [r for r in read_metrics(args.checkpoint) if r.get("step") == step]
    card = model_card(run_name=cfg.run_name, step=step, config_yaml=dump_yaml(cfg), base_model=cfg.model.name_or_path,
                      metrics=logged[-1] if logged else None)
    written = save_hf(model, out, tokenizer=tokenizer, dtype=args.dtype, overwrite=args.overwrite,
                      generation_config=source_generation_config(cfg.model.name_or_path), model_card=card)
    print(f"exported step {step} of {args.checkpoint} to {written}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("export", lambda: export(args))


if __name__ == "__main__":
    sys.exit(main())
