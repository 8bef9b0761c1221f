"""The run configuration's schema: one frozen dataclass per subsystem (layer L0: no JAX).

A `RunConfig` is composed of `model`, `mesh`, `data`, `rollout`, `grpo`, `rewards`, `optim`,
`checkpoint`, `log` and `validation` sections plus a top-level `seed` and `run_name`. Every
field carries its help text and bounds as metadata (`fields.field`); `loader` reads YAML
recipes and `--set` overrides into these classes. Field names follow TRL's `GRPOConfig` /
open-r1's `GRPOScriptArguments` wherever the meaning is the same (`learning_rate`,
`num_generations`, `max_completion_length`, `reward_funcs`, `reward_weights`, `beta`,
`temperature`, `save_steps`, ...), so an Open-RS recipe reads the same here, only grouped by
section.

The defaults are the Open-RS recipe as it ran (exp 2/3; docs/design.md "Semantics to reproduce");
the recipes in `configs/` spell every value out.

Where we depart from TRL/HfArgumentParser:
  1. An unknown key is an error that names it and its closest matches (TRL silently ignored
     Open-RS's `vllm_enforce_eager`).
  2. A value of the wrong type, out of its range or not finite (NaN, inf) is an error naming
     the key. YAML ints are accepted for floats, and strings such as "1e-6" (PyYAML reads
     `1e-6` without a dot as a string) are parsed as floats.
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
import typing
from typing import Any, Iterable, Literal

from openrs_jax.config.fields import ConfigError, Section, check_fields, field

if typing.TYPE_CHECKING:
    from openrs_jax.model.config import ModelConfig

LOSS_TYPES = ("openrs", "grpo", "bnpo", "dr_grpo", "dapo")
# Loss aggregations that average tokens within each group: a micro-batch must hold whole groups.
GROUP_LOSS_TYPES = ("openrs",)
REPORT_TO = ("stdout", "jsonl", "tensorboard", "wandb")
DEFAULT_REPORT_TO = ("stdout", "jsonl", "tensorboard")
VALIDATION_METRICS = ("avg@k", "pass@1", "pass@k")
SAMPLING_IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def did_you_mean(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


# ---------------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class ModelSection(Section):
    """Which model to train: a checkpoint (`name_or_path`) or a preset built from scratch."""

    _prefix = "model."

    name_or_path: str | None = field(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        help="HF hub id, local HF directory (config.json + safetensors) or GGUF file; null builds `preset` "
             "from scratch (random weights)")
    preset: str = field("deepseek_r1_distill_qwen_1p5b",
                        help="model shape when name_or_path is null (openrs_jax.model.config.PRESETS)")
    overrides: dict[str, Any] = field(default_factory=dict,
                                      help="ModelConfig fields to replace, e.g. {num_layers: 4}")
    dtype: Literal["bfloat16", "float32", "float16"] | None = field(
        "bfloat16", help="compute dtype; null keeps the preset's / checkpoint's")
    # fp32 parameters (master weights) with bf16 compute: Open-RS's DeepSpeed ZeRO-2 bf16 run kept
    # fp32 master weights, and a 1e-6 update is below bf16's resolution (8 bits of mantissa).
    param_dtype: Literal["bfloat16", "float32", "float16"] | None = field(
        "float32", help="parameter (master weight) dtype; null keeps the preset's / checkpoint's")
    attention_impl: Literal["auto", "xla", "cudnn"] | None = field(
        None, help="training attention kernel: cudnn (GPU flash), xla, auto; null keeps the preset's")
    remat: Literal["none", "full", "dots"] | None = field(
        None, help="activation rematerialisation of the update: none, full, dots; null keeps the preset's")
    tokenizer_name_or_path: str | None = field(
        None, help="tokenizer source; null means name_or_path ('builtin:quickstart' is the toy tokenizer)")

    def _check(self):
        # Imported here: `openrs_jax.model`'s package __init__ imports JAX, and this module is L0.
        from openrs_jax.model.config import PRESETS as MODEL_PRESETS
        from openrs_jax.model.config import ModelConfig

        if self.preset not in MODEL_PRESETS:
            raise ConfigError(
                f"model.preset: unknown preset {self.preset!r}{did_you_mean(self.preset, MODEL_PRESETS)}; "
                f"known: {', '.join(sorted(MODEL_PRESETS))}"
            )
        known = [f.name for f in dataclasses.fields(ModelConfig)]
        for key in self.overrides:
            if key not in known:
                raise ConfigError(f"model.overrides: unknown ModelConfig field {key!r}{did_you_mean(key, known)}")

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer comes from: `tokenizer_name_or_path`, else `name_or_path`."""
        path = self.tokenizer_name_or_path or self.name_or_path
        if path is None:
            raise ConfigError("model: set tokenizer_name_or_path when name_or_path is null (a preset)")
        return path

    def model_config_overrides(self) -> dict[str, Any]:
        """`overrides` plus the non-None shorthand fields, as `ModelConfig` keyword arguments."""
        out = {name: getattr(self, name) for name in ("dtype", "param_dtype", "attention_impl", "remat")
               if getattr(self, name) is not None}
        out.update(self.overrides)
        return out

    def preset_config(self) -> ModelConfig:
        """The `ModelConfig` of `preset` with `model_config_overrides()` applied."""
        from openrs_jax.model.config import get_preset

        return get_preset(self.preset, **self.model_config_overrides())


