"""`python -m openrs_jax.generate` on a tiny HF directory."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

from openrs_jax.data import build_quickstart_tokenizer
from openrs_jax.model import Qwen2, tiny
from openrs_jax.weights import save_hf


def test_generate_cli_json(tmp_path):
    tok = build_quickstart_tokenizer()
    model = Qwen2(tiny(vocab_size=len(tok), eos_token_id=tok.eos_token_id), rngs=nnx.Rngs(3))
    save_hf(model, tmp_path / "hf", tokenizer=tok)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.generate", "--model", str(tmp_path / "hf"), "--prompt", "max 3 7",
         "--max-new-tokens", "5", "--temperature", "0", "--num-samples", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(l) for l in proc.stdout.splitlines()]
    assert len(rows) == 2
    assert rows[0]["token_ids"] == rows[1]["token_ids"]  # greedy: both samples agree
    r = rows[0]
    assert 1 <= len(r["token_ids"]) <= 5 and len(r["logprobs"]) == len(r["token_ids"])
    assert r["text"] == tok.decode(r["token_ids"], skip_special_tokens=True)
    # Greedy log-probs are the model's log-softmax at the argmax: compare with a full forward.
    seq = jnp.asarray([r["prompt_token_ids"] + r["token_ids"]], jnp.int32)
    logp = np.asarray(jnp.log(jnp.exp(model(seq)[0]) / jnp.exp(model(seq)[0]).sum(-1, keepdims=True)))
    p = len(r["prompt_token_ids"])
    want = [logp[p - 1 + j, t] for j, t in enumerate(r["token_ids"])]
    np.testing.assert_allclose(r["logprobs"], want, atol=1e-4)


def test_generate_cli_bad_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "openrs_jax.generate", "--model", str(tmp_path), "--prompt", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr


def test_generate_raw_tokenizes_like_the_tokenizer_and_vllm(tmp_path, shared_data):
    """--raw text gets the tokenizer's own special tokens, as `tokenizer(text)` and vLLM's
    /v1/completions add them: a BOS for the R1-distill tokenizer."""
    from openrs_jax.data import load_tokenizer

    tok = load_tokenizer(shared_data / "tokenizer-qwen2")
    model = Qwen2(tiny(vocab_size=len(tok), hidden_size=32, intermediate_size=32, num_heads=2, num_kv_heads=1,
                       tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id),
                  rngs=nnx.Rngs(0))
    save_hf(model, tmp_path / "hf", tokenizer=tok)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    text = "Find the sum of all integer bases $b>9$"
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.generate", "--model", str(tmp_path / "hf"), "--prompt", text, "--raw",
         "--max-new-tokens", "2", "--temperature", "0", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["prompt_token_ids"] == tok(text)["input_ids"] == [tok.bos_token_id] + tok(text, add_special_tokens=False)[
        "input_ids"]
    assert "generate: 1/1 [" in proc.stderr  # progress on stderr, stdout stays JSON
