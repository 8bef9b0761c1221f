"""PNG plots of a run's curves: reward, accuracy, completion length, KL, clipped ratio over
steps (the paper's figures). Layer L0: matplotlib only."""

from __future__ import annotations

import pathlib

from openrs_jax.metrics import read_metrics

PANELS = (
    ("reward", "reward"),
    ("accuracy", None),  # rewards/accuracy/mean, else any accuracy-like reward
    ("completions/mean_length", "completion length (tokens)"),
    ("kl", "KL to reference"),
    ("completions/clipped_ratio", "clipped ratio"),
)


def _accuracy_key(rows):
    keys = {k for r in rows for k in r}
    for k in ("rewards/accuracy/mean", "rewards/cosine/mean", "rewards/exact_match/mean"):
        if k in keys:
            return k
    return None


def plot_run(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """Writes one PNG per curve and a combined overview; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = pathlib.Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"no metrics in {run_dir / 'metrics.jsonl'}")
    out_dir = pathlib.Path(out_dir) if out_dir else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = []
    for key, title in PANELS:
        if key == "accuracy":
            key = _accuracy_key(rows)
            title = key
            if key is None:
                continue
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            panels.append((key, title, pts))
    paths = []
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, title, pts) in zip(axes[0], panels):
        xs, ys = zip(*pts)
        ax.plot(xs, ys)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        one, a1 = plt.subplots(figsize=(5, 3.5))
        a1.plot(xs, ys)
        a1.set_title(title)
        a1.set_xlabel("step")
        a1.grid(alpha=0.3)
        p = out_dir / (key.replace("/", "_") + ".png")
        one.tight_layout()
        one.savefig(p, dpi=100)
        plt.close(one)
        paths.append(p)
    fig.tight_layout()
    overview = out_dir / "overview.png"
    fig.savefig(overview, dpi=100)
    plt.close(fig)
    return [overview] + paths