@dataclasses.dataclass(frozen=True)
class MeshSection(Section):
    """Device mesh axis sizes; -1 on (at most) one axis takes the remaining devices."""

    _prefix = "mesh."

    data: int = field(-1, ge=-1, help="data-parallel axis size (-1: the rest of the devices)")
    fsdp: int = field(1, ge=-1, help="FSDP axis size: parameters and optimizer state sharded over it")
    tensor: int = field(1, ge=-1, help="tensor-parallel axis size")
    num_devices: int | None = field(None, ge=1, help="use the first N visible devices (null: all)")
    rollout_devices: int = field(
        0, ge=0,
        help="the paper's split layout: the last N devices form a separate sampling mesh for the jax engine "
             "(weights copied to it after every update); 0 samples on the training mesh")

    def _check(self):
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for name, size in sizes.items():
            if size == 0:
                raise ConfigError(f"mesh.{name}: must be >= 1 or -1 (the rest of the devices), got {size}")
        if sum(size == -1 for size in sizes.values()) > 1:
            raise ConfigError(f"mesh: at most one axis may be -1, got {sizes}")

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
class DataSourceConfig(Section):
    """One dataset of a mixture."""

    def __post_init__(self):
        check_fields(self, f"data.sources[{self.path!r}].")

    path: str = field(help="hub name, local file (.jsonl/.json/.parquet/.csv), save_to_disk directory, "
                           "or 'builtin:quickstart'")
    config: str | None = field(None, help="the dataset's configuration name (hub datasets)")
    split: str = field("train", help="dataset split")
    ratio: float = field(1.0, gt=0, help="share of prompts drawn from this source (normalised over sources)")
    where: dict[str, Any] = field(default_factory=dict,
                                  help="keep rows whose column equals the value (or is in the list), "
                                       "e.g. {source: deepscaler/train/aime.json}")


