"""The CPU quickstart task: a word-level tokenizer and a generated "max of two digits" dataset.

Layer L0 (no JAX). Built locally, no download. With `data.dataset_name: "builtin:quickstart"`
and `model.tokenizer_name_or_path: "builtin:quickstart"` (configs/quickstart.yaml) a fresh
CPU-only machine trains a tiny Qwen2 from scratch with GRPO and an exact-match reward.

Task: problem "max 3 7", answer "7" (the larger of two uniform digits). A completion is right
when it decodes (special tokens skipped) to exactly the answer: the answer token, then EOS,
within `max_completion_length` 2. A uniform random policy over the V = 23 tokens is right
with probability 9/V² ≈ 1.7% (the right digit then any of the 5 special tokens, which
decoding drops, or a non-EOS special token then the digit); the best constant answer ("9")
scores 19%, so a mean reward >= 0.8 means the policy compares the digits.

With configs/quickstart.yaml (tiny Qwen2, G=8, 16 prompts/step, lr 2e-3 cosine to 0.1x,
β=0.04, 300 steps), a plain GRPO loop over this project's model, JAX sampler, `exact_match`
reward and `grpo_loss` took the mean reward (over 20 steps) from 0.02-0.03 to 0.91-0.95 at
step 300 for seeds 1, 3, 7 and 42, in about 20 s on 2 CPU cores.
"""

from __future__ import annotations

import numpy as np

EOS, BOS, UNK = "<eos>", "<bos>", "<unk>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = (EOS, BOS, UNK, USER, ASSISTANT)  # ids 0..4; EOS is also the pad token
WORDS = tuple(str(d) for d in range(10)) + ("max", "min", "sum", "of", "and", "+", "=", "?")
VOCAB = SPECIAL_TOKENS + WORDS

# Like the R1-distill template: BOS, the system prompt, user turn, then the assistant marker.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Splits of "builtin:quickstart": generated rows and their seed (the test split is a
# different draw; with 100 possible problems the two overlap, as any draw would).
QUICKSTART_SPLITS = {"train": {"n": 4096, "seed": 0}, "test": {"n": 512, "seed": 1}}


def build_quickstart_tokenizer():
    """A `transformers.PreTrainedTokenizerFast` over `VOCAB` (word level, whitespace split).

    ids: `<eos>`=0 (eos and pad), `<bos>`=1, `<unk>`=2, `<|user|>`=3, `<|assistant|>`=4, then
    the digits "0".."9" = 5..14 and a few words. Decoding joins tokens with spaces, so
    "max 3 7" round-trips. `save_pretrained` writes a directory that `load_tokenizer` and
    `AutoTokenizer` read back.
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(VOCAB)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Special tokens are matched before pre-tokenization, so "<|user|>max 3 7" splits right.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def quickstart_dataset(n: int, seed: int):
    """`n` rows {id, problem: "max a b", answer: str(max(a, b))}, a and b uniform digits drawn
    with `numpy.random.default_rng(seed)`; the same (n, seed) gives the same rows."""
    import datasets

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    digits = np.random.default_rng(seed).integers(0, 10, size=(n, 2))
    return datasets.Dataset.from_dict(
        {
            "id": [f"quickstart-{seed}-{i}" for i in range(n)],
            "problem": [f"max {a} {b}" for a, b in digits.tolist()],
            "answer": [str(max(a, b)) for a, b in digits.tolist()],
        }
    )
