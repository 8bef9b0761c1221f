"""The CPU quickstart task: local tokenizer, generated dataset, and their fit with the recipe."""

import itertools

import pytest
from transformers import AutoTokenizer

from openrs_jax.config import load_config
from openrs_jax.data import PromptFormatter, build_prompt_iterator, build_quickstart_tokenizer, load_tokenizer, quickstart_dataset
from openrs_jax.data.quickstart import SPECIAL_TOKENS, VOCAB
from openrs_jax.rewards.registry import get_reward


@pytest.fixture(scope="module")
def tokenizer():
    return build_quickstart_tokenizer()


def test_tokenizer_ids_and_decoding(tokenizer):
    assert len(tokenizer) == len(VOCAB) == 23
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id) == (0, 0, 1, 2)
    assert tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>", "0", "9", "max"]) == [3, 4, 5, 14, 15]
    ids = tokenizer("max 3 7", add_special_tokens=False)["input_ids"]
    assert ids == [15, 8, 12] and tokenizer.decode(ids) == "max 3 7"
    assert tokenizer("max 3 banana", add_special_tokens=False)["input_ids"] == [15, 8, 2]
    assert tokenizer.decode([12, 0], skip_special_tokens=True) == "7"


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    formatter = PromptFormatter(tokenizer, add_think_prefill=False)
    expected = formatter.encode("max 3 7")
    assert expected == ([1, 3, 15, 8, 12, 4], "<bos><|user|>max 3 7<|assistant|>")
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert PromptFormatter(loaded, add_think_prefill=False).encode("max 3 7") == expected
        assert loaded.get_vocab() == tokenizer.get_vocab()
        assert (loaded.eos_token, loaded.pad_token, loaded.bos_token) == ("<eos>", "<eos>", "<bos>")
        assert loaded.decode([12, 0], skip_special_tokens=True) == "7"


def test_dataset_is_deterministic_and_correct():
    a, b, c = quickstart_dataset(200, 0), quickstart_dataset(200, 0), quickstart_dataset(200, 1)
    assert a.to_list() == b.to_list() and a["problem"] != c["problem"]
    assert quickstart_dataset(50, 0).to_list() == a.to_list()[:50]  # a prefix of the same draw
    for row in a:
        word, x, y = row["problem"].split()
        assert word == "max" and row["answer"] == str(max(int(x), int(y)))
    assert len(set(a["problem"])) > 80  # covers most of the 100 digit pairs
    with pytest.raises(ValueError, match="n must be >= 1"):
        quickstart_dataset(0, 0)


def test_random_policy_sometimes_solves_it_and_a_constant_answer_does_not(tokenizer):
    """Over the V^2 two-token samples (the recipe's max_completion_length), exact_match
    accepts the answer digit then any of the 5 special tokens, or one of the 4 non-EOS special
    tokens then the digit (decoding drops special tokens; EOS ends a completion): 9 of 529,
    1.7%, for a uniform policy. Always answering "9" scores ~19%; so a mean reward >= 0.8
    needs the comparison."""
    config = load_config("quickstart")
    assert config.rollout.max_completion_length == 2 and config.rewards.reward_funcs == ("exact_match",)
    reward = get_reward("exact_match")
    vocab_size = len(tokenizer)
    eos = tokenizer.eos_token_id
    samples = list(itertools.product(range(vocab_size), repeat=2))
    completions = [tokenizer.decode(list(pair[:1] if pair[0] == eos else pair), skip_special_tokens=True)
                   for pair in samples]
    rate = sum(reward(completions, answer=["7"] * len(completions))) / len(samples)
    assert rate == pytest.approx((2 * len(SPECIAL_TOKENS) - 1) / vocab_size**2)
    assert 0.005 < rate < 0.2
    train = quickstart_dataset(4096, 0)
    constant = sum(reward(["9"] * len(train), answer=train["answer"])) / len(train)
    assert 0.15 < constant < 0.25


def test_quickstart_recipe_matches_the_tokenizer(tokenizer):
    config = load_config("quickstart")
    model = config.model.preset_config()
    assert model.vocab_size == len(tokenizer)
    assert (model.eos_token_id, model.bos_token_id) == (tokenizer.eos_token_id, tokenizer.bos_token_id)
    iterator = build_prompt_iterator(config.data, load_tokenizer(config.model.tokenizer_path), seed=config.seed)
    batch = iterator.next_batch(config.optim.num_prompts_per_step)
    assert len(batch) == 16
    for example in batch:
        assert len(example["prompt_ids"]) <= config.data.max_prompt_length
        assert len(example["prompt_ids"]) + config.rollout.max_completion_length <= model.max_position_embeddings
        assert max(example["prompt_ids"]) < model.vocab_size
    right = [tokenizer.decode(tokenizer.convert_tokens_to_ids([e["answer"], "<eos>"]), skip_special_tokens=True) for e in batch]
    assert get_reward("exact_match")(right, answer=[e["answer"] for e in batch]) == [1.0] * 16