@dataclasses.dataclass(frozen=True)
class DataSection(Section):
    """Prompts: where they come from and how they are rendered.

    Each prompt is the tokenizer's chat template applied to [system_prompt, problem] with the
    generation prompt, plus `<think>\\n` when `add_think_prefill`, tokenized and left-truncated
    to `max_prompt_length` tokens.
    """

    _prefix = "data."

    dataset_name: str | None = field("knoveleng/open-rs", help="the one prompt source (null: use `sources`)")
    dataset_config: str | None = field(None, help="configuration name of dataset_name")
    dataset_split: str = field("train", help="split of dataset_name")
    sources: tuple[DataSourceConfig, ...] = field((), help="a mixture of sources by ratio (set dataset_name: null)")
    problem_column: str = field("problem", help="the column holding the problem text")
    solution_column: str | None = field("solution", help="copied to the examples' `solution` key (the gold "
                                                         "the accuracy rewards read); null: none")
    box_solution: bool = field(False, help="wrap the solution as $\\boxed{...}$ (for bare answers such as '60')")
    system_prompt: str | None = field(None, help="system message of the chat template (null: none)")
    chat_template: str | None = field(None, help="a Jinja chat template used instead of the tokenizer's (open-r1's "
                                                 "chat_template; null: the tokenizer's own)")
    max_prompt_length: int = field(512, ge=1, help="prompts are left-truncated to this many tokens")
    add_think_prefill: bool = field(True, help="append '<think>\\n' after the generation prompt (R1 models)")
    bad_rows: Literal["error", "skip"] = field(
        "error", help="a row that cannot be read or lacks its columns: error (stop before the first step, naming "
                      "file and line) or skip (drop it, one warning per source)")
    shuffle: bool = field(True, help="shuffle the prompts (per epoch, seeded)")
    shuffle_seed: int | None = field(None, help="shuffle seed (null: the run's seed)")

    def _check(self):
        if self.sources and self.dataset_name is not None:
            raise ConfigError("data: both dataset_name and sources are set; set dataset_name: null to use sources")
        if not self.sources and self.dataset_name is None:
            raise ConfigError("data: set dataset_name or sources")

    def resolved_sources(self) -> tuple[DataSourceConfig, ...]:
        """`sources`, or the single source named by `dataset_name`."""
        if self.sources:
            return self.sources
        if self.dataset_name is None:  # __post_init__ lets neither be missing
            raise ConfigError("data: set dataset_name or sources")
        return (DataSourceConfig(path=self.dataset_name, config=self.dataset_config, split=self.dataset_split),)


@dataclasses.dataclass(frozen=True)
class RolloutSection(Section):
    """Sampling: the engine and its settings."""

    _prefix = "rollout."

    engine: Literal["jax", "vllm"] = field(
        "jax", help="jax: the built-in sampler on the training mesh; vllm: an OpenAI-compatible vLLM server")
    mode: Literal["sync", "one_step_off", "async"] = field(
        "sync", help="sync: sample, then update (on-policy); one_step_off: batch k+1 is sampled with the weights "
                     "before update k, while update k runs (deterministic); async: the sampler runs ahead and takes "
                     "new weights between decode segments, batches older than max_staleness are dropped. The "
                     "overlapped modes apply the sampler importance-sampling correction")
    max_staleness: int = field(
        2, ge=1, help="async: the most optimizer steps a batch's oldest token may lag the weights it trains")
    temperature: float = field(0.7, ge=0, help="sampling temperature (0: greedy)")
    top_p: float = field(1.0, gt=0, le=1, help="nucleus sampling mass (1.0: off)")
    top_k: int = field(0, ge=0, help="top-k filter (0: off)")
    max_completion_length: int = field(3584, ge=1, help="completion tokens per sample (the buffer size)")
    batch_size: int | None = field(None, ge=1, help="sequences the jax sampler decodes at once (null: all P·G)")
    decode_attention: Literal["auto", "xla", "pallas"] = field(
        "auto", help="jax sampler decode attention: pallas (fused, GPUs), xla (everywhere), auto = pallas when "
                     "sampling on one GPU in bf16/fp16")
    vllm_server_url: str = field("http://127.0.0.1:8000", help="the vLLM server (engine: vllm)")
    vllm_launch: bool = field(False, help="start a vLLM server ourselves (with vllm_server_args appended)")
    vllm_server_args: tuple[str, ...] = field((), help="extra server arguments, e.g. [--enforce-eager]")
    vllm_gpu_memory_utilization: float = field(0.7, gt=0, le=1, help="--gpu-memory-utilization of a launched server")
    vllm_max_model_len: int | None = field(None, ge=1, help="--max-model-len of a launched server")
    vllm_sync_dir: str | None = field(None, help="where weights are written for the server (null: "
                                                 "<output_dir>/vllm_weights)")
    vllm_timeout_s: float = field(600.0, gt=0, help="seconds one generation request may take")
    vllm_api_key: str | None = field(None, help="bearer token of the vLLM server")


