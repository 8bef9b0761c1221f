"""TRL / open-r1 GRPO recipes (flat keys) read as our RunConfig (layer L0: no JAX).

A recipe as Open-RS and open-r1 publish it is one flat mapping of TRL's `GRPOConfig`, HF's
`TrainingArguments`, TRL's `ModelConfig` / `ScriptArguments` and open-r1's script arguments
(`model_name_or_path: ...`, `learning_rate: ...`, `reward_funcs: [format, cosine]`). Ours groups
the same settings in sections. `is_trl_recipe(raw)` tells the two apart (flat keys that TRL
knows, none of our sections); `convert(raw)` maps every key of a TRL recipe onto our sections
and returns a `Conversion`: the native mapping (`from_dict(RunConfig, ...)` reads it), notes
for the user (what was mapped with a caveat, what has no effect here), and, when any key is
unknown or unsupported, one `ConfigError` listing all of them with what to do.

    conversion = convert(yaml.safe_load(open("recipes/grpo.yaml")), {"num_processes": 3})
    cfg = from_dict(RunConfig, conversion.native)

Launch settings that are not in a recipe but decide its meaning are two pseudo-keys, given
like any key (`--set num_processes=3` to `train`, `--num_processes 3` to `convert_recipe`):
  - `num_processes`: training processes of `accelerate launch --num_processes N` (default 1).
    TRL's batch per optimizer step is per_device_train_batch_size x num_processes x
    gradient_accumulation_steps completions, so P = that / num_generations prompts.
  - `trl_defaults`: whose defaults fill the keys a recipe does not set (TRL's defaults changed
    between versions: beta 0.04 -> 0.0, temperature 0.9 -> 1.0, loss, log-prob temperature):
    "open-rs" (default): knoveleng/open-rs @ 2889c47 with the TRL it pinned (69ad852, ~0.16)
      and its grpo.py script arguments: the paper's runs;
    "open-r1": huggingface/open-r1 @ 1416fa0 with TRL 0.18.0 (its pin);
    "trl": TRL's GRPOConfig @ f2cd577 (1.10.dev), for recipes of plain TRL.

Where the mapping departs from TRL (numbered; each is also printed as a note when it applies):
1. `use_vllm: true` samples with the built-in JAX sampler on the training devices (TRL's
   colocate mode; same sampling, no server). The vllm_* settings are kept, so
   `--set rollout.engine=vllm` gives the paper's layout with a server (`openrs-serve`).
2. The batch split: micro_batch_size = per_device_train_batch_size x num_processes (one SPMD
   program), gradient_accumulation_steps as given.
3. The loss aggregation of TRL 0.16 (token mean over each device's micro-batch) is `openrs`
   when that micro-batch is one group (per_device_train_batch_size = num_generations, as in
   Open-RS), else `bnpo` (token mean over the batch; noted).
4. Rewards are ours under open-r1's names (`openrs_jax.rewards`): `format`, `accuracy` and
   `cosine` are Open-RS's; with trl_defaults "open-r1" the notes list where open-r1's own
   differ. open-r1's cosine_*, repetition_* and soft-overlong settings become the rewards'
   keyword arguments.
5. Training by epochs (`max_steps: -1`) and epoch-based saving are resolved once the prompts
   are read (`optim.num_train_epochs`, `checkpoint.save_strategy`).
6. Nothing is pushed to the hub; hub_* keys are noted and ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Mapping

from openrs_jax.config.fields import ConfigError

# Our top-level keys: a recipe with any of the sections is ours (flat keys in it are errors).
NATIVE_SECTIONS = ("model", "mesh", "data", "rollout", "grpo", "rewards", "optim", "checkpoint", "log", "validation")
NATIVE_SCALARS = ("seed", "run_name")
LAUNCH_KEYS = ("num_processes", "trl_defaults")


@dataclasses.dataclass(frozen=True)
class Profile:
    """The defaults of one TRL / script version for the keys a recipe may leave out."""

    name: str
    source: str
    temperature: float
    top_p: float
    max_prompt_length: int
    max_completion_length: int
    num_generations: int
    beta: float
    loss_type: str | None  # None: TRL 0.16's micro-batch token mean (departure 3)
    scale_rewards: str
    logprobs_at_temperature: bool  # log-probs of logits / temperature (TRL >= 0.16)
    prompt_column: str
    reward_funcs: tuple[str, ...]
    cosine_max_len: int
    soft_overlong: tuple[int, int]  # (max_completion_len, soft_punish_cache)
    vllm_gpu_memory_utilization: float
    sampler_correction: bool


PROFILES = {
    p.name: p
    for p in (
        Profile("open-rs", "knoveleng/open-rs @ 2889c47 (TRL @ 69ad852, ~0.16)", temperature=0.9, top_p=1.0,
                max_prompt_length=512, max_completion_length=256, num_generations=8, beta=0.04, loss_type=None,
                scale_rewards="group", logprobs_at_temperature=False, prompt_column="problem",
                reward_funcs=("accuracy", "format", "tag_count"), cosine_max_len=1000,
                soft_overlong=(16384, 4096), vllm_gpu_memory_utilization=0.9, sampler_correction=False),
        Profile("open-r1", "huggingface/open-r1 @ 1416fa0 (TRL 0.18.0)", temperature=1.0, top_p=1.0,
                max_prompt_length=512, max_completion_length=256, num_generations=8, beta=0.04, loss_type="bnpo",
                scale_rewards="group", logprobs_at_temperature=True, prompt_column="prompt",
                reward_funcs=("accuracy", "format", "tag_count"), cosine_max_len=1000,
                soft_overlong=(16384, 4096), vllm_gpu_memory_utilization=0.3, sampler_correction=False),
        Profile("trl", "huggingface/trl @ f2cd577 (1.10.dev)", temperature=1.0, top_p=1.0, max_prompt_length=512,
                max_completion_length=512, num_generations=8, beta=0.0, loss_type="dapo", scale_rewards="group",
                logprobs_at_temperature=True, prompt_column="prompt", reward_funcs=(), cosine_max_len=1000,
                soft_overlong=(1280, 256), vllm_gpu_memory_utilization=0.3, sampler_correction=True),
    )
}
DEFAULT_PROFILE = "open-rs"

# open-r1 / TRL reward names -> ours. The name as written is kept in the config (metrics are
# `rewards/<name as written>/mean`); the registry resolves the aliases.
REWARD_NAMES = {
    "accuracy": "accuracy", "accuracy_reward": "accuracy",
    "format": "format", "format_reward": "format",
    "cosine": "cosine", "cosine_scaled_reward": "cosine",
    "tag_count": "tag_count", "tag_count_reward": "tag_count",
    "repetition_penalty": "repetition_penalty", "repetition_penalty_reward": "repetition_penalty",
    "soft_overlong_punishment": "soft_overlong", "soft_overlong_punishment_reward": "soft_overlong",
    "get_soft_overlong_punishment": "soft_overlong",
}
UNSUPPORTED_REWARDS = {
    "reasoning_steps": "open-r1's step-counting reward", "length": "open-r1's len_reward (Kimi 1.5)",
    "code": "code execution (E2B)", "binary_code": "code execution (E2B)", "ioi_code": "IOI code execution",
    "cf_code": "Codeforces code execution", "code_format": "open-r1's code format reward",
    "think_format_reward": "TRL's think-format regex", "reasoning_accuracy_reward": "TRL's reasoning accuracy",
}
# Where open-r1's functions of the same name compute something else than ours (trl_defaults open-r1).
OPEN_R1_DIFFERENCES = {
    "format": "open-r1's format_reward needs the whole '<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>' "
              "layout; ours is Open-RS's (1 if the completion contains '\\n</think>\\n' exactly once)",
    "accuracy": "open-r1's accuracy_reward skips (None) a gold that does not parse and calls verify(gold, answer); "
                "ours is Open-RS's (1.0 for an unparsable gold, verify(answer, gold))",
}
OPEN_RS_DIFFERENCES = {
    "tag_count": "Open-RS's tag_count_reward scores the two think tags (0.5 each); ours is open-r1's four-tag "
                 "version (0.25 each)",
}

# Settings with no effect here (what each is about), noted once, never an error.
NO_EFFECT = {
    **dict.fromkeys(("log_level", "log_level_replica", "log_on_each_node", "disable_tqdm", "logging_dir",
                     "logging_nan_inf_filter"), "logging verbosity of transformers"),
    **dict.fromkeys(("overwrite_output_dir", "save_only_model", "save_safetensors", "save_on_each_node"),
                    "HF checkpoint file options"),
    **dict.fromkeys(("gradient_checkpointing_kwargs", "use_liger_kernel", "use_liger_loss", "torch_compile",
                     "torch_compile_backend", "torch_compile_mode", "tf32", "ds3_gather_for_generation",
                     "vllm_enable_prefix_caching", "vllm_enable_sleep_mode", "vllm_model_impl", "vllm_group_port",
                     "cache_implementation", "use_transformers_paged", "deepspeed", "fsdp", "fsdp_config",
                     "accelerator_config", "ddp_find_unused_parameters", "ddp_timeout", "ddp_backend",
                     "dataloader_num_workers", "dataloader_pin_memory", "dataloader_drop_last",
                     "dataloader_persistent_workers", "dataloader_prefetch_factor", "remove_unused_columns",
                     "dataset_num_proc", "pad_to_multiple_of", "half_precision_backend", "torch_empty_cache_steps",
                     "average_tokens_across_devices", "include_num_input_tokens_seen", "skip_memory_metrics",
                     "ignore_data_skip", "full_determinism", "disable_dropout", "local_rank",
                     "ref_model_mixup_alpha", "ref_model_sync_steps", "code_language",
                     "code_eval_test_batch_size", "code_eval_scoring_mode", "parallel_code_exec_per_proc",
                     "e2b_router_url", "morph_router_url", "code_provider", "ioi_provider"),
                    "torch/accelerate internals, or settings of code rewards"),
    **dict.fromkeys(("do_train", "do_predict", "per_device_eval_batch_size", "eval_steps", "eval_on_start",
                     "num_generations_eval", "dataset_test_split", "prediction_loss_only"),
                    "the HF Trainer's evaluation, off here; see validation.*"),
    **dict.fromkeys(("hub_model_id", "hub_strategy", "hub_model_revision", "hub_private_repo", "hub_token",
                     "hub_always_push", "overwrite_hub_revision", "push_to_hub_revision", "callbacks",
                     "benchmarks", "wandb_run_group"), "hub upload and open-r1's post-training jobs"),
}

# Hints for a flat TRL key found in one of our sectioned recipes (loader's unknown-key error).
TRL_KEYS = {
    "model_name_or_path": "model.name_or_path",
    "torch_dtype": "model.dtype",
    "bf16": "model.dtype: bfloat16",
    "attn_implementation": "model.attention_impl",
    "gradient_checkpointing": "model.remat: full",
    "use_vllm": "rollout.engine: vllm",
    "vllm_enforce_eager": "rollout.vllm_server_args: [--enforce-eager]",
    "vllm_device": "the vLLM server's own device (rollout.vllm_launch / vllm_server_url)",
    "vllm_max_model_length": "rollout.vllm_max_model_len",
    "per_device_train_batch_size": "optim.micro_batch_size (= per-device batch x devices)",
    "lr_scheduler_kwargs": "optim.min_lr_rate",
    "num_train_epochs": "optim.num_train_epochs",
    "save_strategy": "checkpoint.save_strategy",
    "logging_strategy": "log.logging_steps",
    "dataset_prompt_column": "data.problem_column",
    "cosine_max_len": "rewards.reward_kwargs.cosine.max_len",
    "cosine_min_value_wrong": "rewards.reward_kwargs.cosine.min_value_wrong",
    "cosine_max_value_wrong": "rewards.reward_kwargs.cosine.max_value_wrong",
    "cosine_min_value_correct": "rewards.reward_kwargs.cosine.min_value_correct",
    "cosine_max_value_correct": "rewards.reward_kwargs.cosine.max_value_correct",
    "repetition_n_grams": "rewards.reward_kwargs.repetition_penalty.ngram_size",
    "repetition_max_penalty": "rewards.reward_kwargs.repetition_penalty.max_penalty",
    "wandb_project": "log.wandb_project",
    "wandb_entity": "log.wandb_entity",
}


@dataclasses.dataclass
class Conversion:
    """A converted recipe: `native` (our sections, for `from_dict(RunConfig, ...)`), `notes`
    (one line each: caveats and what has no effect), `profile` (the defaults used)."""

    native: dict[str, Any]
    notes: list[str]
    profile: str


# Keys that mark a flat recipe as TRL's (with none of our sections): a file of typos only stays
# ours, so its error names our closest keys.
TRL_MARKERS = frozenset({*TRL_KEYS, *NO_EFFECT, *LAUNCH_KEYS, "learning_rate", "reward_funcs", "reward_weights",
                         "dataset_name", "dataset_mixture", "num_generations", "max_prompt_length",
                         "max_completion_length", "gradient_accumulation_steps", "output_dir", "max_steps", "beta",
                         "temperature", "report_to", "save_steps", "logging_steps", "system_prompt", "chat_template"})


def is_trl_recipe(raw: Mapping[str, Any]) -> bool:
    """Whether `raw` is a flat TRL / open-r1 recipe: none of our sections, and at least one key
    that marks TRL's format (`TRL_MARKERS`)."""
    keys = set(raw)
    return not keys & set(NATIVE_SECTIONS) and bool(keys & TRL_MARKERS)


