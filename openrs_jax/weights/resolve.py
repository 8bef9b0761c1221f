"""Where a run's model comes from: a local HF directory, a GGUF file or a hub id, and its ModelConfig."""

from __future__ import annotations

import os
import pathlib

from openrs_jax.config import ConfigError, RunConfig
from openrs_jax.model import ModelConfig


def resolve_model_dir(name_or_path: str) -> pathlib.Path:
    """A local HF directory, a .gguf file's dequantised HF directory (converted once, cached;
    `openrs_jax.weights.gguf`), or a hub id downloaded (once, cached) with huggingface_hub."""
    p = pathlib.Path(name_or_path).expanduser()
    if p.exists():
        from openrs_jax.weights.hf import hf_dir

        return hf_dir(p)
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path and name_or_path.count("/") > 1:
        raise ConfigError(f"model.name_or_path: {name_or_path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return pathlib.Path(
            snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
        )
    except Exception as e:  # noqa: BLE001 — no network, unknown repo, ...
        raise ConfigError(
            f"model.name_or_path: {name_or_path!r} is not a local directory and could not be downloaded "
            f"from the Hugging Face hub ({type(e).__name__}: {e}); pass a local HF directory"
        ) from None


def model_config_for(cfg: RunConfig) -> ModelConfig:
    """The ModelConfig of a run: the checkpoint's config.json, or the preset; with overrides."""
    if cfg.model.name_or_path is None:
        return cfg.model.preset_config()
    from openrs_jax.weights.hf import load_model_config

    return load_model_config(resolve_model_dir(cfg.model.name_or_path), **cfg.model.model_config_overrides())