@dataclasses.dataclass(frozen=True)
class GRPOSection(Section):
    """The GRPO objective (see `openrs_jax.grpo`)."""

    _prefix = "grpo."

    num_generations: int = field(6, ge=2, note="a group needs 2 samples for its std",
                                 help="G: completions sampled per prompt")
    beta: float = field(0.04, ge=0, help="KL coefficient (k3 estimator against the initial policy); 0 drops "
                                         "the reference pass")
    epsilon: float = field(0.2, gt=0, help="clip range: ρ in [1 − ε, 1 + ε_high]")
    epsilon_high: float | None = field(None, help="upper clip range (null: epsilon; DAPO's clip-higher)")
    loss_type: Literal["openrs", "grpo", "bnpo", "dr_grpo", "dapo"] = field(
        "openrs", help="aggregation: openrs = token mean within each group, mean over groups (Open-RS as it "
                       "ran); TRL's grpo, bnpo, dr_grpo, dapo")
    scale_rewards: Literal["group", "batch", "none"] = field(
        "group", help="divide advantages by the group std, the batch std, or nothing (Dr. GRPO)")
    advantage_epsilon: float = field(1e-4, ge=0, help="added to the std before dividing (TRL: 1e-4)")
    logprob_temperature: float = field(1.0, gt=0, help="log-probs of logits / T (1.0: Open-RS; TRL divides by "
                                                       "the sampling temperature)")
    num_iterations: int = field(1, ge=1, help="μ: updates per batch (>1 adds the old-policy pass)")
    importance_sampling_level: Literal["token", "sequence"] = field(
        "token", help="importance ratio per token (GRPO) or per sequence (GSPO)")
    vllm_importance_sampling_correction: bool = field(
        False, help="weight the loss by the trainer/sampler probability ratio (sampler log-probs as the "
                    "behaviour policy)")
    vllm_importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = (
        field("sequence_mask", help="how the sampler ratio is computed (token or sequence) and capped "
                                    "(truncate: min(r, cap); mask: 0 above cap); TRL's default"))
    vllm_importance_sampling_cap: float = field(3.0, gt=0, help="cap of the sampler importance ratio (TRL: 3.0)")
    mask_truncated_completions: bool = field(False, help="leave completions cut at the length limit out of the loss")
    drop_zero_std_groups: bool = field(False, help="DAPO dynamic sampling: replace groups whose rewards are all "
                                                   "equal by freshly sampled ones")
    max_completion_length_schedule: tuple[tuple[int, int], ...] = field(
        (), help="[[step, length], ...]: from `step` on, completions are capped at `length`")

    def _check(self):
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ConfigError(f"grpo.epsilon_high: must be >= epsilon ({self.epsilon}), got {self.epsilon_high}")
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
class RewardsSection(Section):
    """Rewards by registered name (`openrs_jax.rewards`), weighted sum over functions."""

    _prefix = "rewards."

    reward_funcs: tuple[str, ...] = field(("format", "accuracy"), help="registered reward names")
    reward_weights: tuple[float, ...] | None = field((1.0, 2.0), help="one weight per reward (null: 1.0 each)")
    reward_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=dict, help="keyword arguments per reward, e.g. {cosine: {max_len: 3584}}")
    num_workers: int = field(4, ge=0, help="reward worker processes (0: in-process)")
    timeout_s: float = field(10.0, gt=0, help="seconds per completion before a reward gives up")

    def _check(self):
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
        from openrs_jax.rewards.registry import is_reward, list_rewards, reward_params

        for name in self.reward_funcs:
            if not is_reward(name):
                raise ConfigError(
                    f"rewards.reward_funcs: unknown reward {name!r}{did_you_mean(name, list_rewards())}; "
                    f"known: {', '.join(list_rewards())}"
                )
        for name in self.reward_kwargs:
            if name not in self.reward_funcs:
                raise ConfigError(
                    f"rewards.reward_kwargs: {name!r} is not in reward_funcs {list(self.reward_funcs)}"
                    f"{did_you_mean(name, self.reward_funcs)}"
                )
        for name, params in self.reward_kwargs.items():
            accepted = reward_params(name)
            for param in params:
                if param not in accepted:
                    raise ConfigError(
                        f"rewards.reward_kwargs.{name}: unknown parameter {param!r}"
                        f"{did_you_mean(param, accepted)}; {name!r} accepts {', '.join(accepted)}"
                    )

    @property
    def resolved_weights(self) -> tuple[float, ...]:
        return tuple(self.reward_weights) if self.reward_weights is not None else (1.0,) * len(self.reward_funcs)


