"""Run configuration: strict keys and types, --set overrides, recipes, cross-field checks."""

import json
import subprocess
import sys

import pytest
import yaml

from openrs_jax.config import (
    CONFIGS_DIR,
    ConfigError,
    MeshSection,
    RunConfig,
    config_to_dict,
    dump_yaml,
    load_config,
    parse_override,
)

RECIPES = ["quickstart", "openrs1", "openrs2", "openrs3", "openrs3_intended"]
ENGLISH = " Note that respond by English, NOT use other languages."


def write_yaml(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------------- unknown keys
def test_unknown_key_names_it_and_closest_match():
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", ["optim.learnig_rate=1e-3"])
    assert "'optim.learnig_rate'" in str(e.value)
    assert "'optim.learning_rate'" in str(e.value)


def test_unknown_trl_key_vllm_enforce_eager_is_an_error_with_a_pointer():
    for key in ["rollout.vllm_enforce_eager", "vllm_enforce_eager"]:
        with pytest.raises(ConfigError) as e:
            load_config("openrs3", [f"{key}=true"])
        message = str(e.value)
        assert f"'{key}'" in message
        assert "rollout.vllm_server_args" in message  # where the setting lives here
        assert "closest keys: 'grpo.vllm_importance_sampling_cap'" in message


def test_flat_trl_key_in_our_format_points_at_its_section(tmp_path):
    # A recipe with our sections is ours: a flat key in it is an error naming where it lives.
    path = write_yaml(tmp_path, {"optim": {"max_steps": 2}, "learning_rate": 1e-6})
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rate'; closest keys: 'optim.learning_rate'"):
        load_config(path)
    path = write_yaml(tmp_path, {"optim": {"max_steps": 2}, "cosine_max_len": 3584})
    with pytest.raises(ConfigError, match=r"'cosine_max_len' is rewards.reward_kwargs.cosine.max_len here"):
        load_config(path)


def test_unknown_model_override_field():
    with pytest.raises(ConfigError, match=r"model.overrides: unknown ModelConfig field 'num_layer' \(did you mean 'num_layers'"):
        load_config("quickstart", ["model.overrides.num_layer=3"])


def test_unknown_reward_and_reward_parameter():
    with pytest.raises(ConfigError, match=r"unknown reward 'cosin' \(did you mean 'cosine'"):
        load_config("openrs3", ["rewards.reward_funcs=[format, cosin]"])
    with pytest.raises(ConfigError, match=r"reward_kwargs.cosine: unknown parameter 'cosine_max_len' \(did you mean 'max_len'"):
        load_config("openrs3", ["rewards.reward_kwargs.cosine.cosine_max_len=3584"])


# ---------------------------------------------------------------------- types
@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.learning_rate=abc", "optim.learning_rate: expected float, got str 'abc'"),
        ("mesh.data=1.5", "mesh.data: expected int, got float 1.5"),
        ("optim.max_steps=true", "optim.max_steps: expected int, got bool True"),
        ("log.logging_steps=[1]", "log.logging_steps: expected int, got list [1]"),
        ("data.add_think_prefill=1", "data.add_think_prefill: expected bool, got int 1"),
        ("model.name_or_path=5", "model.name_or_path: expected str or null, got int 5"),
        ("rollout=3", "rollout: expected mapping (RolloutSection), got int 3"),
        ("grpo.loss_type=opnrs", "grpo.loss_type: expected one of 'openrs', 'grpo', 'bnpo', 'dr_grpo', 'dapo', got str 'opnrs' (did you mean 'openrs'?)"),
        ("log.report_to=[mlflow]", "log.report_to[0]: expected one of 'stdout', 'jsonl', 'tensorboard', 'wandb', got str 'mlflow'"),
        ("grpo.max_completion_length_schedule=[[0, 1, 2]]", "grpo.max_completion_length_schedule[0]: expected list [int, int], got list [0, 1, 2] (needs 2 entries)"),
    ],
)
def test_wrong_type_names_key_expected_and_given(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", [override])
    assert expected in str(e.value)


def test_float_fields_accept_ints_and_yaml_exponent_strings(tmp_path):
    # PyYAML reads `1e-6` (no dot) as the string "1e-6".
    path = write_yaml(tmp_path, "optim:\n  learning_rate: 1e-6\n  adam_epsilon: 1e-8\n  max_grad_norm: 2\n")
    assert yaml.safe_load(path.read_text())["optim"]["learning_rate"] == "1e-6"
    config = load_config(path)
    assert config.optim.learning_rate == 1e-6 and isinstance(config.optim.learning_rate, float)
    assert config.optim.adam_epsilon == 1e-8
    assert config.optim.max_grad_norm == 2.0 and isinstance(config.optim.max_grad_norm, float)
    assert load_config(path, ["optim.learning_rate=3e-4"]).optim.learning_rate == 3e-4


# ---------------------------------------------------------------------- --set
def test_set_overrides_nested_keys_in_order():
    config = load_config(
        "openrs3",
        [
            "optim.learning_rate=2e-6",
            "grpo.num_generations=8",
            "optim.micro_batch_size=8",
            "optim.gradient_accumulation_steps=12",
            "rewards.reward_kwargs.cosine.max_len=1000",
            "model.overrides.num_layers=4",
            "data.system_prompt=",  # empty value -> null
            "rollout.vllm_server_url=http://10.0.0.2:8000",
            "optim.learning_rate=5e-6",  # later wins
        ],
    )
    assert config.optim.learning_rate == 5e-6
    assert config.grpo.num_generations == 8 and config.completions_per_step == 96
    assert config.rewards.reward_kwargs == {"cosine": {"max_len": 1000, "boxed": "none"}}
    assert config.model.overrides == {"num_layers": 4}
    assert config.data.system_prompt is None
    assert config.rollout.vllm_server_url == "http://10.0.0.2:8000"


def test_set_sources_and_list_index():
    config = load_config(
        "openrs2",
        [
            "data.dataset_name=null",
            "data.sources=[{path: a.jsonl, ratio: 2}, {path: b.jsonl, where: {source: x}}]",
            "data.sources.1.ratio=3",
        ],
    )
    assert [(s.path, s.ratio, s.where) for s in config.data.sources] == [("a.jsonl", 2.0, {}), ("b.jsonl", 3.0, {"source": "x"})]
    with pytest.raises(ConfigError, match=r"data.sources.5: '5' is not an index of a list of 2"):
        load_config("openrs2", ["data.dataset_name=null", "data.sources=[{path: a}, {path: b}]", "data.sources.5.ratio=1"])


@pytest.mark.parametrize("bad", ["optim.learning_rate", "=3", "optim..x=1", "a.b=[1"])
def test_set_syntax_errors(bad):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(bad)


# ---------------------------------------------------------------------- recipes
def test_openrs3_has_the_paper_values():
    c = load_config("openrs3")
    assert (c.optim.num_prompts_per_step, c.grpo.num_generations, c.completions_per_step) == (12, 6, 72)
    assert c.micro_batch_size * c.gradient_accumulation_steps == 72
    assert c.optim.learning_rate == 1e-6
    assert (c.optim.lr_scheduler_type, c.optim.min_lr_rate) == ("cosine_with_min_lr", 0.1)
    assert c.optim.warmup_ratio == 0.1 and c.optim.num_warmup_steps == 50
    assert (c.optim.adam_beta1, c.optim.adam_beta2, c.optim.adam_epsilon, c.optim.weight_decay) == (0.9, 0.999, 1e-8, 0.0)
    assert c.optim.max_grad_norm == 1.0 and c.optim.max_steps == 500
    assert (c.grpo.beta, c.grpo.epsilon, c.grpo.loss_type, c.grpo.logprob_temperature) == (0.04, 0.2, "openrs", 1.0)
    assert c.grpo.num_iterations == 1 and c.grpo.scale_rewards == "group"
    assert c.rollout.max_completion_length == 3584 and c.rollout.temperature == 0.7
    assert (c.rollout.top_p, c.rollout.top_k) == (1.0, 0)
    assert c.rewards.reward_funcs == ("format", "cosine") and c.rewards.reward_weights == (1.0, 2.0)
    assert c.rewards.reward_kwargs["cosine"]["max_len"] == 3584  # Open-RS's cosine_max_len
    assert c.rewards.reward_kwargs["cosine"]["boxed"] == "none"  # its cosine's parse, as it ran
    assert c.checkpoint.save_steps == 50 and c.seed == 42
    assert c.data.max_prompt_length == 512 and c.data.add_think_prefill
    assert c.data.dataset_name == "knoveleng/open-rs"
    assert c.model.name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" and c.model.dtype == "bfloat16"
    assert c.rollout.engine == "jax"


def test_openrs_system_prompts_are_verbatim(shared_data):
    exp3 = json.loads((shared_data / "openrs_prompts.json").read_text())["train_system_prompt_exp3"]
    assert "\\boxed{{}}" in exp3 and exp3.endswith(ENGLISH)
    assert load_config("openrs3").data.system_prompt == exp3
    for name in ["openrs1", "openrs2"]:
        assert load_config(name).data.system_prompt == exp3[: -len(ENGLISH)]


def test_openrs1_and_openrs2_differ_from_openrs3_only_where_the_paper_does():
    d1, d2, d3 = (config_to_dict(load_config(n)) for n in ["openrs1", "openrs2", "openrs3"])

    def diff(a, b, prefix=""):
        out = set()
        for key in a:
            if isinstance(a[key], dict) and isinstance(b[key], dict) and key not in ("reward_kwargs",):
                out |= diff(a[key], b[key], f"{prefix}{key}.")
            elif a[key] != b[key]:
                out.add(f"{prefix}{key}")
        return out

    changed = {"run_name", "checkpoint.output_dir", "data.system_prompt", "rewards.reward_funcs", "rewards.reward_kwargs"}
    assert diff(d2, d3) == changed
    assert diff(d1, d2) == {"run_name", "checkpoint.output_dir", "data.dataset_name", "rollout.max_completion_length"}
    assert d1["rollout"]["max_completion_length"] == 4096 and d1["data"]["dataset_name"] == "knoveleng/open-s1"
    assert d2["rewards"]["reward_funcs"] == ["format", "accuracy"] and d2["rewards"]["reward_weights"] == [1.0, 2.0]


def test_openrs3_intended_differs_from_openrs3_only_in_the_cosine_parse():
    d3, di = (config_to_dict(load_config(n)) for n in ["openrs3", "openrs3_intended"])
    assert di["rewards"]["reward_kwargs"]["cosine"] == {"max_len": 3584, "boxed": "all"}
    assert d3["rewards"]["reward_kwargs"]["cosine"] == {"max_len": 3584, "boxed": "none"}
    for d in (d3, di):
        d.pop("run_name")
        d["checkpoint"].pop("output_dir")
        d["rewards"]["reward_kwargs"]["cosine"].pop("boxed")
    assert d3 == di


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_round_trip_through_dump_yaml(name, tmp_path):
    config = load_config(name)
    path = tmp_path / "resolved.yaml"
    text = dump_yaml(config, path)
    assert path.read_text() == text
    assert load_config(path) == config


def test_default_config_is_the_quickstart():
    assert load_config(None) == load_config(CONFIGS_DIR / "quickstart.yaml")
    assert load_config(None).data.dataset_name == "builtin:quickstart"


def test_run_name_defaults_to_file_stem_and_output_dir_to_it(tmp_path):
    config = load_config(write_yaml(tmp_path, {"seed": 1}, name="my_run.yaml"))
    assert config.run_name == "my_run" and config.checkpoint.output_dir == "checkpoints/my_run"
    assert load_config(write_yaml(tmp_path, {"checkpoint": {"output_dir": "/x"}})).checkpoint.output_dir == "/x"


def test_missing_recipe_lists_known_ones():
    with pytest.raises(ConfigError, match=r"'openrs9' not found.*openrs1, openrs2, openrs3, openrs3_intended, quickstart"):
        load_config("openrs9")


# ---------------------------------------------------------------------- cross-field checks
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rewards.reward_weights=[1.0]"], "reward_weights has 1 entries [1.0] but reward_funcs has 2"),
        (["optim.micro_batch_size=12", "optim.gradient_accumulation_steps=12"],
         "micro_batch_size 12 x gradient_accumulation_steps 12 = 144, but 12 prompts (optim.num_prompts_per_step) x 6"),
        (["optim.micro_batch_size=9", "optim.gradient_accumulation_steps=8"],
         "micro_batch_size 9 must be a multiple of grpo.num_generations 6"),
        (["optim.micro_batch_size=10", "optim.gradient_accumulation_steps=null"], "micro_batch_size 10 does not divide"),
        (["grpo.max_completion_length_schedule=[[0, 1024], [100, 4096]]"], "length 4096 at step 100 exceeds rollout.max_completion_length 3584"),
        (["grpo.max_completion_length_schedule=[[100, 1024], [50, 2048]]"], "strictly increasing"),
        (["data.sources=[{path: a.jsonl}]"], "both dataset_name and sources are set"),
        (["data.dataset_name=null"], "set dataset_name or sources"),
        (["grpo.vllm_importance_sampling_correction=true"], "needs rollout.engine: vllm"),
        (["grpo.num_generations=1"], "grpo.num_generations: must be >= 2"),
        (["grpo.epsilon_high=0.1"], "grpo.epsilon_high: must be >= epsilon (0.2)"),
        (["rewards.reward_funcs=[format, format]", "rewards.reward_weights=null"], "duplicate names ['format']"),
        (["rewards.reward_kwargs={accuracy: {}}"], "'accuracy' is not in reward_funcs ['format', 'cosine']"),
        (["mesh.data=-1", "mesh.fsdp=-1"], "at most one axis may be -1"),
        (["model.preset=tinyy"], "unknown preset 'tinyy' (did you mean 'tiny'?)"),
        (["rollout.top_p=0"], "rollout.top_p: must be in (0, 1]"),
        (["run_name=a/b"], "run_name: must be a non-empty name without '/'"),
    ],
)
def test_cross_field_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config("openrs3", overrides)
    assert message in str(e.value)


