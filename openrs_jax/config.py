"""Run configuration: frozen dataclasses per subsystem, YAML recipes, `--set a.b=c` overrides.

Layer L0: no JAX here. A `RunConfig` is composed of `model`, `mesh`, `data`, `rollout`, `grpo`,
`rewards`, `optim`, `checkpoint` and `log` sections plus a top-level `seed` and `run_name`.
Field names follow TRL's `GRPOConfig` / open-r1's `GRPOScriptArguments` wherever the meaning is
the same (`learning_rate`, `num_generations`, `max_completion_length`, `reward_funcs`,
`reward_weights`, `beta`, `temperature`, `save_steps`, ...), so an Open-RS recipe reads the same
here, only grouped by section.

The defaults are the Open-RS recipe as it ran (exp 2/3; see DESIGN.md "Semantics to
reproduce"); `configs/*.yaml` spell every recipe out in full.

Strictness, where we depart from TRL/HfArgumentParser:
  1. An unknown key is an error that names it and its closest matches (TRL silently ignored
     Open-RS's `vllm_enforce_eager`).
  2. A value of the wrong type is an error naming the key, the expected and the given type.
     YAML ints are accepted for floats, and strings such as "1e-6" (PyYAML reads `1e-6`
     without a dot as a string) are parsed as floats.
  3. The batch arithmetic is explicit: `optim.num_prompts_per_step` P prompts ×
     `grpo.num_generations` G = P·G completions per optimizer step, split into
     `gradient_accumulation_steps` micro-batches of `micro_batch_size` completions. TRL's
     `per_device_train_batch_size × num_processes × gradient_accumulation_steps` = P·G becomes
     `micro_batch_size = per_device_train_batch_size × num_processes` here (one SPMD program).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import pathlib
import types
import typing
from typing import Any, Literal, Mapping, Sequence

import yaml

if typing.TYPE_CHECKING:
    from openrs_jax.model.config import ModelConfig

# The recipes ship inside the package (package data), so recipe names ("openrs3", "quickstart")
# resolve in an installed wheel as in a checkout; the repository's `configs/` links here.
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent / "configs"
# The recipe `load_config(None)` loads: runs on a fresh CPU-only machine with no download.
DEFAULT_RECIPE = "quickstart"

LOSS_TYPES = ("openrs", "grpo", "bnpo", "dr_grpo", "dapo")
# Loss aggregations that average tokens within each group: a micro-batch must hold whole groups.
GROUP_LOSS_TYPES = ("openrs",)


class ConfigError(ValueError):
    """A configuration key, value or combination of values is wrong; the message says which."""


# ---------------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class ModelSection:
    """Which model to train.

    `name_or_path` is an HF hub id or a local HF directory (config.json + safetensors); when it
    is None the model is built from scratch from `preset` (see `openrs_jax.model.config`).
    `overrides` replaces fields of the resulting `ModelConfig` (names checked against it).
    `dtype`, `param_dtype`, `attention_impl` and `remat` are shorthands for the same-named
    `ModelConfig` fields; None keeps the preset's / checkpoint's value.
    `tokenizer_name_or_path` None means `name_or_path`; "builtin:quickstart" is the locally
    built quickstart tokenizer.
    """

    name_or_path: str | None = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    preset: str = "deepseek_r1_distill_qwen_1p5b"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: Literal["bfloat16", "float32", "float16"] | None = "bfloat16"
    # fp32 parameters (master weights) with bf16 compute: Open-RS's DeepSpeed ZeRO-2 bf16 run kept
    # fp32 master weights, and a 1e-6 update is below bf16's resolution (8 bits of mantissa).
    param_dtype: Literal["bfloat16", "float32", "float16"] | None = "float32"
    attention_impl: Literal["auto", "xla", "cudnn"] | None = None
    remat: Literal["none", "full", "dots"] | None = None
    tokenizer_name_or_path: str | None = None

    def __post_init__(self):
        # Imported here: `openrs_jax.model`'s package __init__ imports JAX, and this module is L0.
        from openrs_jax.model.config import PRESETS as MODEL_PRESETS
        from openrs_jax.model.config import ModelConfig

        if self.preset not in MODEL_PRESETS:
            raise ConfigError(
                f"model.preset: unknown preset {self.preset!r}{_did_you_mean(self.preset, MODEL_PRESETS)}; "
                f"known: {', '.join(sorted(MODEL_PRESETS))}"
            )
        known = [f.name for f in dataclasses.fields(ModelConfig)]
        for key in self.overrides:
            if key not in known:
                raise ConfigError(
                    f"model.overrides: unknown ModelConfig field {key!r}{_did_you_mean(key, known)}"
                )

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer comes from: `tokenizer_name_or_path`, else `name_or_path`."""
        path = self.tokenizer_name_or_path or self.name_or_path
        if path is None:
            raise ConfigError("model: set tokenizer_name_or_path when name_or_path is null (a preset)")
        return path

    def model_config_overrides(self) -> dict[str, Any]:
        """`overrides` plus the non-None shorthand fields, as `ModelConfig` keyword arguments.

        Use as `ModelConfig.from_hf_config(hf, **section.model_config_overrides())` for a
        checkpoint; `preset_config()` applies them to the preset.
        """
        out = {}
        for name in ("dtype", "param_dtype", "attention_impl", "remat"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out.update(self.overrides)
        return out

    def preset_config(self) -> ModelConfig:
        """The `ModelConfig` of `preset` with `model_config_overrides()` applied."""
        from openrs_jax.model.config import get_preset

        return get_preset(self.preset, **self.model_config_overrides())


@dataclasses.dataclass(frozen=True)
class MeshSection:
    """Device mesh axis sizes. -1 on (at most) one axis takes the remaining devices.

    `num_devices` None uses every visible device; an int uses the first `num_devices`.
    `rollout_devices` > 0 is the paper's split layout: the last `rollout_devices` of those
    devices form a separate sampling mesh for the `jax` engine (weights are copied to it after
    every update) and the axis sizes above describe the training mesh on the rest; 0 samples
    on the training mesh itself.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    num_devices: int | None = None
    rollout_devices: int = 0

    def __post_init__(self):
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for name, size in sizes.items():
            if size != -1 and size < 1:
                raise ConfigError(f"mesh.{name}: must be >= 1 or -1 (the rest of the devices), got {size}")
        if sum(size == -1 for size in sizes.values()) > 1:
            raise ConfigError(f"mesh: at most one axis may be -1, got {sizes}")
        if self.num_devices is not None and self.num_devices < 1:
            raise ConfigError(f"mesh.num_devices: must be >= 1, got {self.num_devices}")
        if self.rollout_devices < 0:
            raise ConfigError(f"mesh.rollout_devices: must be >= 0, got {self.rollout_devices}")

    def axis_sizes(self, num_devices: int) -> dict[str, int]:
        """Resolves -1 for `num_devices` devices: {"data": d, "fsdp": f, "tensor": t}, d·f·t = n."""
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        known = math.prod(size for size in sizes.values() if size != -1)
        if num_devices % known:
            raise ConfigError(f"mesh: axis sizes {sizes} do not divide the {num_devices} devices")
        sizes = {name: (num_devices // known if size == -1 else size) for name, size in sizes.items()}
        if math.prod(sizes.values()) != num_devices:
            raise ConfigError(f"mesh: axis sizes {sizes} use {math.prod(sizes.values())} of {num_devices} devices")
        return sizes


@dataclasses.dataclass(frozen=True)
class DataSourceConfig:
    """One dataset of a mixture. `path`: hub name, local file (.jsonl/.json/.parquet/.csv),
    `save_to_disk` directory, or "builtin:quickstart". `where` keeps rows whose column equals
    the value (or is in the list), e.g. `{source: deepscaler/train/aime.json}`. `ratio` is the
    share of prompts drawn from this source (normalised over sources)."""

    path: str
    config: str | None = None
    split: str = "train"
    ratio: float = 1.0
    where: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.ratio > 0:
            raise ConfigError(f"data.sources[{self.path!r}].ratio: must be > 0, got {self.ratio}")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Prompts: where they come from and how they are rendered.

    Either `dataset_name` (+ `dataset_config`, `dataset_split`) or a non-empty `sources` list
    (mixed by ratio; then set `dataset_name: null`). Each prompt is the tokenizer's chat template
    applied to [system_prompt, problem] with the generation prompt, plus `<think>\\n` when
    `add_think_prefill`, tokenized and left-truncated to `max_prompt_length` tokens.
    `solution_column` is copied to the examples' `solution` key (the gold the accuracy rewards
    read); `box_solution` wraps it as `$\\boxed{...}$` for bare answers such as "60".
    `shuffle_seed` None uses the run's `seed`.
    """

    dataset_name: str | None = "knoveleng/open-rs"
    dataset_config: str | None = None
    dataset_split: str = "train"
    sources: tuple[DataSourceConfig, ...] = ()
    problem_column: str = "problem"
    solution_column: str | None = "solution"
    box_solution: bool = False
    system_prompt: str | None = None
    max_prompt_length: int = 512
    add_think_prefill: bool = True
    shuffle: bool = True
    shuffle_seed: int | None = None

    def __post_init__(self):
        if self.sources and self.dataset_name is not None:
            raise ConfigError(
                "data: both dataset_name and sources are set; set dataset_name: null to use sources"
            )
        if not self.sources and self.dataset_name is None:
            raise ConfigError("data: set dataset_name or sources")
        if self.max_prompt_length < 1:
            raise ConfigError(f"data.max_prompt_length: must be >= 1, got {self.max_prompt_length}")

    def resolved_sources(self) -> tuple[DataSourceConfig, ...]:
        """`sources`, or the single source named by `dataset_name`."""
        if self.sources:
            return self.sources
        return (DataSourceConfig(path=self.dataset_name, config=self.dataset_config, split=self.dataset_split),)


@dataclasses.dataclass(frozen=True)
class RolloutSection:
    """Sampling. `engine` "jax" is the built-in sampler on the training mesh; "vllm" talks to
    an OpenAI-compatible vLLM server at `vllm_server_url` (started by us when `vllm_launch`,
    with `vllm_server_args` appended, e.g. ["--enforce-eager"]). `top_p` 1.0 and `top_k` 0
    disable those filters. `batch_size` caps the sequences the jax sampler decodes at once
    (None: all P·G). `vllm_sync_dir` None means `<output_dir>/vllm_weights`.
    `decode_attention` picks the jax sampler's attention kernel for decode steps: "pallas"
    (fused, GPUs), "xla" (einsum path, everywhere), "auto" = pallas when sampling on one GPU in
    bf16/fp16 (multi-GPU sampling meshes keep xla unless told "pallas")."""

    engine: Literal["jax", "vllm"] = "jax"
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_completion_length: int = 3584
    batch_size: int | None = None
    decode_attention: Literal["auto", "xla", "pallas"] = "auto"
    vllm_server_url: str = "http://127.0.0.1:8000"
    vllm_launch: bool = False
    vllm_server_args: tuple[str, ...] = ()
    vllm_gpu_memory_utilization: float = 0.7
    vllm_max_model_len: int | None = None
    vllm_sync_dir: str | None = None
    vllm_timeout_s: float = 600.0
    vllm_api_key: str | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError(f"rollout.temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"rollout.top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"rollout.top_k: must be >= 0 (0 disables it), got {self.top_k}")
        if self.max_completion_length < 1:
            raise ConfigError(f"rollout.max_completion_length: must be >= 1, got {self.max_completion_length}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"rollout.batch_size: must be >= 1, got {self.batch_size}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ConfigError(
                f"rollout.vllm_gpu_memory_utilization: must be in (0, 1], got {self.vllm_gpu_memory_utilization}"
            )
        if self.vllm_timeout_s <= 0:
            raise ConfigError(f"rollout.vllm_timeout_s: must be > 0, got {self.vllm_timeout_s}")


@dataclasses.dataclass(frozen=True)
class GRPOSection:
    """The GRPO objective (see `openrs_jax.grpo`).

    `loss_type` "openrs" = token mean within each group, averaged over groups (Open-RS as it
    ran); TRL's "grpo", "bnpo", "dr_grpo", "dapo" are alternatives. `scale_rewards` divides
    advantages by the group std ("group"), the batch std ("batch") or nothing ("none").
    `logprob_temperature` 1.0 is Open-RS (log-probs not divided by the sampling temperature).
    `epsilon_high` None means `epsilon`. `drop_zero_std_groups` is DAPO's dynamic sampling.
    `max_completion_length_schedule` is a list of [step, length]: from `step` on, completions
    are capped at `length` (before the first stage, `rollout.max_completion_length`).
    """

    num_generations: int = 6
    beta: float = 0.04
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: Literal["openrs", "grpo", "bnpo", "dr_grpo", "dapo"] = "openrs"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    advantage_epsilon: float = 1e-4
    logprob_temperature: float = 1.0
    num_iterations: int = 1
    vllm_importance_sampling_correction: bool = False
    vllm_importance_sampling_cap: float = 2.0
    mask_truncated_completions: bool = False
    drop_zero_std_groups: bool = False
    max_completion_length_schedule: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if self.num_generations < 2:
            raise ConfigError(f"grpo.num_generations: must be >= 2 (group std), got {self.num_generations}")
        if self.beta < 0:
            raise ConfigError(f"grpo.beta: must be >= 0, got {self.beta}")
        if self.epsilon <= 0:
            raise ConfigError(f"grpo.epsilon: must be > 0, got {self.epsilon}")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ConfigError(
                f"grpo.epsilon_high: must be >= epsilon ({self.epsilon}), got {self.epsilon_high}"
            )
        if self.advantage_epsilon < 0:
            raise ConfigError(f"grpo.advantage_epsilon: must be >= 0, got {self.advantage_epsilon}")
        if self.logprob_temperature <= 0:
            raise ConfigError(f"grpo.logprob_temperature: must be > 0, got {self.logprob_temperature}")
        if self.num_iterations < 1:
            raise ConfigError(f"grpo.num_iterations: must be >= 1, got {self.num_iterations}")
        if self.vllm_importance_sampling_cap <= 0:
            raise ConfigError(
                f"grpo.vllm_importance_sampling_cap: must be > 0, got {self.vllm_importance_sampling_cap}"
            )
        steps = [step for step, _ in self.max_completion_length_schedule]
        if any(step < 0 for step in steps) or steps != sorted(set(steps)):
            raise ConfigError(
                "grpo.max_completion_length_schedule: steps must be >= 0 and strictly increasing, "
                f"got {list(map(list, self.max_completion_length_schedule))}"
            )
        for step, length in self.max_completion_length_schedule:
            if length < 1:
                raise ConfigError(f"grpo.max_completion_length_schedule: length at step {step} must be >= 1")

    @property
    def resolved_epsilon_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclasses.dataclass(frozen=True)
class RewardsSection:
    """Rewards by registered name (`openrs_jax.rewards`), weighted sum over functions.

    `reward_weights` None means 1.0 each. `reward_kwargs` maps a reward name to keyword
    arguments, e.g. `{cosine: {max_len: 3584}}` (checked against the reward's parameters).
    Rewards run in `num_workers` worker processes (0: in-process) with `timeout_s` per
    completion.
    """

    reward_funcs: tuple[str, ...] = ("format", "accuracy")
    reward_weights: tuple[float, ...] | None = (1.0, 2.0)
    reward_kwargs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    num_workers: int = 4
    timeout_s: float = 10.0

    def __post_init__(self):
        if not self.reward_funcs:
            raise ConfigError("rewards.reward_funcs: at least one reward is needed")
        dupes = sorted({name for name in self.reward_funcs if self.reward_funcs.count(name) > 1})
        if dupes:
            raise ConfigError(f"rewards.reward_funcs: duplicate names {dupes}")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ConfigError(
                f"rewards: reward_weights has {len(self.reward_weights)} entries "
                f"{list(self.reward_weights)} but reward_funcs has {len(self.reward_funcs)} "
                f"{list(self.reward_funcs)}; they must have the same length"
            )
        # Fail at load time, not after the model is loaded. Imported here to keep this module light.
        from openrs_jax.rewards.registry import list_rewards, reward_params

        for name in self.reward_funcs:
            if name not in list_rewards():
                raise ConfigError(
                    f"rewards.reward_funcs: unknown reward {name!r}{_did_you_mean(name, list_rewards())}; "
                    f"known: {', '.join(list_rewards())}"
                )
        for name in self.reward_kwargs:
            if name not in self.reward_funcs:
                raise ConfigError(
                    f"rewards.reward_kwargs: {name!r} is not in reward_funcs {list(self.reward_funcs)}"
                    f"{_did_you_mean(name, self.reward_funcs)}"
                )
        for name, params in self.reward_kwargs.items():
            accepted = reward_params(name)
            for param in params:
                if param not in accepted:
                    raise ConfigError(
                        f"rewards.reward_kwargs.{name}: unknown parameter {param!r}"
                        f"{_did_you_mean(param, accepted)}; {name!r} accepts {', '.join(accepted)}"
                    )
        if self.num_workers < 0:
            raise ConfigError(f"rewards.num_workers: must be >= 0, got {self.num_workers}")
        if self.timeout_s <= 0:
            raise ConfigError(f"rewards.timeout_s: must be > 0, got {self.timeout_s}")

    @property
    def resolved_weights(self) -> tuple[float, ...]:
        return tuple(self.reward_weights) if self.reward_weights is not None else (1.0,) * len(self.reward_funcs)


@dataclasses.dataclass(frozen=True)
class OptimSection:
    """AdamW, learning-rate schedule and batch arithmetic (see the module docstring, 3.).

    `warmup_steps` > 0 overrides `warmup_ratio` (as in HF). `min_lr_rate` is the floor of
    "cosine_with_min_lr" as a fraction of `learning_rate`. `max_grad_norm` None disables
    clipping. `micro_batch_size` and `gradient_accumulation_steps` (completions per micro-batch,
    micro-batches per step): give either, both, or neither (one micro-batch of P·G).
    `max_nonfinite_steps` K: the trainer skips a step whose loss or gradients are not finite and
    stops after K consecutive ones.
    """

    learning_rate: float = 1e-6
    lr_scheduler_type: Literal["cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"] = (
        "cosine_with_min_lr"
    )
    min_lr_rate: float = 0.1
    warmup_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    max_steps: int = 500
    num_prompts_per_step: int = 12
    micro_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    max_nonfinite_steps: int = 3

    def __post_init__(self):
        if self.learning_rate < 0:
            raise ConfigError(f"optim.learning_rate: must be >= 0, got {self.learning_rate}")
        if not 0 <= self.min_lr_rate <= 1:
            raise ConfigError(f"optim.min_lr_rate: must be in [0, 1], got {self.min_lr_rate}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"optim.warmup_ratio: must be in [0, 1], got {self.warmup_ratio}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay: must be >= 0, got {self.weight_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.adam_epsilon <= 0:
            raise ConfigError(f"optim.adam_epsilon: must be > 0, got {self.adam_epsilon}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"optim.max_grad_norm: must be > 0 or null (no clipping), got {self.max_grad_norm}")
        for name in ("max_steps", "num_prompts_per_step", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("micro_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"optim.{name}: must be >= 1, got {getattr(self, name)}")

    @property
    def num_warmup_steps(self) -> int:
        """`warmup_steps` if > 0, else ceil(warmup_ratio · max_steps) (HF's rule: 50 for 0.1 × 500)."""
        return self.warmup_steps if self.warmup_steps > 0 else math.ceil(self.warmup_ratio * self.max_steps)


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    """Orbax checkpoints every `save_steps` steps in `output_dir` (None: checkpoints/<run_name>),
    keeping the newest `save_total_limit` (None: all). `resume` (or the CLI's --resume) restores the newest checkpoint
    in `output_dir` when there is one."""

    output_dir: str | None = None
    save_steps: int = 50
    save_total_limit: int | None = None
    resume: bool = False

    def __post_init__(self):
        if self.save_steps < 1:
            raise ConfigError(f"checkpoint.save_steps: must be >= 1, got {self.save_steps}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"checkpoint.save_total_limit: must be >= 1 or null, got {self.save_total_limit}")


REPORT_TO = ("stdout", "jsonl", "tensorboard")


@dataclasses.dataclass(frozen=True)
class LogSection:
    """Metrics every `logging_steps` steps to the `report_to` sinks; sampled completions to a
    JSONL table when `log_completions`, and `num_completions_to_print` of them to stdout."""

    logging_steps: int = 1
    log_completions: bool = True
    num_completions_to_print: int = 0
    report_to: tuple[Literal["stdout", "jsonl", "tensorboard"], ...] = REPORT_TO

    def __post_init__(self):
        if self.logging_steps < 1:
            raise ConfigError(f"log.logging_steps: must be >= 1, got {self.logging_steps}")
        if self.num_completions_to_print < 0:
            raise ConfigError(f"log.num_completions_to_print: must be >= 0, got {self.num_completions_to_print}")

    @property
    def tensorboard(self) -> bool:
        return "tensorboard" in self.report_to


VALIDATION_METRICS = ("avg@k", "pass@1", "pass@k")


@dataclasses.dataclass(frozen=True)
class ValidationSection:
    """Validation during training (early stopping by selection: the paper's scores peak after
    50-100 steps, then degrade). Empty `benchmarks` turns it off. Every `eval_steps` steps the
    first `limit` problems of each benchmark (`openrs_jax.evaluate`'s names and data, local
    JSONL from `data_dir` or the hub) are sampled with the rollout engine, the step is
    checkpointed, and the best step by `metric` (mean over benchmarks) is recorded in
    `<output_dir>/best_checkpoint.json` and linked as `<output_dir>/best`; checkpoint rotation
    never deletes it."""

    benchmarks: tuple[str, ...] = ()
    eval_steps: int = 50
    data_dir: str | None = None
    limit: int | None = None
    samples: int = 1
    max_new_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    metric: Literal["avg@k", "pass@1", "pass@k"] = "avg@k"

    def __post_init__(self):
        if self.eval_steps < 1:
            raise ConfigError(f"validation.eval_steps: must be >= 1, got {self.eval_steps}")
        if self.samples < 1:
            raise ConfigError(f"validation.samples: must be >= 1, got {self.samples}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"validation.limit: must be >= 1 or null, got {self.limit}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"validation.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.benchmarks:
            from openrs_jax.eval.benchmarks import BENCHMARKS

            for name in self.benchmarks:
                if name not in BENCHMARKS:
                    raise ConfigError(
                        f"validation.benchmarks: unknown benchmark {name!r}{_did_you_mean(name, list(BENCHMARKS))}; "
                        f"known: {', '.join(BENCHMARKS)}"
                    )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; checked as a whole on construction."""

    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    rollout: RolloutSection = dataclasses.field(default_factory=RolloutSection)
    grpo: GRPOSection = dataclasses.field(default_factory=GRPOSection)
    rewards: RewardsSection = dataclasses.field(default_factory=RewardsSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)
    validation: ValidationSection = dataclasses.field(default_factory=ValidationSection)
    seed: int = 42
    run_name: str = "openrs"

    def __post_init__(self):
        if not self.run_name or "/" in self.run_name:
            raise ConfigError(f"run_name: must be a non-empty name without '/', got {self.run_name!r}")
        if self.checkpoint.output_dir is None:
            # Resolved here so the config written into the run directory names the real place.
            object.__setattr__(
                self, "checkpoint", dataclasses.replace(self.checkpoint, output_dir=f"checkpoints/{self.run_name}")
            )
        if self.model.name_or_path is None and self.model.tokenizer_name_or_path is None:
            raise ConfigError("model: set tokenizer_name_or_path when name_or_path is null (a preset)")
        self._check_batch()
        for step, length in self.grpo.max_completion_length_schedule:
            if length > self.rollout.max_completion_length:
                raise ConfigError(
                    f"grpo.max_completion_length_schedule: length {length} at step {step} exceeds "
                    f"rollout.max_completion_length {self.rollout.max_completion_length} (the buffer size)"
                )
        if self.grpo.vllm_importance_sampling_correction and self.rollout.engine != "vllm":
            raise ConfigError(
                "grpo.vllm_importance_sampling_correction needs rollout.engine: vllm "
                f"(got {self.rollout.engine!r})"
            )

    def _check_batch(self):
        p, g = self.optim.num_prompts_per_step, self.grpo.num_generations
        b = p * g
        micro, accum = self.optim.micro_batch_size, self.optim.gradient_accumulation_steps
        arithmetic = (
            f"{p} prompts (optim.num_prompts_per_step) x {g} generations (grpo.num_generations) = {b} "
            "completions per step"
        )
        if micro is not None and accum is not None and micro * accum != b:
            raise ConfigError(
                f"optim: micro_batch_size {micro} x gradient_accumulation_steps {accum} = {micro * accum}, "
                f"but {arithmetic}"
            )
        if micro is not None and b % micro:
            raise ConfigError(f"optim.micro_batch_size {micro} does not divide {arithmetic}")
        if accum is not None and b % accum:
            raise ConfigError(f"optim.gradient_accumulation_steps {accum} does not divide {arithmetic}")
        if self.grpo.loss_type in GROUP_LOSS_TYPES and self.micro_batch_size % g:
            raise ConfigError(
                f"optim.micro_batch_size {self.micro_batch_size} must be a multiple of grpo.num_generations "
                f"{g}: loss_type {self.grpo.loss_type!r} averages tokens within whole groups"
            )
        if self.rollout.batch_size is not None and self.rollout.batch_size % g:
            raise ConfigError(
                f"rollout.batch_size {self.rollout.batch_size} must be a multiple of grpo.num_generations {g}"
            )

    # Batch arithmetic: P prompts x G generations = B completions = micro_batch_size x accum.
    @property
    def completions_per_step(self) -> int:
        return self.optim.num_prompts_per_step * self.grpo.num_generations

    @property
    def micro_batch_size(self) -> int:
        if self.optim.micro_batch_size is not None:
            return self.optim.micro_batch_size
        return self.completions_per_step // (self.optim.gradient_accumulation_steps or 1)

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.completions_per_step // self.micro_batch_size

    def max_completion_length_at(self, step: int) -> int:
        """Completion cap at optimizer step `step` (0-based) under `grpo.max_completion_length_schedule`."""
        length = self.rollout.max_completion_length
        for start, stage_length in self.grpo.max_completion_length_schedule:
            if step >= start:
                length = stage_length
        return length

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------- dict <-> config
def _did_you_mean(key: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _all_qualified_keys(cls: type, prefix: str = "") -> list[str]:
    """'optim.learning_rate'-style names of every leaf field below `cls`."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _all_qualified_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


# TRL / open-r1 recipe keys whose meaning lives under another name here (or nowhere), so that
# an Open-RS recipe pasted in gets a pointer instead of a bare "unknown key".
TRL_KEYS = {
    "model_name_or_path": "model.name_or_path",
    "torch_dtype": "model.dtype",
    "bf16": "model.dtype: bfloat16",
    "attn_implementation": "model.attention_impl",
    "gradient_checkpointing": "model.remat: full",
    "use_vllm": "rollout.engine: vllm",
    "vllm_enforce_eager": "rollout.vllm_server_args: [--enforce-eager]",
    "vllm_device": "the vLLM server's own device (rollout.vllm_launch / vllm_server_url)",
    "per_device_train_batch_size": "optim.micro_batch_size (= per-device batch x devices)",
    "lr_scheduler_kwargs": "optim.min_lr_rate",
    "num_train_epochs": "optim.max_steps (training length is counted in steps)",
    "save_strategy": "checkpoint.save_steps",
    "logging_strategy": "log.logging_steps",
}


def _unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    local = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    suggestions = [f"{where}{name}" for name in local]
    # Also look in the other sections: Open-RS/TRL recipes are flat, so `learning_rate` at the
    # top level or under the wrong section should point at `optim.learning_rate`.
    leaves = {}
    for qualified in _all_qualified_keys(RunConfig):
        leaves.setdefault(qualified.rsplit(".", 1)[-1], []).append(qualified)
    for leaf in difflib.get_close_matches(key, list(leaves), n=3, cutoff=0.6):
        suggestions += [q for q in leaves[leaf] if q not in suggestions]
    if not suggestions:  # nothing close: still name the nearest keys, here or in any section
        candidates = {f"{where}{name}": name for name in names}
        candidates.update({q: q.rsplit(".", 1)[-1] for q in _all_qualified_keys(RunConfig)})
        score = lambda q: difflib.SequenceMatcher(None, key, candidates[q]).ratio()  # noqa: E731
        suggestions = sorted(candidates, key=score, reverse=True)[:3]
    full = f"{where}{key}"
    trl = f" (TRL/open-r1's {key!r} is {TRL_KEYS[key]} here)" if key in TRL_KEYS else ""
    return ConfigError(
        f"unknown config key {full!r}{trl}; closest keys: {', '.join(repr(s) for s in suggestions[:4])}"
    )


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list [{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(hint)[1])}"
    if hint is Any:
        return "any"
    if dataclasses.is_dataclass(hint):
        return f"mapping ({hint.__name__})"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, where: str, shown: Any = None) -> Any:
    """Checks `value` against the type hint `hint`, converting YAML shapes (list -> tuple,
    int -> float, "1e-6" -> float, mapping -> dataclass). Raises ConfigError naming `where`
    and the expected type (`shown`, when `hint` is one member of that Optional)."""

    def fail(extra: str = "") -> ConfigError:
        return ConfigError(
            f"{where}: expected {_type_name(shown or hint)}, got {type(value).__name__} {value!r}{extra}"
        )

    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:  # Optional[X]: X's message (with its hints), naming "X or null"
            return _coerce(value, members[0], where, shown=hint)
        for arg in members:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise fail()
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) is type(choices[0]):
            return value
        extra = _did_you_mean(value, choices) if isinstance(value, str) else ""
        raise fail(extra)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `1e-6` (no dot) as a string; accept numeric strings.
            try:
                return float(value)
            except ValueError:
                pass
        raise fail()
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f" (needs {len(args)} entries)")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce(k, key_hint, f"{where} key"): _coerce(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise fail()
        return from_dict(hint, value, prefix=f"{where}.")
    raise TypeError(f"{where}: unsupported type hint {hint!r}")  # a bug in this module


def from_dict(cls: type, raw: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds dataclass `cls` from a (YAML) mapping: unknown keys, wrong types and failed
    validations raise ConfigError naming the key (`prefix` + field name)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key_error(cls, str(key), prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: missing required key(s) {missing}")
    return cls(**kwargs)


def config_to_dict(config: Any) -> Any:
    """Plain YAML/JSON-ready data (dicts, lists, scalars) of a config dataclass."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def dump_yaml(config: RunConfig, path: str | pathlib.Path | None = None) -> str:
    """The resolved config as YAML text (written to `path` if given); `load_config` reads it back
    to an equal RunConfig."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True, width=100)
    if path is not None:
        pathlib.Path(path).write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------- overrides, loading
def parse_override(override: str) -> tuple[list[str], Any]:
    """"a.b=c" -> (["a", "b"], yaml.safe_load("c")). An empty value is null."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. optim.learning_rate=1e-6")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {e}") from None
    return key.split("."), value


def apply_override(raw: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Sets `raw[path[0]][path[1]]... = value` in place, creating mappings on the way; an
    integer part indexes an existing list (`data.sources.0.ratio=0.3`)."""
    node: Any = raw
    for depth, part in enumerate(path[:-1]):
        where = ".".join(path[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where)]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {'.'.join(path)}: {where} is {child!r}, not a mapping")
        node = child
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"--set {where}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def recipe_path(path_or_name: str | pathlib.Path) -> pathlib.Path:
    """A YAML file path, or a recipe name ("openrs3", "quickstart") among the shipped recipes
    (`openrs_jax/configs/`, also reachable as the repository's `configs/`)."""
    path = pathlib.Path(path_or_name)
    if path.is_file():
        return path
    candidate = CONFIGS_DIR / f"{path_or_name}.yaml"
    if path.suffix == "" and candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")) if CONFIGS_DIR.is_dir() else []
    raise ConfigError(f"config file {str(path_or_name)!r} not found (recipes in {CONFIGS_DIR}: {', '.join(known)})")


def load_config(path_or_name: str | pathlib.Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Reads a YAML recipe (a path or a recipe name; None: the CPU quickstart), applies
    `--set`-style overrides ("a.b=c", value parsed as YAML) in order, and validates.

    `run_name` defaults to the file's stem when the file does not set it.
    """
    path = recipe_path(DEFAULT_RECIPE if path_or_name is None else path_or_name)
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.setdefault("run_name", path.stem)
    for override in overrides:
        apply_override(raw, *parse_override(override))
    try:
        return from_dict(RunConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
