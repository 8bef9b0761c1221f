"""HF safetensors ↔ NNX through one key table (`keys.KEY_TABLE`); GGUF files in (`gguf`)."""

from openrs_jax.weights.hf import (
    WeightsError,
    generation_config,
    hf_dir,
    load_hf,
    load_model_config,
    read_hf_config,
    save_hf,
    to_hf_state_dict,
    write_safetensors,
)
from openrs_jax.weights.keys import KEY_TABLE

__all__ = [
    "KEY_TABLE",
    "WeightsError",
    "generation_config",
    "hf_dir",
    "load_hf",
    "load_model_config",
    "read_hf_config",
    "save_hf",
    "to_hf_state_dict",
    "write_safetensors",
]
