"""GRPO training from a recipe.

    python -m openrs_jax.train --config configs/openrs3.yaml [--set optim.max_steps=100 ...]
    python -m openrs_jax.train                      # the CPU quickstart (configs/quickstart.yaml)
    python -m openrs_jax.train --config RUN_DIR/config.yaml --resume
    srun python -m openrs_jax.train --config openrs3     # several hosts (docs/MULTIHOST.md)
    python -m openrs_jax.train --config open-rs/recipes/grpo.yaml --set num_processes=3   # a TRL/open-r1 recipe

Writes to checkpoint.output_dir (default checkpoints/<run_name>): config.yaml, metrics.jsonl,
completions.jsonl, TensorBoard events, Orbax checkpoints, plots. SIGTERM / Ctrl-C finish the
current step, save a checkpoint and exit; --resume continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from openrs_jax.config import describe_fields

    ap = argparse.ArgumentParser(
        prog="python -m openrs_jax.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config fields (--set KEY=VALUE; YAML values, null for None):\n" + describe_fields(),
    )
    ap.add_argument("--config", default=None,
                    help="a YAML recipe (path, or a name in configs/: openrs1, openrs2, openrs3, quickstart), ours or "
                         "a flat TRL/open-r1 GRPO recipe (converted; its keys given to --set as KEY=VALUE, plus "
                         "num_processes and trl_defaults); default: quickstart")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set optim.learning_rate=2e-6 (repeatable)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the newest checkpoint in the run directory")
    ap.add_argument("--output-dir", default=None, help="shorthand for --set checkpoint.output_dir=DIR")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    from openrs_jax.cli import add_distributed_arguments

    add_distributed_arguments(ap)
    return ap


def _enable_compilation_cache() -> None:
    """JAX's persistent compilation cache: a resumed or repeated run reuses the compiled
    update, reference and decode programs instead of compiling them again (minutes for the
    1.5B model). OPENRS_COMPILATION_CACHE=off disables it; any other value is the directory."""
    where = os.environ.get("OPENRS_COMPILATION_CACHE", os.path.expanduser("~/.cache/openrs_jax/xla"))
    if where == "off":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    # Cache only programs worth it: the tiny CPU quickstart compiles in well under a second.
    # JAX's own variable, when set, wins (the test suite caches everything: many processes
    # compile the same small programs).
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def main(argv=None) -> int:
    from openrs_jax.cli import run_cli

    return run_cli("openrs_jax.train", lambda: _main(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    # JAX takes 75 % of a GPU by default; the 1.5B update plans ~55 GB at T = 4096 on an 80 GB
    # card. Set before JAX initialises its backend; an explicit user setting wins.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    _enable_compilation_cache()
    from openrs_jax.cli import UserError, start_distributed
    from openrs_jax.config import dump_yaml, load_recipe

    if not args.print_config:
        # Several processes (SLURM, MPI, Kubernetes, or the flags): join them before JAX starts,
        # so that an error in any process from here on stops them all.
        start_distributed(args, log=lambda msg: print(msg, flush=True))
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"checkpoint.output_dir={args.output_dir}")
    try:
        cfg, conversion = load_recipe(args.config, overrides)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    if conversion is not None:
        # A TRL / open-r1 recipe: say how it was read, and show the config that will run (the
        # run directory keeps it as config.yaml; openrs_jax.convert_recipe writes it to a file).
        for note in conversion.notes:
            print(f"[openrs] {note}", flush=True)
        print(f"[openrs] resolved config (saved as {cfg.checkpoint.output_dir}/config.yaml):\n{dump_yaml(cfg)}",
              end="", flush=True)
    from openrs_jax.trainer.schedule import thread_safe_xla_flags
    from openrs_jax.trainer.setup import samples_in_a_thread
    from openrs_jax.trainer.trainer import Trainer

    if samples_in_a_thread(cfg):  # before JAX starts its backend (trainer.schedule says why)
        os.environ["XLA_FLAGS"] = thread_safe_xla_flags(os.environ.get("XLA_FLAGS", ""))

    # Errors (bad input, an unreachable server, a failed save, non-finite steps) are one line on
    # stderr and a non-zero exit (openrs_jax.cli); the traceback only with OPENRS_DEBUG=1.
    trainer = Trainer(cfg, resume=args.resume)
    from openrs_jax.compile_log import announce_compiles

    with announce_compiles(trainer.write_line):  # "[openrs] compiling jit(grpo_update) ..." and its time
        trainer.run()
    if trainer.stopped_by is not None:
        # Stopped early by a signal (checkpoint saved): not a success, so schedulers and
        # scripts see the run is unfinished. 128 + N is the shell's convention.
        return 128 + trainer.stopped_by
    return 0


if __name__ == "__main__":
    sys.exit(main())