def test_batch_arithmetic_resolution():
    c = load_config("openrs3", ["optim.micro_batch_size=null", "optim.gradient_accumulation_steps=4"])
    assert (c.completions_per_step, c.micro_batch_size, c.gradient_accumulation_steps) == (72, 18, 4)
    c = load_config("openrs3", ["optim.micro_batch_size=null", "optim.gradient_accumulation_steps=null"])
    assert (c.micro_batch_size, c.gradient_accumulation_steps) == (72, 1)
    c = load_config("openrs3", ["optim.micro_batch_size=36", "optim.gradient_accumulation_steps=null"])
    assert c.gradient_accumulation_steps == 2
    # Loss aggregations without per-group means may split groups across micro-batches.
    c = load_config("openrs3", ["grpo.loss_type=dapo", "optim.micro_batch_size=8", "optim.gradient_accumulation_steps=9"])
    assert c.micro_batch_size == 8


def test_max_completion_length_schedule():
    c = load_config("openrs3", ["grpo.max_completion_length_schedule=[[0, 1024], [100, 2048], [300, 3584]]"])
    assert [c.max_completion_length_at(s) for s in (0, 99, 100, 299, 300, 499)] == [1024, 1024, 2048, 2048, 3584, 3584]
    c = load_config("openrs3", ["grpo.max_completion_length_schedule=[[50, 1024]]"])
    assert [c.max_completion_length_at(s) for s in (0, 49, 50)] == [3584, 3584, 1024]


