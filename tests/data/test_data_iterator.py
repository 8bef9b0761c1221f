"""The prompt stream: seeded shuffling, epochs, mixing ratios, resumable cursor."""

import collections
import json

import pytest

from openrs_jax.data import PromptFormatter, PromptIterator, box_answer, build_quickstart_tokenizer, quickstart_dataset


@pytest.fixture(scope="module")
def formatter():
    return PromptFormatter(build_quickstart_tokenizer(), add_think_prefill=False, max_prompt_length=16)


def rows(n, tag):
    return [{"problem": f"max {i % 10} {i // 10 % 10}", "answer": str(i), "solution": str(i), "tag": tag} for i in range(n)]


def make(formatter, sources, ratios=None, seed=0, shuffle=True, **kwargs):
    names = [f"s{k}" for k in range(len(sources))]
    return PromptIterator(sources, formatter, names=names, ratios=ratios, seed=seed, shuffle=shuffle, **kwargs)


def ids(batch):
    return [(e["tag"], e["answer"]) for e in batch]


def test_examples_carry_prompt_and_all_columns(formatter):
    iterator = make(formatter, [rows(5, "a")], shuffle=False)
    first = iterator.next_batch(1)[0]
    assert first["prompt_text"] == "<bos><|user|>max 0 0<|assistant|>"
    assert first["prompt_ids"] == [1, 3, 15, 5, 5, 4]
    assert {k: first[k] for k in ("problem", "answer", "solution", "tag")} == {
        "problem": "max 0 0", "answer": "0", "solution": "0", "tag": "a"}


def test_each_epoch_is_a_seeded_permutation(formatter):
    iterator = make(formatter, [rows(10, "a")], seed=3)
    epochs = [ids(iterator.next_batch(10)) for _ in range(3)]
    for epoch in epochs:
        assert sorted(int(a) for _, a in epoch) == list(range(10))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != [("a", str(i)) for i in range(10)]  # shuffled
    assert iterator.state_dict()["sources"][0] == {"name": "s0", "num_rows": 10, "ratio": 1.0, "epoch": 3, "position": 0}


def test_seeded_shuffle_is_deterministic(formatter):
    a = [ids(make(formatter, [rows(50, "a")], seed=7).next_batch(20))]
    b = [ids(make(formatter, [rows(50, "a")], seed=7).next_batch(20))]
    c = [ids(make(formatter, [rows(50, "a")], seed=8).next_batch(20))]
    assert a == b and a != c
    unshuffled = make(formatter, [rows(50, "a")], shuffle=False).next_batch(12)
    assert [e["answer"] for e in unshuffled] == [str(i) for i in range(12)]


def test_mixing_follows_the_ratios_exactly(formatter):
    iterator = make(formatter, [rows(30, "a"), rows(7, "b"), rows(100, "c")], ratios=[3, 1, 2])
    drawn = []
    for _ in range(20):
        batch = iterator.next_batch(12)
        counts = collections.Counter(e["tag"] for e in batch)
        assert counts == {"a": 6, "b": 2, "c": 4}  # 12 x (1/2, 1/6, 1/3), every batch
        drawn += batch
    # The small source cycles through all its rows, a full permutation per epoch.
    b_rows = [int(e["answer"]) for e in drawn if e["tag"] == "b"]
    assert len(b_rows) == 40
    for epoch in range(5):
        assert sorted(b_rows[7 * epoch: 7 * epoch + 7]) == list(range(7))
    state = iterator.state_dict()["sources"]
    assert [(s["epoch"], s["position"]) for s in state] == [(4, 0), (5, 5), (0, 80)]


def test_uneven_ratios_stay_within_one_of_the_target(formatter):
    iterator = make(formatter, [rows(13, "a"), rows(11, "b")], ratios=[0.7, 0.3])
    for n in range(1, 200):
        (k, _), = iterator.next_indices(1)
        counts = [s["epoch"] * s["num_rows"] + s["position"] for s in iterator.state_dict()["sources"]]
        assert abs(counts[0] - 0.7 * n) < 1 and abs(counts[1] - 0.3 * n) < 1


