"""Run configuration (layer L0: no JAX): the schema (`schema`), field help and constraints
(`fields`), reading/writing recipes (`loader`), and flat TRL / open-r1 recipes (`trl`)."""

from openrs_jax.config.fields import ConfigError
from openrs_jax.config.loader import (
    CONFIGS_DIR,
    DEFAULT_RECIPE,
    apply_override,
    config_to_dict,
    describe_fields,
    dump_yaml,
    field_rows,
    from_dict,
    load_config,
    load_recipe,
    parse_override,
    read_recipe,
    recipe_path,
)
from openrs_jax.config.schema import (
    GROUP_LOSS_TYPES,
    LOSS_TYPES,
    REPORT_TO,
    SAMPLING_IS_MODES,
    DEFAULT_REPORT_TO,
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
from openrs_jax.config.trl import TRL_KEYS, Conversion, convert, is_trl_recipe

__all__ = [
    "CONFIGS_DIR", "DEFAULT_RECIPE", "DEFAULT_REPORT_TO", "GROUP_LOSS_TYPES", "LOSS_TYPES", "REPORT_TO", "SAMPLING_IS_MODES",
    "TRL_KEYS", "VALIDATION_METRICS", "CheckpointSection", "ConfigError", "Conversion", "DataSection", "DataSourceConfig",
    "GRPOSection", "LogSection", "MeshSection", "ModelSection", "OptimSection", "RewardsSection",
    "RolloutSection", "RunConfig", "ValidationSection", "apply_override", "config_to_dict", "convert",
    "describe_fields", "dump_yaml", "field_rows", "from_dict", "is_trl_recipe", "load_config", "load_recipe",
    "parse_override", "read_recipe", "recipe_path",
]