def trl_hint(key: str) -> str | None:
    """Where a flat TRL key's setting lives in our sections (for unknown-key errors)."""
    return TRL_KEYS.get(key)


class _Recipe:
    """The flat mapping being converted: every key read is marked used; `rest()` lists the
    others (each must then be a no-effect key, or it is reported)."""

    def __init__(self, raw: Mapping[str, Any]):
        self.raw = dict(raw)
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.raw and self.raw[key] is not None

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        value = self.raw.get(key)
        return default if value is None else value

    def first(self, keys: tuple[str, ...], default: Any = None) -> Any:
        for key in keys:
            self.used.add(key)
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        return default

    def rest(self) -> list[str]:
        return [k for k in self.raw if k not in self.used]


class _Problems:
    """Unknown and unsupported keys, collected so that one error lists all of them."""

    def __init__(self):
        self.items: list[str] = []

    def unsupported(self, key: str, value: Any, what_to_do: str) -> None:
        self.items.append(f"{key}: {value!r} is not supported here; {what_to_do}")

    def raise_if_any(self, source: str) -> None:
        if self.items:
            listed = "\n  - ".join(self.items)
            raise ConfigError(
                f"{source}: {len(self.items)} key{'s' if len(self.items) > 1 else ''} of this TRL/open-r1 recipe "
                f"cannot be used as given:\n  - {listed}\n(convert it with `python -m openrs_jax.convert_recipe` "
                "to see the rest of the mapping; docs: README, 'Coming from TRL / open-r1')"
            )


