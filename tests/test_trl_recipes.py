"""TRL / open-r1 GRPO recipes (flat keys, as published) read and converted to our config
(openrs_jax/config/trl.py, openrs_jax/convert_recipe.py). The recipes are verbatim copies in
tests/fixtures/trl_recipes (sources in SOURCES.md there)."""

import dataclasses
import pathlib
import subprocess
import sys

import pytest
import yaml

from openrs_jax.config import ConfigError, RunConfig, config_to_dict, convert, is_trl_recipe, load_config, load_recipe
from openrs_jax.rewards import get_reward

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "trl_recipes"
OPENRS = FIXTURES / "openrs_grpo.yaml"
R1_DEEPSEEK = FIXTURES / "openr1_deepseek_r1_distill_qwen_1p5b_config_demo.yaml"
R1_QWEN = FIXTURES / "openr1_qwen2p5_1p5b_instruct_config_demo.yaml"
# The Open-RS exp-3 launch: `accelerate launch --num_processes=3 ... --cosine_max_len 3584`.
EXP3_LAUNCH = ["num_processes=3", "cosine_max_len=3584"]
# What the recipe itself decides differently from configs/openrs3.yaml: its name and directory,
# the dashboard (wandb), and the split of the 72 completions (3 GPUs x 6 x 4 accumulation vs.
# 12 micro-batches of one group; the same gradient with loss_type openrs).
RECIPE_CHOICES = {"run_name", "checkpoint.output_dir", "log.report_to", "optim.micro_batch_size",
                  "optim.gradient_accumulation_steps"}


def flat(cfg: RunConfig) -> dict:
    out = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k != "reward_kwargs" and k != "overrides" and k != "where":
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(config_to_dict(cfg))
    return out


def test_detects_flat_recipes_and_leaves_ours_alone(tmp_path):
    for path in sorted(FIXTURES.glob("*.yaml")):
        assert is_trl_recipe(yaml.safe_load(path.read_text())), path.name
    for name in ("openrs1", "openrs2", "openrs3", "quickstart"):
        assert not is_trl_recipe(yaml.safe_load((pathlib.Path("openrs_jax/recipes") / f"{name}.yaml").read_text()))
    assert not is_trl_recipe({"seed": 1, "run_name": "x"})
    assert is_trl_recipe({"learning_rate": 1e-6})
    # A file of misspelt sections stays ours: the error names our closest keys.
    assert not is_trl_recipe({"optm": {"max_steps": 2}})
    (tmp_path / "typo.yaml").write_text("optm: {max_steps: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optm'; closest keys: 'optim'"):
        load_config(tmp_path / "typo.yaml")


def test_open_rs_recipe_is_openrs3_up_to_the_batch_split():
    cfg, conversion = load_recipe(OPENRS, EXP3_LAUNCH)
    ours = load_config("openrs3")
    a, b = flat(cfg), flat(ours)
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differ == RECIPE_CHOICES, {k: (a.get(k), b.get(k)) for k in differ}
    # The same batch: 12 prompts x 6 = 72 completions, split 3 GPUs x 6 per device x 4.
    assert cfg.completions_per_step == ours.completions_per_step == 72
    assert (cfg.micro_batch_size, cfg.gradient_accumulation_steps) == (18, 4)
    assert cfg.log.report_to == ("stdout", "jsonl", "wandb")
    assert (cfg.run_name, cfg.checkpoint.output_dir) == ("OpenRS-GRPO", "data/OpenRS-GRPO")
    notes = "\n".join(conversion.notes)
    assert "no effect here: gradient_checkpointing_kwargs" in notes and "push_to_hub: nothing is pushed" in notes
    assert conversion.profile == "open-rs"


def test_open_rs_recipe_as_published_alone():
    # Without the launch flags: one process (P = 6 x 4 / 6 = 4) and open-r1's cosine_max_len
    # default of 1000, both said in the notes.
    cfg, conversion = load_recipe(OPENRS)
    assert cfg.optim.num_prompts_per_step == 4
    assert cfg.rewards.reward_kwargs == {"cosine": {"max_len": 1000, "boxed": "none"}}  # as Open-RS ran it
    assert any("pass num_processes as given to `accelerate launch" in n for n in conversion.notes)


def test_open_r1_math_recipes_convert_with_their_trl_defaults():
    cfg, conversion = load_recipe(R1_DEEPSEEK, ["trl_defaults=open-r1", "num_processes=7"])
    assert cfg.data.chat_template.startswith("{% if not add_generation_prompt is defined %}")
    assert cfg.data.add_think_prefill is False  # the recipe's template leaves <think> out of the prompt
    assert (cfg.data.dataset_name, cfg.data.problem_column) == ("open-r1/OpenR1-Math-220k", "problem")
    assert cfg.rewards.reward_funcs == ("accuracy", "format", "tag_count")
    assert (cfg.grpo.num_generations, cfg.grpo.loss_type, cfg.grpo.beta) == (16, "bnpo", 0.04)  # TRL 0.18
    assert cfg.grpo.logprob_temperature == 0.7  # TRL >= 0.16 divides the logits by the temperature
    assert cfg.optim.num_train_epochs == 1.0  # max_steps: -1
    assert (cfg.optim.num_prompts_per_step, cfg.micro_batch_size) == (28, 112)  # 16 x 7 x 4 / 16
    assert cfg.checkpoint.save_strategy == "epoch" and cfg.checkpoint.save_total_limit == 1
    notes = "\n".join(conversion.notes)
    assert "reward format: open-r1's format_reward needs the whole" in notes
    assert "trains num_train_epochs = 1 epoch(s)" in notes

    cfg = load_config(R1_QWEN, ["trl_defaults=open-r1", "num_processes=7"])
    assert cfg.rollout.temperature == 1.0  # not in the recipe: TRL 0.18's default
    assert cfg.data.add_think_prefill is False  # not an R1 model
    assert (cfg.optim.learning_rate, cfg.optim.lr_scheduler_type) == (2e-5, "cosine")


