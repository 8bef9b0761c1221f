"""PNG plots of a run's curves (the paper's figures: reward, accuracy, completion length, KL,
clipped ratio over steps).

    python -m openrs_jax.plot RUN_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import sys

from openrs_jax.plotting import plot_run

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openrs_jax.plot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a training run directory (with metrics.jsonl)")
    ap.add_argument("--out", default=None, help="output directory (default RUN_DIR/plots)")
    args = ap.parse_args(argv)
    try:
        paths = plot_run(args.run_dir, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
