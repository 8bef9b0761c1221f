"""Golden values for `openrs_jax.grpo`, computed with TRL's formulas in PyTorch (float64).

Run once (needs torch, not TRL): `python tests/golden/make_grpo_golden.py`; it rewrites
`tests/golden/grpo_golden.json`, which is committed. Tests never regenerate it.

What is reproduced, and from where (TRL `trl/trainer/grpo_trainer.py` and `trainer/utils.py`,
v1.16):
- `selective_log_softmax` (float path: gather − logsumexp) after `logits / temperature`, and
  `entropy_from_logits` (−Σ exp(logp)·logp, 128-row chunks);
- the reward sum and advantages of `_generate_and_score_completions` (`nansum` over weighted
  reward functions, NaN for a row where every function answered None; group `nanmean`;
  `nanstd` per group or over the batch; + 1e-4; `nan_to_num`), also on inputs with such
  unscorable rows;
- the vLLM importance-sampling ratio of `_generate_and_score_completions`;
- `_compute_loss` (token/sequence importance ratios, clipped surrogate, IS weight, β·k3, the
  grpo / bnpo / dr_grpo / dapo aggregations and the clip / kl / entropy metrics);
- "openrs": TRL 0.16's loss `(per_token_loss * mask).sum() / mask.sum()` run on each group as
  its own micro-batch with gradient accumulation over the P groups (loss / P each, summed), as
  in the Open-RS run (per-device batch = G).

All inputs are rounded to float32 first, so the JAX side sees exactly the same numbers.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import torch

OUT = pathlib.Path(__file__).with_name("grpo_golden.json")

P, G, T, V = 3, 4, 7, 11
B = P * G
LENGTHS = [7, 3, 5, 7, 1, 2, 7, 4, 6, 7, 2, 0]  # 7 = truncated (no EOS); 0 exercises the clamps
DR_GRPO_MAX_LEN = 8  # deliberately != T so the test sees which one is used
BETA, EPS = 0.04, 0.2


# ---------------------------------------------------------------- TRL, transcribed to float64


def selective_log_softmax(logits, index, temperature=1.0):
    if temperature != 1.0:
        logits = logits / temperature
    selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
    lse = torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])
    return selected - lse


def entropy_from_logits(logits, chunk_size=128):
    shape = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    out = []
    for chunk in flat.split(chunk_size, dim=0):
        logps = torch.nn.functional.log_softmax(chunk, dim=-1)
        out.append(-(torch.exp(logps) * logps).sum(-1))
    return torch.cat(out).reshape(shape)


def trl_nanstd(tensor, dim=None):
    """trl/trainer/utils.py `nanstd`: unbiased std of the non-NaN entries, NaN below two."""
    mean = torch.nanmean(tensor, dim=dim, keepdim=True)
    variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    std = torch.sqrt(variance * correction)
    return std.squeeze() if dim is None else std.squeeze(dim)


def trl_rewards(rewards_per_func, weights):
    """`_generate_and_score_completions` (TRL >= 1.6): nansum, NaN for unscorable rows."""
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    return rewards


def trl_advantages(rewards, num_generations, scale_rewards):
    """TRL >= 1.6, multi_objective_aggregation="sum_then_normalize" (the default)."""
    mean_grouped = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped = mean_grouped.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std = trl_nanstd(rewards.view(-1, num_generations), dim=1)
        std = std.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std = trl_nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    is_std_zero = torch.isclose(std, torch.zeros_like(std))
    advantages = torch.nan_to_num(advantages, nan=0.0)
    stats = {
        "reward": torch.nanmean(rewards).item(),  # TRL >= 1.6: unscorable rows left out
        # Current TRL (grpo_trainer.py, `nanstd(rewards)`): the std over the whole batch.
        "reward_std": trl_nanstd(rewards).item(),
        # TRL < 0.27's reward_std (group scaling): the mean over rows of the group std.
        "reward_group_std": torch.nanmean(trl_nanstd(rewards.view(-1, num_generations), dim=1)).item(),
        "frac_reward_zero_std": is_std_zero.double().mean().item(),
    }
    return advantages, stats


def trl_is_ratio(old, sampling, mask, mode, clip_max, clip_min):
    diff = torch.nan_to_num((old - sampling) * mask, nan=0.0)
    sequence_level = mode in ["sequence_mask", "sequence_truncate"]
    if sequence_level:
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode in ["sequence_truncate", "token_truncate"]:
        ratio = torch.clamp(ratio, min=clip_min, max=clip_max)
    else:
        lo = clip_min if clip_min is not None else -math.inf
        hi = clip_max if clip_max is not None else math.inf
        ratio = ratio.masked_fill((ratio < lo) | (ratio > hi), value=0.0)
    delta = torch.abs(old - sampling)[mask.bool()]
    delta = delta[~torch.isnan(delta)]  # ours skips NaN sampler log-probs (loss.py, departure 7)
    flat = ratio.flatten() if sequence_level else ratio[mask.bool()]
    metrics = {
        "sampling/sampling_logp_difference/mean": delta.mean().item(),
        "sampling/sampling_logp_difference/max": delta.max().item(),
        "sampling/importance_sampling_ratio/min": flat.min().item(),
        "sampling/importance_sampling_ratio/mean": flat.mean().item(),
        "sampling/importance_sampling_ratio/max": flat.max().item(),
    }
    return ratio, metrics


def trl_compute_loss(per_token_logps, entropies, inputs, cfg, grad_accum=1):
    """`GRPOTrainer._compute_loss` from the per-token log-probs on (mode "train", 1 process)."""
    mask = inputs["mask"]
    advantages = inputs["advantages"].unsqueeze(1)
    old = inputs.get("old_per_token_logps")
    old = per_token_logps.detach() if old is None else old
    log_ratio = per_token_logps - old
    if cfg["importance_sampling_level"] == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    beta = cfg["beta"]
    if beta != 0.0:
        ref = inputs["ref_per_token_logps"]
        per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - cfg["epsilon_low"], 1 + cfg["epsilon_high"])
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if "importance_sampling_ratio" in inputs:
        per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    loss_type = cfg["loss_type"]
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / grad_accum
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / grad_accum
    elif loss_type == "dr_grpo":
        denom = per_token_loss.size(0) * cfg["max_completion_length"]
        loss = (per_token_loss * mask).sum() / denom / grad_accum
    elif loss_type == "dapo":
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / 1  # num_processes = 1
        loss = (per_token_loss * mask).sum() / normalizer
    else:
        raise ValueError(loss_type)

    def global_masked_mean(x):
        if x.shape[1] == 1:
            return (x.sum() / x.shape[0]).item()
        return ((x * mask).sum() / mask.sum().clamp(min=1.0)).item()

    metrics = {}
    if beta != 0.0:
        metrics["kl"] = global_masked_mean(per_token_kl)
    metrics["entropy"] = global_masked_mean(entropies)
    is_low = (coef_1 < 1 - cfg["epsilon_low"]) & (advantages < 0)
    is_high = (coef_1 > 1 + cfg["epsilon_high"]) & (advantages > 0)
    metrics["clip_ratio/low_mean"] = global_masked_mean(is_low.double())
    metrics["clip_ratio/high_mean"] = global_masked_mean(is_high.double())
    metrics["clip_ratio/region_mean"] = global_masked_mean((is_low | is_high).double())

    def masked_seq_mean(x):  # per sequence; NaN for a sequence without tokens
        if x.shape[1] == 1:
            return x.squeeze(1)
        return (x * mask).sum(-1) / mask.sum(-1)

    low_seq, high_seq = masked_seq_mean(is_low.double()), masked_seq_mean(is_high.double())
    metrics["clip_ratio/low_min"] = low_seq[~torch.isnan(low_seq)].min().item()  # TRL's nanmin
    metrics["clip_ratio/high_max"] = high_seq[~torch.isnan(high_seq)].max().item()  # TRL's nanmax
    return loss, metrics


def openrs_loss(per_token_logps, entropies, inputs, cfg):
    """TRL 0.16 as Open-RS ran it: one group per micro-batch, accumulated over the P groups."""
    total = 0.0
    for g in range(P):
        rows = slice(g * G, (g + 1) * G)
        sub = {k: (v[rows] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in inputs.items()}
        bnpo = {**cfg, "loss_type": "bnpo"}
        loss, _ = trl_compute_loss(per_token_logps[rows], entropies[rows], sub, bnpo, P)
        total = total + loss
    _, metrics = trl_compute_loss(per_token_logps, entropies, inputs, {**cfg, "loss_type": "bnpo"})
    return total, metrics


# ---------------------------------------------------------------- data and cases


def f32(x):
    """Round to float32 and back, so both sides start from identical numbers."""
    return np.asarray(x, np.float32).astype(np.float64)


def make_inputs():
    rng = np.random.default_rng(20250319)
    logits = f32(2.0 * rng.standard_normal((B, T, V)))
    targets = rng.integers(0, V, (B, T))
    mask = np.zeros((B, T))
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1.0
    rewards_per_func = f32(
        np.stack([rng.integers(0, 2, B).astype(np.float64), rng.uniform(-0.5, 1.0, B)], axis=1)
    )
    rewards_per_func[4:8] = [1.0, 0.25]  # group 1: identical rewards -> zero std
    rewards_per_func[1, 1] = np.nan  # a reward function that answered None
    weights = np.array([1.0, 2.0])
    base_logps = selective_log_softmax(torch.tensor(logits), torch.tensor(targets)).numpy()
    old = f32(base_logps + 0.25 * rng.standard_normal((B, T)))
    ref = f32(base_logps + 0.3 * rng.standard_normal((B, T)))
    sampling = f32(old + 0.2 * rng.standard_normal((B, T)))
    sampling[0, 2] = np.nan  # a missing sampler log-prob inside the mask
    sampling[1, 5] = np.nan  # and one in the padding
    # Unscorable rows (every reward None): one in group 0, three of four in group 1 (so its std
    # is undefined), all of group 2. Drawn after everything else: the other inputs stay as they were.
    unscorable = f32(rng.uniform(-0.5, 1.0, (B, 2)))
    unscorable[1] = np.nan
    unscorable[3, 0] = np.nan  # partly None: still scorable
    unscorable[4:7] = np.nan
    unscorable[8:12] = np.nan
    return dict(
        rewards_per_func_unscorable=unscorable,
        logits=logits,
        targets=targets,
        mask=mask,
        rewards_per_func=rewards_per_func,
        reward_weights=weights,
        old_logps=old,
        ref_logps=ref,
        sampling_logps=sampling,
    )


def cases():
    base = dict(
        beta=BETA,
        epsilon_low=EPS,
        epsilon_high=EPS,
        importance_sampling_level="token",
        temperature=1.0,
        use_old=True,
        sampling_is_mode=None,
        sampling_is_cap=None,
        sampling_is_cap_min=None,
        max_completion_length=DR_GRPO_MAX_LEN,
    )
    out = {}
    for lt in ["openrs", "grpo", "bnpo", "dr_grpo", "dapo"]:
        out[lt] = {**base, "loss_type": lt}
    out["openrs_eps_high"] = {**base, "loss_type": "openrs", "epsilon_high": 0.28}
    out["grpo_eps_high"] = {**base, "loss_type": "grpo", "epsilon_high": 0.28}
    out["openrs_no_old"] = {**base, "loss_type": "openrs", "use_old": False}
    out["openrs_beta0"] = {**base, "loss_type": "openrs", "beta": 0.0}
    out["openrs_temp07"] = {**base, "loss_type": "openrs", "temperature": 0.7}
    out["grpo_gspo"] = {**base, "loss_type": "grpo", "importance_sampling_level": "sequence"}
    for mode, cap, cap_min in [
        ("token_truncate", 1.1, None),
        ("token_truncate", 1.1, 0.9),
        ("token_mask", 1.1, None),
        ("sequence_truncate", 1.3, None),
        ("sequence_mask", 1.3, None),
        ("sequence_mask", 1.3, 0.9),
    ]:
        name = f"dapo_is_{mode}" + ("_min" if cap_min else "")
        out[name] = {
            **base,
            "loss_type": "dapo",
            "sampling_is_mode": mode,
            "sampling_is_cap": cap,
            "sampling_is_cap_min": cap_min,
        }
    out["openrs_is_token_truncate_no_old"] = {
        **out["dapo_is_token_truncate"],
        "loss_type": "openrs",
        "use_old": False,
    }
    return out


def run_case(data, cfg, advantages):
    logits = torch.tensor(data["logits"], requires_grad=True)
    targets = torch.tensor(data["targets"])
    mask = torch.tensor(data["mask"])
    logps = selective_log_softmax(logits, targets, cfg["temperature"])
    entropies = entropy_from_logits(logits / cfg["temperature"]).detach()
    old = torch.tensor(data["old_logps"]) if cfg["use_old"] else None
    inputs = {
        "mask": mask,
        "advantages": torch.tensor(advantages),
        "ref_per_token_logps": torch.tensor(data["ref_logps"]),
        "num_items_in_batch": mask.sum(),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    metrics = {}
    if cfg["sampling_is_mode"]:
        # TRL always has old log-probs when IS correction is on; with μ = 1 they equal the
        # current ones, which is what old = None means here.
        old_for_is = old if old is not None else logps.detach()
        ratio, is_metrics = trl_is_ratio(
            old_for_is,
            torch.tensor(data["sampling_logps"]),
            mask,
            cfg["sampling_is_mode"],
            cfg["sampling_is_cap"],
            cfg["sampling_is_cap_min"],
        )
        inputs["importance_sampling_ratio"] = ratio
        metrics.update(is_metrics)
    if cfg["loss_type"] == "openrs":
        loss, m = openrs_loss(logps, entropies, inputs, cfg)
    else:
        loss, m = trl_compute_loss(logps, entropies, inputs, cfg)
    metrics.update(m)
    (grad,) = torch.autograd.grad(loss, logits)
    return {
        "config": cfg,
        "loss": loss.item(),
        "metrics": metrics,
        "grad_logits": grad.numpy().tolist(),
    }


def main():
    torch.set_default_dtype(torch.float64)
    data = make_inputs()
    logits_t = torch.tensor(data["logits"])
    targets_t = torch.tensor(data["targets"])
    rewards = trl_rewards(torch.tensor(data["rewards_per_func"]), torch.tensor(data["reward_weights"]))
    rewards_unscorable = trl_rewards(
        torch.tensor(data["rewards_per_func_unscorable"]), torch.tensor(data["reward_weights"])
    )
    golden = {
        "shapes": {"P": P, "G": G, "T": T, "V": V},
        "inputs": {k: np.asarray(v).tolist() for k, v in data.items()},
        "rewards": rewards.numpy().tolist(),
        "advantages": {},
        "reward_stats": {},
        "rewards_unscorable": rewards_unscorable.numpy().tolist(),
        "advantages_unscorable": {},
        "reward_stats_unscorable": {},
        "logps": {},
        "entropy": {},
        "kl": (
            torch.exp(torch.tensor(data["ref_logps"]) - selective_log_softmax(logits_t, targets_t))
            - (torch.tensor(data["ref_logps"]) - selective_log_softmax(logits_t, targets_t))
            - 1
        )
        .numpy()
        .tolist(),
        "cases": {},
    }
    for scale in ["group", "batch", "none"]:
        adv, stats = trl_advantages(rewards, G, scale)
        golden["advantages"][scale] = adv.numpy().tolist()
        golden["reward_stats"][scale] = stats
        adv, stats = trl_advantages(rewards_unscorable, G, scale)
        golden["advantages_unscorable"][scale] = adv.numpy().tolist()
        golden["reward_stats_unscorable"][scale] = stats
    for temp in [1.0, 0.7]:
        key = str(temp)
        golden["logps"][key] = selective_log_softmax(logits_t, targets_t, temp).numpy().tolist()
        golden["entropy"][key] = entropy_from_logits(logits_t / temp).numpy().tolist()
    # The loss consumes the group advantages, rounded to float32 like every other input.
    advantages = f32(golden["advantages"]["group"])
    golden["inputs"]["advantages"] = advantages.tolist()
    for name, cfg in cases().items():
        golden["cases"][name] = run_case(data, cfg, advantages)
    OUT.write_text(json.dumps(golden, allow_nan=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB, {len(golden['cases'])} loss cases)")


if __name__ == "__main__":
    main()