def test_resume_from_state_dict_gives_the_same_batches(formatter):
    def fresh():
        return make(formatter, [rows(17, "a"), rows(5, "b")], ratios=[2, 1], seed=42)

    reference = fresh()
    for _ in range(4):
        reference.next_batch(6)
    state = json.loads(json.dumps(reference.state_dict()))  # survives a JSON checkpoint
    expected = [reference.next_batch(6) for _ in range(8)]
    resumed = fresh()
    resumed.load_state_dict(state)
    assert [resumed.next_batch(6) for _ in range(8)] == expected
    assert resumed.state_dict() == reference.state_dict()


def test_load_state_dict_refuses_other_data_or_seed(formatter):
    state = make(formatter, [rows(17, "a")], seed=1).state_dict()
    with pytest.raises(ValueError, match="saved with seed=1, but this iterator has 2"):
        make(formatter, [rows(17, "a")], seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"saved over sources \[\('s0', 17\)\].*reads \[\('s0', 18\)\]"):
        make(formatter, [rows(18, "a")], seed=1).load_state_dict(state)
    two = make(formatter, [rows(5, "a"), rows(5, "b")], ratios=[1, 1], seed=1).state_dict()
    with pytest.raises(ValueError, match="saved with ratios"):
        make(formatter, [rows(5, "a"), rows(5, "b")], ratios=[2, 1], seed=1).load_state_dict(two)


def test_left_truncation_to_max_prompt_length():
    tokenizer = build_quickstart_tokenizer()
    formatter = PromptFormatter(tokenizer, add_think_prefill=False, max_prompt_length=5)
    example = make(formatter, [[{"problem": "max 1 2 3 4 5 6", "answer": "6"}]], solution_column=None).next_batch(1)[0]
    full = tokenizer("<bos><|user|>max 1 2 3 4 5 6<|assistant|>", add_special_tokens=False)["input_ids"]
    assert example["prompt_ids"] == full[-5:] and len(full) == 10
    # The text is the decoded kept ids (the word-level decoder joins tokens with spaces).
    assert example["prompt_text"] == "3 4 5 6 <|assistant|>"
    assert tokenizer(example["prompt_text"], add_special_tokens=False)["input_ids"] == example["prompt_ids"]
    assert "solution" not in example


def test_solution_column_mapping_and_boxing(formatter):
    source = [{"question": "max 1 2", "final": "2", "solution": "old"}]
    example = make(formatter, [source], problem_column="question", solution_column="final", box_solution=True).next_batch(1)[0]
    assert example["problem"] == "max 1 2" and example["solution"] == "$\\boxed{2}$" and example["final"] == "2"
    assert box_answer("\\frac{1}{2}") == "$\\boxed{\\frac{1}{2}}$"


def test_bad_rows_and_sources_are_named(formatter):
    with pytest.raises(ValueError, match="dataset 's0' has a column 'prompt_ids'"):
        make(formatter, [[{"problem": "max 1 2", "prompt_ids": [1]}]], solution_column=None).next_batch(1)
    with pytest.raises(ValueError, match="dataset 's0' row 0: column 'problem' is NoneType"):
        make(formatter, [[{"problem": None}]], solution_column=None).next_batch(1)
    with pytest.raises(ValueError, match="dataset 's1' has no rows"):
        make(formatter, [rows(2, "a"), []])


def test_quickstart_stream_end_to_end(formatter):
    iterator = make(formatter, [quickstart_dataset(64, 0)], seed=0, solution_column=None)
    batch = iterator.next_batch(16)
    assert all(len(e["prompt_ids"]) == 6 and e["answer"] == str(max(map(int, e["problem"].split()[1:]))) for e in batch)