def _set(native: dict[str, Any], dotted: str, value: Any) -> None:
    node = native
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _number(value: Any, key: str, problems: _Problems, kind: type = float) -> Any:
    """YAML numbers (and numeric strings such as '1e-6') as `kind`; a problem otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.unsupported(key, value, "expected a number")
        return None
    if kind is int:
        if not number.is_integer():
            problems.unsupported(key, value, "expected an integer")
            return None
        return int(number)
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


# ---------------------------------------------------------------------------- the sections
def _model(r: _Recipe, native, notes, problems) -> None:
    name = r.get("model_name_or_path")
    if name is None:
        problems.items.append("model_name_or_path: missing (TRL needs it too); set the HF hub id or a local directory")
    _set(native, "model.name_or_path", name)
    revision = r.get("model_revision", "main")
    if revision != "main":
        problems.unsupported("model_revision", revision, "download that revision (huggingface-cli download --revision) "
                                                         "and set model_name_or_path to its directory")
    dtype = r.first(("torch_dtype", "dtype"), None)
    bf16, fp16 = _flag(r.get("bf16", False)), _flag(r.get("fp16", False))
    if dtype not in (None, "auto", "bfloat16", "float16", "float32"):
        problems.unsupported("torch_dtype", dtype, "use bfloat16, float16 or float32")
    # Mixed precision (bf16 / fp16) sets the compute dtype; without it, the loaded dtype does.
    if bf16 or fp16:
        compute = "bfloat16" if bf16 else "float16"
    else:
        compute = dtype if dtype in ("bfloat16", "float16") else "float32"
    _set(native, "model.dtype", compute)
    # fp32 master weights: DeepSpeed ZeRO (Open-RS's launch) keeps them with bf16 training, and
    # a 1e-6 update is below bf16's resolution.
    _set(native, "model.param_dtype", "float32")
    attn = r.get("attn_implementation")
    if attn == "eager":
        _set(native, "model.attention_impl", "xla")
    elif attn not in (None, "flash_attention_2", "flash_attention_3", "sdpa", "kernels-community/flash-attn"):
        problems.unsupported("attn_implementation", attn, "remove it (model.attention_impl: auto picks cuDNN "
                                                          "flash attention on GPUs)")
    if r.has("gradient_checkpointing"):
        _set(native, "model.remat", "full" if _flag(r.get("gradient_checkpointing")) else "none")
    if _flag(r.get("trust_remote_code", False)):
        notes.append("trust_remote_code: no remote code is run here (the model is our Qwen2 implementation)")
    if _flag(r.get("use_peft", False)):
        problems.unsupported("use_peft", True, "LoRA is not implemented: remove use_peft and the lora_* keys "
                                               "(full fine-tuning)")
    for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save",
                "lora_task_type", "use_rslora", "use_dora"):
        r.get(key)  # only meaningful with use_peft (reported above)
    for key in ("load_in_8bit", "load_in_4bit"):
        if _flag(r.get(key, False)):
            problems.unsupported(key, True, "quantized training is not implemented; remove it")
    for key in ("bnb_4bit_quant_type", "use_bnb_nested_quant"):
        r.get(key)  # only meaningful with load_in_4bit (reported above)
    if r.get("model_init_kwargs"):
        problems.unsupported("model_init_kwargs", r.get("model_init_kwargs"),
                             "set the model's dtype and attention with torch_dtype / attn_implementation")


def _data(r: _Recipe, native, notes, problems, profile: Profile) -> None:
    name, mixture = r.get("dataset_name"), r.get("dataset_mixture")
    if mixture is not None:
        sources = []
        entries = mixture.get("datasets", []) if isinstance(mixture, Mapping) else None
        if not entries:
            problems.unsupported("dataset_mixture", mixture, "give {datasets: [{id, config, split, weight}, ...]}")
        for entry in entries or []:
            sources.append({"path": entry.get("id"), "config": entry.get("config"),
                            "split": entry.get("split", "train"), "ratio": float(entry.get("weight") or 1.0)})
        _set(native, "data.dataset_name", None)
        _set(native, "data.sources", sources)
        notes.append("dataset_mixture: each dataset's weight is its share of the prompt stream here (open-r1 "
                     "subsamples each dataset by its weight, then concatenates); `columns` are not needed")
    else:
        _set(native, "data.dataset_name", name)
        _set(native, "data.dataset_config", r.get("dataset_config"))
        _set(native, "data.dataset_split", r.get("dataset_train_split", "train"))
    if r.get("dataset_streaming"):
        problems.unsupported("dataset_streaming", True, "remove it (every row is read and checked before step 1)")
    _set(native, "data.problem_column", r.get("dataset_prompt_column", profile.prompt_column))
    _set(native, "data.solution_column", "solution")  # open-r1's accuracy/cosine read the `solution` column
    _set(native, "data.system_prompt", r.get("system_prompt"))
    _set(native, "data.max_prompt_length", _number(r.get("max_prompt_length", profile.max_prompt_length),
                                                   "max_prompt_length", problems, int))
    template = r.get("chat_template")
    if template is not None:
        _set(native, "data.chat_template", template)
    # R1-distill templates end the generation prompt with "<think>\n" (the revision Open-RS used
    # did; the January one in ../shared/data does not): appended only when missing. Other models
    # and custom templates get exactly what their template renders, as in TRL.
    r1 = "r1-distill" in str(r.raw.get("model_name_or_path", "")).lower()
    _set(native, "data.add_think_prefill", bool(r1 and template is None))
    if r.has("shuffle_dataset"):
        _set(native, "data.shuffle", _flag(r.get("shuffle_dataset")))
    if r.has("data_seed"):
        _set(native, "data.shuffle_seed", _number(r.get("data_seed"), "data_seed", problems, int))


def _rollout(r: _Recipe, native, notes, problems, profile: Profile) -> None:
    temperature = _number(r.get("temperature", profile.temperature), "temperature", problems)
    _set(native, "rollout.temperature", temperature)
    _set(native, "rollout.top_p", _number(r.get("top_p", profile.top_p), "top_p", problems))
    top_k = r.get("top_k", 0)
    _set(native, "rollout.top_k", 0 if top_k in (None, -1) else _number(top_k, "top_k", problems, int))
    if r.get("min_p") not in (None, 0, 0.0):
        problems.unsupported("min_p", r.get("min_p"), "remove it (top_p and top_k are supported)")
    if r.get("repetition_penalty", 1.0) != 1.0:
        problems.unsupported("repetition_penalty", r.get("repetition_penalty"),
                             "remove it (a sampling penalty; the open-r1 reward of that name is reward_funcs: "
                             "[repetition_penalty])")
    if r.get("generation_kwargs"):
        problems.unsupported("generation_kwargs", r.get("generation_kwargs"), "use temperature / top_p / top_k")
    for key in ("vllm_guided_decoding_regex", "vllm_structured_outputs_regex"):
        if r.get(key):
            problems.unsupported(key, r.get(key), "constrained decoding is not implemented; remove it")
    _set(native, "rollout.max_completion_length",
         _number(r.get("max_completion_length", profile.max_completion_length), "max_completion_length", problems,
                 int))
    use_vllm = _flag(r.get("use_vllm", False))
    mode = r.get("vllm_mode")
    r.get("vllm_device")
    _set(native, "rollout.engine", "jax")
    if use_vllm:
        notes.append("use_vllm: samples with the built-in JAX sampler on the training devices (rollout.engine: jax, "
                     "TRL's colocate mode, no server); --set rollout.engine=vllm [rollout.vllm_launch=true] for a "
                     "vLLM server (the paper's layout; start one with openrs-serve, not trl vllm-serve)")
    host, port = r.get("vllm_server_host"), r.get("vllm_server_port")
    url = r.get("vllm_server_base_url")
    if url is None and (host is not None or port is not None):
        host = "127.0.0.1" if host in (None, "0.0.0.0") else host
        url = f"http://{host}:{port or 8000}"
    if url is not None:
        _set(native, "rollout.vllm_server_url", url)
    if mode not in (None, "server", "colocate"):
        problems.unsupported("vllm_mode", mode, "use server or colocate")
    if r.has("vllm_server_timeout"):
        _set(native, "rollout.vllm_timeout_s", _number(r.get("vllm_server_timeout"), "vllm_server_timeout", problems))
    _set(native, "rollout.vllm_gpu_memory_utilization",
         _number(r.get("vllm_gpu_memory_utilization", profile.vllm_gpu_memory_utilization),
                 "vllm_gpu_memory_utilization", problems))
    max_len = r.first(("vllm_max_model_len", "vllm_max_model_length"))
    if max_len is not None:
        _set(native, "rollout.vllm_max_model_len", _number(max_len, "vllm_max_model_len", problems, int))
    args = []
    if _flag(r.get("vllm_enforce_eager", False)):
        args.append("--enforce-eager")
    dtype = r.get("vllm_dtype", "auto")
    if dtype != "auto":
        args += ["--dtype", str(dtype)]
    tp = r.get("vllm_tensor_parallel_size", 1)
    if tp not in (1, None):
        args += ["--tensor-parallel-size", str(tp)]
    if args:
        _set(native, "rollout.vllm_server_args", args)
    for key in ("generation_batch_size", "steps_per_generation"):
        if r.get(key) is not None:
            notes.append(f"{key}: the whole step's batch is sampled at once here (rollout.batch_size bounds the "
                         "rows the JAX sampler decodes together)")


def _grpo(r: _Recipe, native, notes, problems, profile: Profile, per_device: int | None) -> None:
    g = _number(r.get("num_generations", profile.num_generations), "num_generations", problems, int)
    _set(native, "grpo.num_generations", g)
    _set(native, "grpo.beta", _number(r.get("beta", profile.beta), "beta", problems))
    _set(native, "grpo.epsilon", _number(r.get("epsilon", 0.2), "epsilon", problems))
    if r.has("epsilon_high"):
        _set(native, "grpo.epsilon_high", _number(r.get("epsilon_high"), "epsilon_high", problems))
    if r.get("delta") is not None:
        problems.unsupported("delta", r.get("delta"), "two-sided clipping is not implemented; remove it")
    _set(native, "grpo.num_iterations", _number(r.get("num_iterations", 1), "num_iterations", problems, int))
    loss = r.get("loss_type", profile.loss_type)
    if loss is None:  # TRL 0.16: token mean over each device's micro-batch (departure 3)
        if per_device == g:
            loss = "openrs"
        else:
            loss = "bnpo"
            notes.append(f"loss: TRL 0.16 averaged tokens over each device's micro-batch of {per_device} completions; "
                         "here over the whole batch (grpo.loss_type: bnpo). With per_device_train_batch_size = "
                         "num_generations it is Open-RS's per-group mean (openrs)")
    if loss not in ("openrs", "grpo", "bnpo", "dr_grpo", "dapo"):
        problems.unsupported("loss_type", loss, "use grpo, bnpo, dr_grpo or dapo")
    _set(native, "grpo.loss_type", loss)
    scale = r.get("scale_rewards", profile.scale_rewards)
    scale = {True: "group", False: "none"}.get(scale, scale) if isinstance(scale, bool) else scale
    if scale not in ("group", "batch", "none"):
        problems.unsupported("scale_rewards", scale, "use group, batch, none (or true / false)")
    _set(native, "grpo.scale_rewards", scale)
    temperature = native["rollout"]["temperature"]
    _set(native, "grpo.logprob_temperature",
         float(temperature) if profile.logprobs_at_temperature and temperature else 1.0)
    if r.has("mask_truncated_completions"):
        _set(native, "grpo.mask_truncated_completions", _flag(r.get("mask_truncated_completions")))
    level = r.get("importance_sampling_level", "token")
    if level not in ("token", "sequence"):
        problems.unsupported("importance_sampling_level", level, "use token or sequence")
    _set(native, "grpo.importance_sampling_level", level)
    correction = _flag(r.get("vllm_importance_sampling_correction", profile.sampler_correction))
    mode = r.get("vllm_importance_sampling_mode")
    cap = r.first(("vllm_importance_sampling_cap", "vllm_importance_sampling_clip_max"))
    if r.get("vllm_importance_sampling_clip_min") is not None:
        problems.unsupported("vllm_importance_sampling_clip_min", r.get("vllm_importance_sampling_clip_min"),
                             "remove it (the lower cap is not configurable)")
    if correction and native["rollout"]["engine"] == "jax":
        notes.append("vllm_importance_sampling_correction: off with the built-in sampler in sync mode (its "
                     "log-probs come from the training weights); on with --set rollout.engine=vllm")
        correction = False
    _set(native, "grpo.vllm_importance_sampling_correction", correction)
    if mode is not None:
        _set(native, "grpo.vllm_importance_sampling_mode", mode)
    if cap is not None:
        _set(native, "grpo.vllm_importance_sampling_cap", _number(cap, "vllm_importance_sampling_cap", problems))
    if _flag(r.get("sync_ref_model", False)):
        problems.unsupported("sync_ref_model", True, "the reference model stays the initial policy; remove it")
    if r.get("top_entropy_quantile", 1.0) != 1.0:
        problems.unsupported("top_entropy_quantile", r.get("top_entropy_quantile"), "entropy masks are not "
                                                                                   "implemented; remove it")
    if r.get("entropy_coef", 0.0) not in (0, 0.0) or _flag(r.get("use_adaptive_entropy", False)):
        problems.unsupported("entropy_coef", r.raw.get("entropy_coef"), "the entropy bonus is not implemented")
    for key in ("entropy_coef_min", "entropy_coef_max", "entropy_coef_delta", "entropy_target"):
        r.get(key)
    aggregation = r.get("multi_objective_aggregation", "sum_then_normalize")
    if aggregation != "sum_then_normalize":
        problems.unsupported("multi_objective_aggregation", aggregation, "rewards are summed, then normalized")


def _rewards(r: _Recipe, native, notes, problems, profile: Profile) -> None:
    funcs = r.get("reward_funcs", list(profile.reward_funcs))
    if isinstance(funcs, str):
        funcs = [funcs]
    if r.get("reward_model_name_or_path"):
        problems.unsupported("reward_model_name_or_path", r.get("reward_model_name_or_path"),
                             "reward models are not implemented; use rule-based reward_funcs")
    from openrs_jax.rewards.registry import is_reward, list_rewards, reward_params

    ours = list_rewards()
    known = []
    for name in funcs:
        if name in REWARD_NAMES:
            known.append(name)
        elif is_reward(name):  # one of ours by its own name (exact_match, language, cosine_tokens, ...)
            pass
        elif name in UNSUPPORTED_REWARDS:
            problems.unsupported("reward_funcs", name, f"{UNSUPPORTED_REWARDS[name]} is not implemented: remove it, "
                                                       "or register your own (openrs_jax.rewards.register_reward)")
        else:
            close = difflib.get_close_matches(str(name), list(REWARD_NAMES), n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            known_names = f"open-r1's {', '.join(sorted(REWARD_NAMES))}, and ours: {', '.join(ours)}"
            problems.unsupported("reward_funcs", name, f"unknown reward{hint}; known: {known_names}")
    if not funcs:
        problems.items.append("reward_funcs: missing; list the rewards, e.g. [accuracy, format]")
    _set(native, "rewards.reward_funcs", list(funcs))
    weights = r.get("reward_weights")
    _set(native, "rewards.reward_weights", None if weights is None else [float(w) for w in weights])
    differences = OPEN_R1_DIFFERENCES if profile.name != "open-rs" else OPEN_RS_DIFFERENCES
    for name in known:
        why = differences.get(REWARD_NAMES[name])
        if why:
            notes.append(f"reward {name}: {why}")
    kwargs: dict[str, dict[str, Any]] = {}
    params = {
        "cosine": {"cosine_max_len": ("max_len", profile.cosine_max_len, int),
                   "cosine_min_value_wrong": ("min_value_wrong", 0.0, float),
                   "cosine_max_value_wrong": ("max_value_wrong", -0.5, float),
                   "cosine_min_value_correct": ("min_value_correct", 0.5, float),
                   "cosine_max_value_correct": ("max_value_correct", 1.0, float)},
        "repetition_penalty": {"repetition_n_grams": ("ngram_size", 3, int),
                               "repetition_max_penalty": ("max_penalty", -1.0, float)},
        "soft_overlong": {"max_completion_len": ("max_len", profile.soft_overlong[0], int),
                          "soft_punish_cache": ("cache", profile.soft_overlong[1], int)},
    }
    for reward, table in params.items():
        users = [name for name in known if REWARD_NAMES[name] == reward]
        given = [key for key in table if r.has(key)]
        if not users:
            for key in given:
                r.get(key)
                notes.append(f"{key}: no effect (no {reward} reward in reward_funcs)")
            continue
        defaults = reward_params(reward)
        values = {}
        for i, (key, (param, default, kind)) in enumerate(table.items()):
            # What the recipe sets, its first (length) parameter always, and any default of the
            # recipe's code that differs from ours; the rest is our default, the same value.
            value = _number(r.get(key, default), key, problems, kind)
            if value is not None and (key in given or i == 0 or value != defaults.get(param)):
                values[param] = value
        if reward == "cosine" and profile.name == "open-rs":
            # Open-RS's cosine reward as it ran: its math-verify call (`boxed=True`) extracted
            # nothing from a \boxed{} answer (rewards.math_rewards, `boxed="none"`).
            values["boxed"] = "none"
        for name in users:
            if values:
                kwargs[name] = dict(values)
    if kwargs:
        _set(native, "rewards.reward_kwargs", kwargs)


def _optim(r: _Recipe, native, notes, problems, profile: Profile, launch: Mapping[str, Any]) -> int | None:
    """Optimizer, schedule and batch; returns per_device_train_batch_size."""
    _set(native, "optim.learning_rate", _number(r.get("learning_rate", 1e-6),
                                                "learning_rate", problems))
    schedule = r.get("lr_scheduler_type", "linear")
    if schedule not in ("cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"):
        problems.unsupported("lr_scheduler_type", schedule, "use cosine_with_min_lr, cosine, linear, constant or "
                                                            "constant_with_warmup")
    _set(native, "optim.lr_scheduler_type", schedule)
    lr_kwargs = dict(r.get("lr_scheduler_kwargs", {}) or {})
    if "min_lr_rate" in lr_kwargs:
        _set(native, "optim.min_lr_rate", _number(lr_kwargs.pop("min_lr_rate"), "lr_scheduler_kwargs.min_lr_rate",
                                                  problems))
    elif "min_lr" in lr_kwargs:
        lr = native["optim"]["learning_rate"]
        _set(native, "optim.min_lr_rate", _number(lr_kwargs.pop("min_lr"), "min_lr", problems) / lr if lr else 0.0)
    elif schedule == "cosine_with_min_lr":
        problems.unsupported("lr_scheduler_kwargs", r.raw.get("lr_scheduler_kwargs"),
                             "cosine_with_min_lr needs min_lr_rate or min_lr in lr_scheduler_kwargs")
    if lr_kwargs:
        problems.unsupported("lr_scheduler_kwargs", lr_kwargs, "only min_lr_rate / min_lr are supported")
    _set(native, "optim.warmup_ratio", _number(r.get("warmup_ratio", 0.0), "warmup_ratio", problems))
    warmup_steps = r.get("warmup_steps", 0)
    if isinstance(warmup_steps, float) and 0 < warmup_steps < 1:  # newer transformers: a ratio
        _set(native, "optim.warmup_ratio", float(warmup_steps))
    elif warmup_steps:
        _set(native, "optim.warmup_steps", _number(warmup_steps, "warmup_steps", problems, int))
    _set(native, "optim.weight_decay", _number(r.get("weight_decay", 0.0), "weight_decay", problems))
    _set(native, "optim.adam_beta1", _number(r.get("adam_beta1", 0.9), "adam_beta1", problems))
    _set(native, "optim.adam_beta2", _number(r.get("adam_beta2", 0.999), "adam_beta2", problems))
    _set(native, "optim.adam_epsilon", _number(r.get("adam_epsilon", 1e-8), "adam_epsilon", problems))
    clip = r.get("max_grad_norm", 1.0)
    _set(native, "optim.max_grad_norm", None if not clip else _number(clip, "max_grad_norm", problems))
    optimizer = r.get("optim", "adamw_torch")
    if not str(optimizer).startswith("adamw"):
        problems.unsupported("optim", optimizer, "AdamW is the optimizer here; remove it")
    r.get("optim_args")
    max_steps = _number(r.get("max_steps", -1), "max_steps", problems, int)
    epochs = r.get("num_train_epochs", 3.0)
    if max_steps is not None and max_steps > 0:
        _set(native, "optim.max_steps", max_steps)
    else:  # HF: max_steps <= 0 trains num_train_epochs epochs (departure 5)
        _set(native, "optim.num_train_epochs", _number(epochs, "num_train_epochs", problems))
        notes.append(f"max_steps {max_steps}: trains num_train_epochs = {epochs} epoch(s); the step count is set once "
                     "the prompts are read (optim.num_train_epochs)")

    per_device = _number(r.get("per_device_train_batch_size", 8), "per_device_train_batch_size", problems, int)
    accum = _number(r.get("gradient_accumulation_steps", 1), "gradient_accumulation_steps", problems, int)
    processes = _number(launch.get("num_processes", 1), "num_processes", problems, int)
    g = native["grpo"]["num_generations"] if "grpo" in native else None
    if None in (per_device, accum, processes, g):
        return per_device
    completions = per_device * processes * accum
    if completions % g:
        hint = "" if "num_processes" in launch else (" (num_processes is 1 unless given: pass the number of training "
                                                     "processes of your `accelerate launch --num_processes`)")
        problems.items.append(
            f"per_device_train_batch_size {per_device} x num_processes {processes} x gradient_accumulation_steps "
            f"{accum} = {completions} completions per step is not a multiple of num_generations {g}{hint}")
        return per_device
    _set(native, "optim.num_prompts_per_step", completions // g)
    _set(native, "optim.micro_batch_size", per_device * processes)
    _set(native, "optim.gradient_accumulation_steps", accum)
    notes.append(f"batch: per_device_train_batch_size {per_device} x {processes} process{'es' if processes > 1 else ''}"
                 f" (num_processes) x gradient_accumulation_steps {accum} = {completions} completions = "
                 f"{completions // g} prompts x {g} per step"
                 + ("" if "num_processes" in launch else "; pass num_processes as given to `accelerate launch "
                                                         "--num_processes`"))
    return per_device


def _logging_and_saving(r: _Recipe, native, notes, problems) -> None:
    max_steps = native["optim"].get("max_steps")

    def steps(key: str, value: Any) -> int | None:
        value = _number(value, key, problems)
        if value is None:
            return None
        if 0 < value < 1:  # HF: a ratio of the total steps
            if max_steps is None:
                problems.unsupported(key, value, "a ratio of the run's steps needs max_steps > 0 (this recipe "
                                                 "trains by epochs); give a step count")
                return None
            return max(1, math.ceil(value * max_steps))
        return int(value)

    _set(native, "log.logging_steps", steps("logging_steps", r.get("logging_steps", 500)))
    strategy = r.get("logging_strategy", "steps")
    if strategy not in ("steps",):
        problems.unsupported("logging_strategy", strategy, "metrics are logged every logging_steps steps")
    r.get("logging_first_step")  # every logging_steps-th step is logged; with 1, the first is too
    _set(native, "log.log_completions", _flag(r.get("log_completions", False)))
    if r.has("num_completions_to_print"):
        _set(native, "log.num_completions_to_print", _number(r.get("num_completions_to_print"),
                                                             "num_completions_to_print", problems, int))
    if _flag(r.first(("wandb_log_unique_prompts", "log_unique_prompts"), False)):
        _set(native, "log.log_unique_prompts", True)
    report = r.get("report_to", ["tensorboard"])
    report = [report] if isinstance(report, str) else list(report)
    sinks = ["stdout", "jsonl"]
    for sink in report:
        if sink in ("none", None):
            continue
        if sink == "all":
            sinks += ["tensorboard"]
            notes.append("report_to: all -> tensorboard (add wandb explicitly: report_to: [wandb, tensorboard])")
        elif sink in ("wandb", "tensorboard"):
            sinks.append(sink)
        else:
            problems.unsupported("report_to", sink, "use wandb and/or tensorboard")
    _set(native, "log.report_to", list(dict.fromkeys(sinks)))
    for key in ("wandb_project", "wandb_entity"):
        if r.has(key):
            _set(native, f"log.{key}", str(r.get(key)))

    output_dir = r.get("output_dir")
    if output_dir is not None:
        _set(native, "checkpoint.output_dir", str(output_dir))
    name = r.get("run_name") or (str(output_dir).rstrip("/").rsplit("/", 1)[-1] if output_dir else None)
    if name:
        native["run_name"] = name.replace("/", "-")
    save = r.get("save_strategy", "steps")
    if save == "steps":
        _set(native, "checkpoint.save_steps", steps("save_steps", r.get("save_steps", 500)))
    elif save == "epoch":
        _set(native, "checkpoint.save_strategy", "epoch")
    elif save == "no":
        notes.append("save_strategy: no -> checkpoints are still written at the end and on a signal "
                     "(every save_steps too: set checkpoint.save_steps large to have fewer)")
        _set(native, "checkpoint.save_steps", max_steps or 10**9)
    else:
        problems.unsupported("save_strategy", save, "use steps or epoch")
    if r.has("save_total_limit"):
        _set(native, "checkpoint.save_total_limit", _number(r.get("save_total_limit"), "save_total_limit", problems,
                                                            int))
    resume = r.get("resume_from_checkpoint")
    if resume not in (None, False):
        if resume is True or str(resume).strip().lower() == "true":
            _set(native, "checkpoint.resume", True)
        else:
            problems.unsupported("resume_from_checkpoint", resume, "resume restores the newest checkpoint of "
                                                                   "output_dir (pass --resume)")
    if _flag(r.get("push_to_hub", False)):
        notes.append("push_to_hub: nothing is pushed to the hub here; upload a snapshot (checkpoint.save_hf: true "
                     "writes <run>/hf/step-N) with `huggingface-cli upload`")
    eval_strategy = r.first(("eval_strategy", "evaluation_strategy"), "no")
    if _flag(r.get("do_eval", False)) or eval_strategy not in ("no", None):
        problems.unsupported("eval_strategy" if eval_strategy not in ("no", None) else "do_eval",
                             eval_strategy if eval_strategy not in ("no", None) else True,
                             "evaluation during training is validation.benchmarks / validation.eval_steps here")


def convert(raw: Mapping[str, Any], launch: Mapping[str, Any] | None = None, *, source: str = "recipe") -> Conversion:
    """Maps a flat TRL / open-r1 recipe onto our sections (module docstring).

    raw: the recipe's mapping. launch: the pseudo-keys `num_processes` and `trl_defaults`
    (they may also be in `raw`). Raises ConfigError listing every unknown or unsupported key.
    """
    raw = dict(raw)
    launch = {**{k: raw.pop(k) for k in LAUNCH_KEYS if k in raw}, **dict(launch or {})}
    profile_name = launch.get("trl_defaults", DEFAULT_PROFILE)
    if profile_name not in PROFILES:
        raise ConfigError(f"{source}: trl_defaults {profile_name!r}; one of {', '.join(PROFILES)}")
    profile = PROFILES[profile_name]
    r, problems = _Recipe(raw), _Problems()
    native: dict[str, Any] = {}
    notes: list[str] = []
    _model(r, native, notes, problems)
    _data(r, native, notes, problems, profile)
    _rollout(r, native, notes, problems, profile)
    # GRPO needs per_device (for the loss of TRL 0.16); the batch needs num_generations.
    per_device = r.raw.get("per_device_train_batch_size", 8)
    _grpo(r, native, notes, problems, profile, per_device if isinstance(per_device, int) else None)
    _rewards(r, native, notes, problems, profile)
    _optim(r, native, notes, problems, profile, launch)
    _logging_and_saving(r, native, notes, problems)
    if r.has("seed"):
        native["seed"] = _number(r.get("seed"), "seed", problems, int)
    no_effect: dict[str, list[str]] = {}
    for key in r.rest():
        if key in NO_EFFECT:
            no_effect.setdefault(NO_EFFECT[key], []).append(key)
            continue
        close = difflib.get_close_matches(key, [*r.used, *NO_EFFECT, *LAUNCH_KEYS], n=2, cutoff=0.7)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        problems.items.append(f"{key}: unknown key{hint}; not a TRL GRPOConfig / TrainingArguments / ModelConfig / "
                              "open-r1 key this converter knows: remove it, or set the matching field of our "
                              "config afterwards (python -m openrs_jax.train --help lists them)")
    for what, keys in no_effect.items():
        notes.append(f"no effect here: {', '.join(keys)} ({what})")
    problems.raise_if_any(source)
    notes.insert(0, f"TRL/open-r1 recipe; keys it leaves out take the defaults of {profile.source} "
                    f"(trl_defaults: {profile.name})")
    return Conversion(native=native, notes=notes, profile=profile.name)


def split_overrides(overrides: list[tuple[list[str], Any]]) -> tuple[dict[str, Any], list[tuple[list[str], Any]]]:
    """Overrides of a TRL recipe: undotted keys that are not our sections set flat recipe keys
    (`cosine_max_len=3584`, `num_processes=3`), the rest apply to the converted config."""
    flat, native = {}, []
    for path, value in overrides:
        if len(path) == 1 and path[0] not in NATIVE_SECTIONS and path[0] != "run_name":
            flat[path[0]] = value
        else:
            native.append((path, value))
    return flat, native
