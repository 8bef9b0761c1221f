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


def source_generation_config(name_or_path: str | None) -> dict | None:
    """The generation_config.json of the model a run started from, or None (a preset, or a hub
    id whose files are not in the local cache). Never downloads: a trained model's export
    copies what its source shipped (R1-distill: sampling at 0.6 / 0.95)."""
    import json

    if name_or_path is None:
        return None
    path = pathlib.Path(name_or_path).expanduser() / "generation_config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name_or_path, "generation_config.json")
        except Exception:  # noqa: BLE001 — not a valid repo id: nothing cached
            cached = None
        if not isinstance(cached, str):
            return None
        path = pathlib.Path(cached)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