@dataclasses.dataclass(frozen=True)
class OptimSection(Section):
    """AdamW, learning-rate schedule and batch arithmetic (module docstring, 3.)."""

    _prefix = "optim."

    learning_rate: float = field(1e-6, ge=0, help="peak learning rate")
    lr_scheduler_type: Literal["cosine_with_min_lr", "cosine", "linear", "constant", "constant_with_warmup"] = field(
        "cosine_with_min_lr", help="HF schedule after the linear warm-up")
    min_lr_rate: float = field(0.1, ge=0, le=1, help="floor of cosine_with_min_lr as a fraction of learning_rate")
    warmup_ratio: float = field(0.1, ge=0, le=1, help="warm-up steps as a fraction of max_steps")
    warmup_steps: int = field(0, ge=0, help="warm-up steps; > 0 overrides warmup_ratio (as in HF)")
    weight_decay: float = field(0.0, ge=0, help="decoupled weight decay (AdamW)")
    adam_beta1: float = field(0.9, ge=0, lt=1, help="Adam β1")
    adam_beta2: float = field(0.999, ge=0, lt=1, help="Adam β2")
    adam_epsilon: float = field(1e-8, gt=0, help="Adam ε (outside the square root, as torch)")
    max_grad_norm: float | None = field(1.0, gt=0, note="or null: no clipping", help="global-norm clip (null: none)")
    max_steps: int = field(500, ge=1, help="optimizer steps of the run")
    num_train_epochs: float | None = field(
        None, gt=0, help="train this many passes over the prompts instead (TRL's max_steps: -1): max_steps becomes "
                         "ceil(epochs x (rows // num_prompts_per_step)) once the data is read; null: max_steps")
    num_prompts_per_step: int = field(12, ge=1, help="P: prompts per optimizer step")
    micro_batch_size: int | None = field(None, ge=1, help="completions per micro-batch (null: from "
                                                          "gradient_accumulation_steps)")
    gradient_accumulation_steps: int | None = field(None, ge=1, help="micro-batches per step (null: from "
                                                                     "micro_batch_size, else 1)")
    max_nonfinite_steps: int = field(3, ge=1, help="stop after this many consecutive steps with a non-finite "
                                                   "loss or gradient (each is skipped)")

    @property
    def num_warmup_steps(self) -> int:
        """`warmup_steps` if > 0, else ceil(warmup_ratio · max_steps) (HF's rule: 50 for 0.1 × 500)."""
        return self.warmup_steps if self.warmup_steps > 0 else math.ceil(self.warmup_ratio * self.max_steps)


@dataclasses.dataclass(frozen=True)
class CheckpointSection(Section):
    """Orbax checkpoints of the run (everything needed to resume)."""

    _prefix = "checkpoint."

    output_dir: str | None = field(None, help="the run directory (null: checkpoints/<run_name>)")
    save_steps: int = field(50, ge=1, help="save every N steps (and at the end, on a signal, at validation)")
    save_strategy: Literal["steps", "epoch"] = field(
        "steps", help="steps: every save_steps; epoch: once per pass over the prompts (save_steps = rows // "
                      "num_prompts_per_step, set when the data is read)")
    save_total_limit: int | None = field(None, ge=1, note="or null: keep all", help="keep the newest N checkpoints")
    resume: bool = field(False, help="restore the newest checkpoint in output_dir (as --resume)")
    save_hf: bool = field(False, help="also write every saved step as a Hugging Face directory, <output_dir>/hf/"
                                      "step-N (transformers, vLLM and lighteval load it as is; rotated with "
                                      "save_total_limit)")


