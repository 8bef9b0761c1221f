"""One EOS / pad rule (`openrs_jax.data.eos_and_pad`): training, `evaluate` and `generate` agree.

Each entry point is asked the way it asks at run time: the trainer with the run's ModelConfig,
`evaluate` and `generate` with a loaded model or, for a vLLM engine, an HF directory's
config.json.
"""

from __future__ import annotations

import json
import shutil
import types

import pytest

from openrs_jax import evaluate, generate
from openrs_jax.config import ConfigError
from openrs_jax.data import eos_and_pad, load_tokenizer
from openrs_jax.model import ModelConfig, get_preset
from openrs_jax.trainer import setup

R1_EOS = 151643  # <｜end▁of▁sentence｜>, also the R1-distill tokenizer's pad
USER, ASSISTANT, THINK_END = 151644, 151645, 151649


def _hf_dir(tmp_path, tokenizer_src, model_cfg: ModelConfig, tokenizer_edit=None):
    """An HF directory: the tokenizer files (optionally edited) and the config.json."""
    d = tmp_path / "model"
    shutil.copytree(tokenizer_src, d)
    if tokenizer_edit is not None:
        path = d / "tokenizer_config.json"
        path.chmod(0o644)
        config = json.loads(path.read_text())
        tokenizer_edit(config)
        path.write_text(json.dumps(config))
    (d / "config.json").write_text(json.dumps(model_cfg.to_hf_config()))
    return d


def _three_entry_points(tokenizer, model_cfg: ModelConfig, hf_dir):
    model = types.SimpleNamespace(config=model_cfg)  # what the loaded NNX model exposes
    return {
        "train": setup.eos_and_pad(tokenizer, model_cfg),
        "evaluate (model)": evaluate.eos_and_pad(evaluate.LoadedModel("m", tokenizer, model=model)),
        "evaluate (hf dir)": evaluate.eos_and_pad(evaluate.LoadedModel("m", tokenizer, hf_dir=hf_dir)),
        "generate (model)": generate.eos_and_pad(model, tokenizer, hf_dir),
        "generate (hf dir)": generate.eos_and_pad(None, tokenizer, hf_dir),
    }


def test_r1_tokenizer_all_entry_points_agree(shared_data, tmp_path):
    cfg = get_preset("tiny", vocab_size=151936, eos_token_id=R1_EOS)
    hf_dir = _hf_dir(tmp_path, shared_data / "tokenizer-qwen2", cfg)
    tokenizer = load_tokenizer(hf_dir)
    got = _three_entry_points(tokenizer, cfg, hf_dir)
    assert all(v == ([R1_EOS], R1_EOS) for v in got.values()), got


def test_several_eos_ids_and_no_pad_token_all_entry_points_agree(shared_data, tmp_path):
    # A Llama-3.1-like set-up: the tokenizer's EOS is one id, the model config lists three (one
    # of them the tokenizer's), and there is no pad token.
    def edit(config):
        config["eos_token"] = "<｜Assistant｜>"
        config.pop("pad_token", None)

    cfg = get_preset("tiny", vocab_size=151936, eos_token_id=[R1_EOS, ASSISTANT, THINK_END])
    hf_dir = _hf_dir(tmp_path, shared_data / "tokenizer-qwen2", cfg, edit)
    tokenizer = load_tokenizer(hf_dir)
    assert tokenizer.eos_token_id == ASSISTANT and tokenizer.pad_token_id is None
    got = _three_entry_points(tokenizer, cfg, hf_dir)
    want = ([ASSISTANT, R1_EOS, THINK_END], ASSISTANT)  # tokenizer's first, no repeat; pad = first EOS
    assert all(v == want for v in got.values()), got


def test_no_eos_anywhere_is_an_error_at_every_entry_point(tmp_path):
    tokenizer = types.SimpleNamespace(eos_token_id=None, pad_token_id=None)
    cfg = get_preset("tiny", eos_token_id=None)
    with pytest.raises(ValueError, match="EOS"):
        eos_and_pad(tokenizer, None)
    with pytest.raises(ConfigError, match="EOS"):
        setup.eos_and_pad(tokenizer, cfg)
    model = types.SimpleNamespace(config=cfg)
    with pytest.raises(SystemExit, match="EOS"):
        evaluate.eos_and_pad(evaluate.LoadedModel("m", tokenizer, model=model))
    with pytest.raises(ValueError, match="EOS"):
        generate.eos_and_pad(model, tokenizer, None)
