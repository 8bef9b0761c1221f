"""Run configuration (layer L0: no JAX): the schema (`schema`), field help and constraints
(`fields`), and reading/writing recipes (`loader`)."""

from openrs_jax.config.fields import ConfigError
from openrs_jax.config.loader import (
    CONFIGS_DIR,
    DEFAULT_RECIPE,
    TRL_KEYS,
    apply_override,
    config_to_dict,
    describe_fields,
    dump_yaml,
    field_rows,
    from_dict,
    load_config,
    parse_override,
    recipe_path,
)
from openrs_jax.config.schema import (
    GROUP_LOSS_TYPES,
    LOSS_TYPES,
    REPORT_TO,
    SAMPLING_IS_MODES,
    VALIDATION_METRICS,
    CheckpointSection,
    DataSection,
    DataSourceConfig,
    GRPOSection,
    LogSection,
    MeshSection,
    ModelSection,
    OptimSection,
    RewardsSection,
    RolloutSection,
    RunConfig,
    ValidationSection,
)

__all__ = [
    "CONFIGS_DIR", "DEFAULT_RECIPE", "GROUP_LOSS_TYPES", "LOSS_TYPES", "REPORT_TO", "SAMPLING_IS_MODES",
    "TRL_KEYS", "VALIDATION_METRICS", "CheckpointSection", "ConfigError", "DataSection", "DataSourceConfig",
    "GRPOSection", "LogSection", "MeshSection", "ModelSection", "OptimSection", "RewardsSection",
    "RolloutSection", "RunConfig", "ValidationSection", "apply_override", "config_to_dict", "describe_fields",
    "dump_yaml", "field_rows", "from_dict", "load_config", "parse_override", "recipe_path",
]