@dataclasses.dataclass(frozen=True)
class LogSection(Section):
    """Metrics and sampled completions."""

    _prefix = "log."

    logging_steps: int = field(1, ge=1, help="log metrics every N steps")
    log_completions: bool = field(True, help="write sampled completions to completions.jsonl")
    num_completions_to_print: int = field(0, ge=0, help="completions printed to stdout per logged step")
    report_to: tuple[Literal["stdout", "jsonl", "tensorboard", "wandb"], ...] = field(
        DEFAULT_REPORT_TO, help="metric sinks; tensorboard and wandb get TRL's tags (train/<metric>, "
                                "train/global_step) and wandb the completions table (pip install 'openrs-jax[wandb]')")
    wandb_project: str | None = field(None, help="W&B project (null: $WANDB_PROJECT, else openrs-jax)")
    wandb_entity: str | None = field(None, help="W&B entity (null: $WANDB_ENTITY / your default)")
    log_unique_prompts: bool = field(False, help="W&B completions table: one row per prompt (TRL's "
                                                 "log_unique_prompts)")

    @property
    def tensorboard(self) -> bool:
        return "tensorboard" in self.report_to

    def _check(self):
        dupes = sorted({sink for sink in self.report_to if self.report_to.count(sink) > 1})
        if dupes:
            raise ConfigError(f"log.report_to: {dupes} listed twice")


@dataclasses.dataclass(frozen=True)
class ValidationSection(Section):
    """Validation during training (selection of the best step: the paper's scores peak after
    50-100 steps, then degrade). Every `eval_steps` steps the first `limit` problems of each
    benchmark are sampled with the rollout engine, the step is checkpointed, and the best step
    by `metric` (mean over benchmarks) is recorded in `<output_dir>/best_checkpoint.json` and
    linked as `<output_dir>/best`; checkpoint rotation never deletes it."""

    _prefix = "validation."

    benchmarks: tuple[str, ...] = field((), help="benchmark names of `evaluate` (empty: no validation)")
    eval_steps: int = field(50, ge=1, help="validate every N steps")
    data_dir: str | None = field(None, help="local benchmark JSONL directory (null: the hub)")
    limit: int | None = field(None, ge=1, help="first N problems of each benchmark (null: all)")
    samples: int = field(1, ge=1, help="samples per problem")
    max_new_tokens: int = field(4096, ge=1, help="completion tokens per sample")
    temperature: float = field(0.6, ge=0, help="sampling temperature")
    top_p: float = field(0.95, gt=0, le=1, help="nucleus sampling mass")
    metric: Literal["avg@k", "pass@1", "pass@k"] = field("avg@k", help="what selects the best step")

    def _check(self):
        if self.benchmarks:
            from openrs_jax.eval.benchmarks import BENCHMARKS

            for name in self.benchmarks:
                if name not in BENCHMARKS:
                    raise ConfigError(
                        f"validation.benchmarks: unknown benchmark {name!r}{did_you_mean(name, list(BENCHMARKS))}; "
                        f"known: {', '.join(BENCHMARKS)}"
                    )


