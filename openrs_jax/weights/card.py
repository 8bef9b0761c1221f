"""The model card (README.md) written into an exported HF directory (layer L3, plain text).

Front matter that the hub reads (base model, library, tags), then what produced the weights:
the run, the step, the step's metrics and the resolved recipe, so a snapshot evaluated or
served elsewhere says where it came from.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

# The metrics a card shows, in order (others of the `rewards/` and `val/` families too).
CARD_METRICS = ("reward", "reward_std", "kl", "completions/mean_length", "completions/clipped_ratio", "entropy",
                "learning_rate", "num_tokens", "epoch")


def _shown(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    keys = [k for k in CARD_METRICS if k in metrics]
    keys += sorted(k for k in metrics if k.startswith("rewards/") and k.endswith("/mean"))
    keys += sorted(k for k in metrics if k.startswith("val/"))
    out = []
    for k in dict.fromkeys(keys):
        v = metrics[k]
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out.append((k, v))
    return out


def model_card(*, run_name: str, step: int, config_yaml: str, base_model: str | None = None,
               metrics: Mapping[str, Any] | None = None) -> str:
    """README.md text for the weights of `step` of run `run_name` (config_yaml: the resolved
    config the run trained with; metrics: that step's, if logged)."""
    front = ["---", "library_name: transformers", "tags:", "- openrs-jax", "- grpo", "- reasoning"]
    if base_model:
        front.insert(1, f"base_model: {base_model}")
    lines = front + ["---", "", f"# {run_name}, step {step}", "",
                     f"GRPO-trained with [openrs-jax](https://arxiv.org/abs/2503.16219) (Open-RS recipe in JAX): "
                     f"the weights after optimizer step {step} of run `{run_name}`"
                     + (f", starting from `{base_model}`." if base_model else ".")]
    shown = _shown(metrics or {})
    if shown:
        lines += ["", f"## Metrics at step {step}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in shown]
    lines += ["", "## Recipe", "", "The resolved training config (`openrs-train --config` reads it):", "",
              "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)