def test_mesh_axis_sizes():
    assert MeshSection().axis_sizes(8) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert MeshSection(data=2, fsdp=-1, tensor=2).axis_sizes(8) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ConfigError, match="use 4 of 8 devices"):
        MeshSection(data=2, fsdp=2, tensor=1).axis_sizes(8)
    with pytest.raises(ConfigError, match="do not divide the 8 devices"):
        MeshSection(data=3, fsdp=-1).axis_sizes(8)


def test_model_section_builds_the_preset_config():
    c = load_config("quickstart", ["model.remat=full"])
    model = c.model.preset_config()
    assert (model.vocab_size, model.eos_token_id, model.bos_token_id) == (23, 0, 1)
    assert (model.dtype, model.param_dtype, model.attention_impl, model.remat) == ("float32", "float32", "xla", "full")
    assert c.model.tokenizer_path == "builtin:quickstart"
    assert load_config("openrs3").model.tokenizer_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def test_default_run_config_is_the_open_rs_recipe():
    c = RunConfig()
    assert (c.completions_per_step, c.optim.learning_rate, c.grpo.beta, c.rollout.temperature) == (72, 1e-6, 0.04, 0.7)
    assert c.checkpoint.output_dir == "checkpoints/openrs"


def test_config_modules_do_not_import_jax():
    code = "import sys, openrs_jax.config, openrs_jax.data; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.learning_rate=.nan", "optim.learning_rate"),
        ("optim.learning_rate=nan", "optim.learning_rate"),  # a string that float() reads as NaN
        ("optim.learning_rate=.inf", "optim.learning_rate"),
        ("rollout.temperature=.nan", "rollout.temperature"),
        ("grpo.beta=-.inf", "grpo.beta"),
        ("optim.max_grad_norm=.nan", "optim.max_grad_norm"),
        ("rewards.reward_weights=[1.0, .nan]", "rewards.reward_weights"),
        ("rewards.reward_kwargs.cosine.max_len=.inf", "rewards.reward_kwargs"),
    ],
)
def test_non_finite_values_are_rejected_naming_the_key(override, key):
    # `x < 0` is False for NaN: a range check alone lets NaN through (and NaN weights follow).
    with pytest.raises(ConfigError) as e:
        load_config("openrs3", [override])
    assert f"{key}: must be a finite number" in str(e.value)