@dataclasses.dataclass(frozen=True)
class RunConfig(Section):
    """Everything one training run needs; checked as a whole on construction."""

    model: ModelSection = field(default_factory=ModelSection, help="the model")
    mesh: MeshSection = field(default_factory=MeshSection, help="the device mesh")
    data: DataSection = field(default_factory=DataSection, help="the prompts")
    rollout: RolloutSection = field(default_factory=RolloutSection, help="sampling")
    grpo: GRPOSection = field(default_factory=GRPOSection, help="the objective")
    rewards: RewardsSection = field(default_factory=RewardsSection, help="the rewards")
    optim: OptimSection = field(default_factory=OptimSection, help="optimizer and batch")
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection, help="checkpoints")
    log: LogSection = field(default_factory=LogSection, help="metrics")
    validation: ValidationSection = field(default_factory=ValidationSection, help="validation during training")
    seed: int = field(42, help="the run's seed: initial weights, data order, sampling")
    run_name: str = field("openrs", help="the run's name (default: the recipe file's stem)")

    def _check(self):
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
        if self.grpo.vllm_importance_sampling_correction and self.rollout.engine != "vllm" and self.rollout.mode == "sync":
            raise ConfigError(
                "grpo.vllm_importance_sampling_correction needs rollout.engine: vllm "
                f"(got {self.rollout.engine!r}) or an overlapped rollout.mode"
            )
        r = self.rollout
        if (self.sampler_correction and r.engine == "vllm" and self.grpo.logprob_temperature != 1.0
                and (self.grpo.logprob_temperature != r.temperature or r.top_p < 1.0 or r.top_k > 0)):
            raise ConfigError(
                f"grpo.logprob_temperature {self.grpo.logprob_temperature}: the sampler correction with a vLLM server "
                "needs the sampler's log-probs at that temperature, and vLLM returns them at 1.0 (raw) or at the "
                f"sampling distribution (rollout.temperature {r.temperature}, no top-p/top-k): use one of those"
            )
        if self.rollout.mode != "sync" and self.grpo.drop_zero_std_groups:
            raise ConfigError(
                f"grpo.drop_zero_std_groups (DAPO dynamic sampling) is not supported with rollout.mode "
                f"{self.rollout.mode!r}: its extra sampling rounds would stall the overlapped sampler; use mode: sync"
            )

    @property
    def sampler_logprobs_mode(self) -> str:
        """The `--logprobs-mode` a vLLM server must run with for this run: raw_logprobs (T = 1)
        when the loss compares with the trainer's temperature-1 log-probs and the sampling
        distribution differs from that; else processed_logprobs (the sampling distribution)."""
        r = self.rollout
        sampled_at_one = r.temperature == 1.0 and r.top_p == 1.0 and r.top_k == 0
        if self.sampler_correction and self.grpo.logprob_temperature == 1.0 and not sampled_at_one:
            return "raw_logprobs"
        return "processed_logprobs"

    @property
    def sampler_correction(self) -> bool:
        """Whether the loss weights tokens by the trainer/sampler probability ratio: asked for
        (`grpo.vllm_importance_sampling_correction`), or implied by an overlapped rollout mode
        (the sampler's weights lag the trainer's: its log-probs are the behaviour policy)."""
        return self.grpo.vllm_importance_sampling_correction or self.rollout.mode != "sync"

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

    def for_dataset(self, num_rows: int) -> "RunConfig":
        """This config with its epoch-based settings resolved for `num_rows` prompts (rows of all
        sources): one epoch is max(rows // num_prompts_per_step, 1) steps (HF drops the last
        partial batch too); `optim.num_train_epochs` sets max_steps = ceil(epochs x that) and
        `checkpoint.save_strategy: epoch` sets save_steps to it. Unchanged without either."""
        per_epoch = max(num_rows // self.optim.num_prompts_per_step, 1)
        optim, ckpt = self.optim, self.checkpoint
        if optim.num_train_epochs is not None:
            optim = dataclasses.replace(optim, max_steps=max(1, math.ceil(optim.num_train_epochs * per_epoch)))
        if ckpt.save_strategy == "epoch":
            ckpt = dataclasses.replace(ckpt, save_steps=per_epoch)
        return self if (optim, ckpt) == (self.optim, self.checkpoint) else self.replace(optim=optim, checkpoint=ckpt)

    def max_completion_length_at(self, step: int) -> int:
        """Completion cap at optimizer step `step` (0-based) under `grpo.max_completion_length_schedule`."""
        length = self.rollout.max_completion_length
        for start, stage_length in self.grpo.max_completion_length_schedule:
            if step >= start:
                length = stage_length
        return length

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)
