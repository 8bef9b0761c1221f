"""Prompt rendering and tokenization with the real R1-distill tokenizer (../shared/data)."""

import json
import shutil

import pytest
import tokenizers

from openrs_jax.data import PromptFormatter, load_tokenizer

SAMPLE = "Find the sum of all integer bases $b>9$"
SAMPLE_IDS = [151646, 9885, 279, 2629, 315, 678, 7546, 23092, 400, 65, 29, 24, 3]
BOS, USER, ASSISTANT, THINK, EOS = 151646, 151644, 151645, 151648, 151643


@pytest.fixture(scope="module")
def tokenizer_dir(shared_data):
    return shared_data / "tokenizer-qwen2"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def raw(tokenizer_dir):
    return tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def system_prompt(shared_data):
    return json.loads((shared_data / "openrs_prompts.json").read_text())["train_system_prompt_exp3"]


def test_special_tokens_and_sample_ids(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, EOS)
    assert tokenizer(SAMPLE)["input_ids"] == SAMPLE_IDS
    assert tokenizer(SAMPLE, add_special_tokens=False)["input_ids"] == SAMPLE_IDS[1:]


def test_rendered_prompt_and_ids_match_tokenizer_json(tokenizer, raw, system_prompt):
    problem = SAMPLE + " that divide $97_b$."
    formatter = PromptFormatter(tokenizer, system_prompt=system_prompt, add_think_prefill=True, max_prompt_length=512)
    ids, text = formatter.encode(problem)
    assert text == f"<｜begin▁of▁sentence｜>{system_prompt}<｜User｜>{problem}<｜Assistant｜><think>\n"
    assert "\\boxed{{}}" in text
    assert ids == raw.encode(text, add_special_tokens=False).ids
    assert ids[0] == BOS and ids.count(BOS) == 1
    assert ids[-3:] == [ASSISTANT, THINK, 198]  # 198 = "\n"
    assert ids[ids.index(USER) + 1: ids.index(USER) + 13] == SAMPLE_IDS[1:]


def test_no_system_prompt_and_no_prefill(tokenizer):
    formatter = PromptFormatter(tokenizer, system_prompt=None, add_think_prefill=False)
    ids, text = formatter.encode("What is 1+1?")
    assert text == "<｜begin▁of▁sentence｜><｜User｜>What is 1+1?<｜Assistant｜>"
    assert ids[:2] == [BOS, USER] and ids[-1] == ASSISTANT


def test_prefill_is_not_doubled_when_the_template_has_it(tokenizer_dir, tmp_path):
    # The current HF revision of the R1-distill template ends with "<｜Assistant｜><think>\n".
    tok = load_tokenizer(tokenizer_dir)
    tok.chat_template = tok.chat_template.replace("{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}")
    assert PromptFormatter(tok, add_think_prefill=False).render("Q").endswith("<｜Assistant｜><think>\n")
    text = PromptFormatter(tok, add_think_prefill=True).render("Q")
    assert text == "<｜begin▁of▁sentence｜><｜User｜>Q<｜Assistant｜><think>\n"


def test_left_truncation_keeps_the_last_tokens(tokenizer, raw):
    problem = " ".join(["one two three"] * 100)
    full_ids, full_text = PromptFormatter(tokenizer, max_prompt_length=4096).encode(problem)
    ids, text = PromptFormatter(tokenizer, max_prompt_length=50).encode(problem)
    assert len(full_ids) > 50 and ids == full_ids[-50:]
    assert full_text.endswith(text) and text.endswith("<｜Assistant｜><think>\n")
    assert raw.encode(text, add_special_tokens=False).ids == ids


def test_metaspace_tokenizer_that_drops_spaces_is_rejected(tokenizer_dir, tmp_path):
    # docs/design.md "Traps": a Metaspace pre-tokenizer on this vocabulary turns "Find the sum" into
    # `Find`, `thes`, `um`; load_tokenizer must refuse such a tokenizer.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="does not round-trip text"):
        load_tokenizer(tmp_path)


def test_missing_tokenizer_names_it(tmp_path):
    with pytest.raises(ValueError, match="'no-such-org/no-such-tokenizer'"):
        load_tokenizer("no-such-org/no-such-tokenizer")
    with pytest.raises(ValueError, match="unknown builtin tokenizer 'builtin:nope'"):
        load_tokenizer("builtin:nope")


def test_formatter_needs_a_chat_template(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        PromptFormatter(tok)