def test_unsupported_keys_are_all_reported_in_one_error():
    with pytest.raises(ConfigError) as e:
        load_config(FIXTURES / "openr1_qwen2p5_1p5b_instruct_config_demo_code_ioi.yaml")
    message = str(e.value)
    assert "3 keys of this TRL/open-r1 recipe cannot be used" in message
    assert "reward_funcs: 'ioi_code' is not supported here" in message
    assert "reward_funcs: 'code_format' is not supported here" in message
    assert "not a multiple of num_generations 14 (num_processes is 1 unless given" in message
    with pytest.raises(ConfigError) as e:
        load_config(FIXTURES / "openr1_qwen2p5_coder_7b_instruct_config_codeforces.yaml", ["num_processes=8"])
    assert "'cf_code' is not supported" in str(e.value) and "save_steps: 0.05" in str(e.value)


def test_unknown_keys_are_reported_together_with_did_you_mean():
    raw = yaml.safe_load(OPENRS.read_text())
    raw.update(learning_rat=1e-6, vllm_enfoce_eager=True, use_peft=True)
    with pytest.raises(ConfigError) as e:
        convert(raw)
    message = str(e.value)
    assert "3 keys" in message
    assert "learning_rat: unknown key (did you mean 'learning_rate'?)" in message
    assert "vllm_enfoce_eager: unknown key (did you mean 'vllm_enforce_eager'?)" in message
    assert "use_peft: True is not supported here; LoRA is not implemented" in message


def test_overrides_of_a_trl_recipe():
    # Undotted keys set recipe keys before the conversion; dotted ones set our fields after it.
    cfg = load_config(OPENRS, EXP3_LAUNCH + ["beta=0.0", "optim.max_steps=7", "trl_defaults=trl"])
    assert (cfg.grpo.beta, cfg.optim.max_steps) == (0.0, 7)
    assert cfg.grpo.loss_type == "dapo" and cfg.grpo.logprob_temperature == 0.7  # TRL 1.x defaults
    with pytest.raises(ConfigError, match="trl_defaults 'trl-0.16'; one of open-rs, open-r1, trl"):
        load_config(OPENRS, ["trl_defaults=trl-0.16"])


def test_reward_names_of_open_r1_functions_are_aliases():
    raw = yaml.safe_load(OPENRS.read_text())
    raw["reward_funcs"] = ["format_reward", "cosine_scaled_reward"]
    native = convert(raw, {"num_processes": 3}).native
    assert native["rewards"]["reward_kwargs"] == {"cosine_scaled_reward": {"max_len": 1000, "boxed": "none"}}
    cfg = load_config(OPENRS, EXP3_LAUNCH + ["reward_funcs=[format_reward, cosine_scaled_reward]"])
    assert cfg.rewards.reward_funcs == ("format_reward", "cosine_scaled_reward")
    fn, ours = get_reward("format_reward"), get_reward("format")
    assert fn.__name__ == "format_reward"  # metrics: rewards/format_reward/mean, as TRL logs it
    texts = ["a\n</think>\nb", "no tags", "\n</think>\n\n</think>\n"]
    assert fn(texts) == ours(texts) == [1.0, 0.0, 0.0]


def test_epochs_and_epoch_saving_resolve_once_the_rows_are_known():
    cfg = load_config(R1_QWEN, ["trl_defaults=open-r1", "num_processes=7"])
    assert cfg.optim.num_prompts_per_step == 28
    resolved = cfg.for_dataset(1000)  # 1000 // 28 = 35 steps per epoch
    assert (resolved.optim.max_steps, resolved.checkpoint.save_steps) == (35, 35)
    two = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, num_train_epochs=2.5))
    assert two.for_dataset(1000).optim.max_steps == 88  # ceil(2.5 x 35)
    plain = load_config("quickstart")
    assert plain.for_dataset(10) is plain


def test_convert_recipe_cli_writes_our_yaml(tmp_path):
    out = tmp_path / "openrs3.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.convert_recipe", str(OPENRS), "--num_processes", "3",
         "--cosine_max_len=3584", "--set", "log.report_to=[stdout, jsonl, tensorboard]", "-o", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# Converted from the TRL/open-r1 recipe")
    assert "# - use_vllm: samples with the built-in JAX sampler" in text
    converted = load_config(out)
    assert converted == load_config(OPENRS, EXP3_LAUNCH + ["log.report_to=[stdout, jsonl, tensorboard]"])
    proc = subprocess.run([sys.executable, "-m", "openrs_jax.convert_recipe", "openrs3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "already in our format" in proc.stderr