def test_every_field_has_help_and_is_listed():
    from openrs_jax.config import describe_fields, field_rows

    rows = field_rows()
    keys = [r[0] for r in rows]
    assert "optim.learning_rate" in keys and "data.sources[].ratio" in keys and "seed" in keys
    assert all(help_text for _, _, _, help_text in rows), [k for k, _, _, h in rows if not h]
    text = describe_fields()
    assert all(key in text for key in keys)
    assert "[in (0, 1]]" in describe_fields("rollout")  # top_p's range, from the field's metadata
    with pytest.raises(ConfigError, match="no config section 'optm' \\(did you mean 'optim'"):
        describe_fields("optm")


def test_train_help_lists_every_field():
    out = subprocess.run([sys.executable, "-m", "openrs_jax.train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    from openrs_jax.config import field_rows

    missing = [key for key, *_ in field_rows() if key not in out]
    assert not missing, missing
    assert "peak learning rate" in out


def test_overlapped_modes_and_the_sampler_log_prob_mode():
    c = load_config("openrs3", ["rollout.mode=one_step_off"])
    assert c.sampler_correction and not load_config("openrs3").sampler_correction
    # Open-RS trains on temperature-1 log-probs but samples at 0.7: vLLM must report raw ones.
    assert c.sampler_logprobs_mode == "raw_logprobs"
    assert load_config("openrs3").sampler_logprobs_mode == "processed_logprobs"
    assert load_config("openrs3", ["rollout.mode=async", "grpo.logprob_temperature=0.7"]).sampler_logprobs_mode == \
        "processed_logprobs"
    with pytest.raises(ConfigError, match="vLLM returns them at 1.0"):
        load_config("openrs3", ["rollout.mode=async", "rollout.engine=vllm", "grpo.logprob_temperature=0.5"])
    with pytest.raises(ConfigError, match="not supported with rollout.mode 'async'"):
        load_config("openrs3", ["rollout.mode=async", "grpo.drop_zero_std_groups=true"])
    # The jax engine reports log-probs at any temperature: the correction is allowed in sync mode too.
    assert load_config("openrs3", ["grpo.vllm_importance_sampling_correction=true", "rollout.mode=async"])
