"""TRL's conversational prompts (a `prompt` column of chat messages) and open-r1's
`chat_template` override, through the same checked prompt stream as problem texts."""

import json

import pytest

from openrs_jax.config import load_config
from openrs_jax.data import DataError, PromptFormatter, build_prompt_iterator, load_tokenizer

SYSTEM = "Think, then answer."


@pytest.fixture(scope="module")
def r1_tokenizer(shared_data):
    return load_tokenizer(shared_data / "tokenizer-qwen2")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stream(path, tokenizer, *overrides):
    cfg = load_config("openrs3", [f"data.dataset_name={path}", "data.problem_column=prompt", *overrides])
    return build_prompt_iterator(cfg.data, tokenizer, seed=0, bad_rows=cfg.data.bad_rows, warn=lambda msg: None)


def test_a_conversation_renders_like_the_problem_with_the_system_prompt(tmp_path, r1_tokenizer):
    rows = [{"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {i}+1?"}],
             "solution": f"${i + 1}$"} for i in range(4)]
    data = stream(write_jsonl(tmp_path / "chat.jsonl", rows), r1_tokenizer, "data.shuffle=false")
    examples = data.next_batch(4)
    plain = PromptFormatter(r1_tokenizer, system_prompt=SYSTEM, add_think_prefill=True, max_prompt_length=512)
    for i, example in enumerate(examples):
        ids, text = plain.encode(f"What is {i}+1?")
        assert (example["prompt_ids"], example["prompt_text"]) == (ids, text)
        assert example["problem"] == f"What is {i}+1?"  # the last user message, for rewards
        assert example["solution"] == f"${i + 1}$"
    assert text.startswith("<｜begin▁of▁sentence｜>Think, then answer.<｜User｜>What is 3+1?<｜Assistant｜>")


def test_system_prompt_goes_first_only_without_one_in_the_conversation(r1_tokenizer):
    fmt = PromptFormatter(r1_tokenizer, system_prompt=SYSTEM, add_think_prefill=False)
    user = [{"role": "user", "content": "hi"}]
    assert fmt.messages(user) == [{"role": "system", "content": SYSTEM}, *user]
    own = [{"role": "system", "content": "Other."}, *user]
    assert fmt.messages(own) == own


def test_bad_conversations_stop_the_stream_before_step_one(tmp_path, r1_tokenizer):
    rows = [{"prompt": [{"role": "user", "content": "fine"}], "solution": "1"},
            {"prompt": [{"role": "assistant", "content": "no user"}], "solution": "1"},
            {"prompt": [{"role": "user", "text": "no content"}], "solution": "1"}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(DataError) as e:
        stream(path, r1_tokenizer)
    message = str(e.value)
    assert f"{path}, line 2: column 'prompt' holds a list that is not a conversation (no user message)" in message
    assert "1 more bad rows" in message
    data = stream(path, r1_tokenizer, "data.bad_rows=skip", "data.shuffle=false")
    assert [e["problem"] for e in data.next_batch(2)] == ["fine", "fine"]


def test_chat_template_override_is_used(tmp_path, r1_tokenizer):
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
    rows = [{"problem": "2+2?", "solution": "$4$"}]
    data = stream(write_jsonl(tmp_path / "t.jsonl", rows), r1_tokenizer, "data.problem_column=problem",
                  f"data.chat_template={json.dumps(template)}", "data.add_think_prefill=false")
    assert data.next_batch(1)[0]["prompt_text"] == f"[system] {load_config('openrs3').data.system_prompt}\n" \
                                                   "[user] 2+2?\n[assistant]"
