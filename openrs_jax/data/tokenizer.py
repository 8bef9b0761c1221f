"""Tokenizer loading and prompt rendering.

Layer L0 (no JAX). A prompt is the tokenizer's chat template (or `chat_template`, open-r1's
override) applied to [system (optional), user = problem] with the generation prompt, plus the
`<think>\\n` prefill:
for the R1-distill template that is
`<｜begin▁of▁sentence｜>{system}<｜User｜>{problem}<｜Assistant｜><think>\\n`.
The template already writes the BOS token as text, so the text is encoded without adding
special tokens again. A conversational prompt (TRL's format: a list of `{"role", "content"}`
messages) is rendered as given, the system prompt put first when it has none.

Departures from TRL / open-r1:
  1. A directory holding `tokenizer.json` is loaded as `PreTrainedTokenizerFast(tokenizer_file=...)`
     with the special tokens and chat template of `tokenizer_config.json`, not through
     `AutoTokenizer`: DeepSeek's R1-distill config names `LlamaTokenizerFast`, and some
     transformers versions then swap in a Metaspace pre-tokenizer that drops spaces
     ("Find the sum" -> `Find`, `thes`, `um`). A round-trip check rejects any tokenizer that
     still loses spaces.
  2. Left truncation keeps the last `max_prompt_length` tokens, as TRL does, but the example's
     `prompt_text` is then the decoded kept tokens so text and ids always agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

BUILTIN_PREFIX = "builtin:"
THINK_PREFILL = "<think>\n"
# Spaces, digits and punctuation a broken pre-tokenizer would mangle; decode(encode(x)) == x
# must hold for every byte-level tokenizer we train with.
_ROUNDTRIP_TEXT = "Find the sum of all integer bases $b>9$ for which 17 divides 97."
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model")


def _token_content(token: Any) -> str | None:
    """tokenizer_config.json writes special tokens as strings or AddedToken dicts."""
    if isinstance(token, dict):
        return token.get("content")
    return token


def _read_chat_template(directory: pathlib.Path, config: dict[str, Any]) -> str | None:
    # transformers >= 4.43 saves the template in its own file; older ones inline it.
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    as_json = directory / "chat_template.json"
    if as_json.is_file():
        return json.loads(as_json.read_text(encoding="utf-8"))["chat_template"]
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t["name"]: t["template"] for t in template}
        template = named.get("default", next(iter(named.values()), None))
    return template


def _load_from_tokenizer_json(directory: pathlib.Path):
    from transformers import PreTrainedTokenizerFast

    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    special_map_path = directory / "special_tokens_map.json"
    special_map = json.loads(special_map_path.read_text(encoding="utf-8")) if special_map_path.is_file() else {}
    kwargs = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = _token_content(config.get(name, special_map.get(name)))
        if value is not None:
            kwargs[name] = value
    if "model_max_length" in config:
        kwargs["model_max_length"] = config["model_max_length"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **kwargs)
    template = _read_chat_template(directory, config)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def _check_roundtrip(tokenizer, source: str) -> None:
    ids = tokenizer(_ROUNDTRIP_TEXT, add_special_tokens=False)["input_ids"]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        return  # a closed vocabulary (word level): it cannot round-trip arbitrary text by design
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if text.strip() != _ROUNDTRIP_TEXT:
        raise ValueError(
            f"tokenizer {source!r} does not round-trip text: {_ROUNDTRIP_TEXT!r} decodes back as {text!r} "
            "(a Metaspace pre-tokenizer dropping spaces?); give a directory with the model's tokenizer.json"
        )


def load_tokenizer(path_or_name: str | os.PathLike):
    """An HF fast tokenizer for a local directory, a .gguf file, an HF hub id or
    "builtin:quickstart".

    Directories with a `tokenizer.json` load it directly (see the module docstring, 1.); a hub
    id downloads the tokenizer files and does the same. Raises ValueError if the result does not
    round-trip plain text.
    """
    name = str(path_or_name)
    if name.startswith(BUILTIN_PREFIX):
        builtin = name[len(BUILTIN_PREFIX):]
        if builtin != "quickstart":
            raise ValueError(f"unknown builtin tokenizer {name!r}; known: 'builtin:quickstart'")
        from openrs_jax.data.quickstart import build_quickstart_tokenizer

        return build_quickstart_tokenizer()
    directory = pathlib.Path(name)
    if directory.suffix.lower() == ".gguf" and directory.expanduser().is_file():
        directory = directory.expanduser()
        # A GGUF file carries its tokenizer and chat template; transformers converts them
        # (as `openrs_jax.weights.gguf` does for the directory it writes beside the weights).
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory.parent), gguf_file=directory.name)
        _check_roundtrip(tokenizer, name)
        return tokenizer
    if not directory.exists():
        directory = _download_tokenizer_files(name)
    if not directory.is_dir():
        raise ValueError(f"tokenizer path {name!r} is not a directory")
    if (directory / "tokenizer.json").is_file():
        tokenizer = _load_from_tokenizer_json(directory)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    _check_roundtrip(tokenizer, name)
    return tokenizer


def eos_and_pad(tokenizer: Any, model_eos: int | Sequence[int] | None) -> tuple[list[int], int]:
    """The one rule for stop and padding tokens: training, `evaluate` and `generate` all use it.

    tokenizer: an HF tokenizer (its `eos_token_id`, `pad_token_id`).
    model_eos: the model config's `eos_token_id` (config.json's, or the preset's): an int, a
      list or tuple of ints (e.g. Llama 3.1 lists three) or None.
    Returns (EOS ids, pad id). EOS ids: the tokenizer's EOS, then the model config's, in order,
    without repeats; a completion ends at the first of any of them. Pad: the tokenizer's pad
    token, else the first EOS id (what TRL and HF `generate` fall back to).
    Raises ValueError when neither names an EOS token.

    generation_config.json is not read: a training-run directory has only the model config,
    so reading it for HF directories alone would let evaluation stop on tokens training never
    stopped on. Our export writes generation_config.json's eos_token_id equal to the config's.
    """
    eos: list[int] = []
    candidates = [tokenizer.eos_token_id]
    candidates += model_eos if isinstance(model_eos, (list, tuple)) else [model_eos]
    for token in candidates:
        if token is not None and int(token) not in eos:
            eos.append(int(token))
    if not eos:
        raise ValueError("neither the tokenizer nor the model config defines an EOS token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    return eos, int(pad)


def _download_tokenizer_files(repo_id: str) -> pathlib.Path:
    try:
        from huggingface_hub import snapshot_download

        return pathlib.Path(snapshot_download(repo_id, allow_patterns=list(_TOKENIZER_FILES)))
    except Exception as e:  # offline, unknown repo, gated repo: say which tokenizer and why
        raise ValueError(
            f"tokenizer {repo_id!r} is neither a local directory nor downloadable from the Hugging Face hub "
            f"({type(e).__name__}: {e})"
        ) from e


@dataclasses.dataclass(frozen=True)
class PromptFormatter:
    """Renders and tokenizes prompts: `encode(problem) -> (ids, text)`.

    ids: the template text encoded without added special tokens, left-truncated to the last
    `max_prompt_length` tokens; text: the rendered prompt (decoded kept ids when truncated).
    """

    tokenizer: Any
    system_prompt: str | None = None
    add_think_prefill: bool = True
    max_prompt_length: int = 512
    chat_template: str | None = None  # used instead of the tokenizer's (None: the tokenizer's)
    # Encode the rendered text with the tokenizer's special tokens added (`tokenizer(text)`), as
    # lighteval's vLLM backend did: for R1-distill a BOS before the template's own (two BOS).
    add_special_tokens: bool = False

    def __post_init__(self):
        if self.chat_template is None and getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"tokenizer {getattr(self.tokenizer, 'name_or_path', '')!r} has no chat template "
                "(tokenizer_config.json `chat_template` or chat_template.jinja)"
            )
        if self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be >= 1, got {self.max_prompt_length}")

    def messages(self, prompt: str | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The chat of one prompt: [system (optional), user = prompt] for a problem text; a
        conversational prompt (list of messages) as given, the system prompt first when it has
        no system message of its own."""
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [dict(m) for m in prompt]
        if self.system_prompt is not None and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def render(self, problem: str | Sequence[dict[str, Any]]) -> str:
        """The chat-template text of one prompt, generation prompt (and prefill) included."""
        kwargs = {} if self.chat_template is None else {"chat_template": self.chat_template}
        text = self.tokenizer.apply_chat_template(self.messages(problem), tokenize=False, add_generation_prompt=True,
                                                  **kwargs)
        # Newer R1-distill templates end the generation prompt with the prefill already.
        if self.add_think_prefill and not text.endswith(THINK_PREFILL):
            text += THINK_PREFILL
        return text

    def encode(self, problem: str | Sequence[dict[str, Any]]) -> tuple[list[int], str]:
        text = self.render(problem)
        ids = list(self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"])
        if len(ids) > self.max_prompt_length:
            ids = ids[-self.max_prompt_length:]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return ids, text
