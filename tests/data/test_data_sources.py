"""Dataset loading: local jsonl / json / parquet / save_to_disk, builtin, filters, column errors."""

import json

import datasets
import pytest

from openrs_jax.config import load_config
from openrs_jax.data import build_prompt_iterator, check_columns, filter_rows, load_source, load_tokenizer

ROWS = [
    {"id": f"r{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i), "solution": f"$\\boxed{{{2 * i}}}$",
     "level": "easy" if i % 3 else "hard"}
    for i in range(12)
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def jsonl(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", ROWS)


def test_jsonl_json_parquet_and_saved_datasets_load_the_same_rows(tmp_path, jsonl):
    (tmp_path / "train.json").write_text(json.dumps(ROWS))
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(
        str(tmp_path / "saved_dict")
    )
    loaded = {
        "jsonl": load_source(str(jsonl)),
        "json": load_source(str(tmp_path / "train.json")),
        "parquet": load_source(str(tmp_path / "train.parquet")),
        "saved": load_source(str(tmp_path / "saved")),
        "saved_dict": load_source(str(tmp_path / "saved_dict"), split="train"),
    }
    for name, dataset in loaded.items():
        assert [dict(row) for row in dataset] == ROWS, name
    assert len(load_source(str(tmp_path / "saved_dict"), split="test")) == 2
    with pytest.raises(ValueError, match=r"has splits \['test', 'train'\], not 'validation'"):
        load_source(str(tmp_path / "saved_dict"), split="validation")


def test_local_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="'missing.jsonl' does not exist"):
        load_source("missing.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match=r"data.txt': unknown format '.txt'"):
        load_source(str(tmp_path / "data.txt"))


def test_missing_column_error_names_column_and_file(jsonl, shared_data):
    tokenizer = load_tokenizer("builtin:quickstart")
    config = load_config("quickstart", [f"data.dataset_name={jsonl}", "data.problem_column=question"])
    with pytest.raises(ValueError) as e:
        build_prompt_iterator(config.data, tokenizer, seed=0)
    message = str(e.value)
    assert "'question'" in message and str(jsonl) in message and "columns: id, problem, answer" in message
    # A column the rewards need (required_columns) is checked too; `solution` maps to solution_column.
    config = load_config("quickstart", [f"data.dataset_name={jsonl}"])
    with pytest.raises(ValueError, match="no column 'gold'"):
        build_prompt_iterator(config.data, tokenizer, seed=0, required_columns=["answer", "gold"])
    build_prompt_iterator(config.data, tokenizer, seed=0, required_columns=["answer", "solution", "problem"])
    math500 = str(shared_data / "math500.jsonl")
    config = load_config("quickstart", [f"data.dataset_name={math500}", "data.solution_column=gold_solution"])
    with pytest.raises(ValueError, match=r"dataset '.*math500.jsonl\[train\]' has no column 'gold_solution'"):
        build_prompt_iterator(config.data, tokenizer, seed=0)


def test_check_columns_lists_all_missing():
    dataset = datasets.Dataset.from_list(ROWS)
    with pytest.raises(ValueError, match="no column 'a', 'b'"):
        check_columns(dataset, ["problem", "a", "b", "a"], "x")


def test_filter_rows_where():
    dataset = datasets.Dataset.from_list(ROWS)
    assert filter_rows(dataset, {}, "x") is dataset
    assert [r["id"] for r in filter_rows(dataset, {"level": "hard"}, "x")] == ["r0", "r3", "r6", "r9"]
    assert [r["id"] for r in filter_rows(dataset, {"level": "hard", "answer": ["0", "6", "7"]}, "x")] == ["r0", "r3"]
    with pytest.raises(ValueError, match="no row matches"):
        filter_rows(dataset, {"level": "medium"}, "x")
    with pytest.raises(ValueError, match="no column 'difficulty'"):
        filter_rows(dataset, {"difficulty": 1}, "x")


def test_builtin_quickstart_splits():
    train, test = load_source("builtin:quickstart"), load_source("builtin:quickstart", split="test")
    assert (len(train), len(test)) == (4096, 512)
    assert train.column_names == ["id", "problem", "answer"]
    with pytest.raises(ValueError, match="unknown builtin dataset 'builtin:other'"):
        load_source("builtin:other")
    with pytest.raises(ValueError, match="has splits"):
        load_source("builtin:quickstart", split="validation")


def test_open_rs_recipe_with_the_local_training_file(shared_data):
    """The recipes' documented offline override: DeepScaleR AIME + MATH, boxed answers as gold."""
    config = load_config(
        "openrs2",
        [
            f"data.dataset_name={shared_data / 'train_deepscaler_aime_math.jsonl'}",
            "data.solution_column=answer",
            "data.box_solution=true",
        ],
    )
    tokenizer = load_tokenizer(shared_data / "tokenizer-qwen2")
    iterator = build_prompt_iterator(config.data, tokenizer, seed=config.seed)
    batch = iterator.next_batch(12)
    assert len(batch) == 12
    system_prompt = config.data.system_prompt
    for example in batch:
        assert example["solution"] == f"$\\boxed{{{example['answer']}}}$"
        assert len(example["prompt_ids"]) <= 512
        assert example["prompt_text"].endswith("<｜Assistant｜><think>\n")
        if len(example["prompt_ids"]) < 512:
            assert example["prompt_text"] == (
                f"<｜begin▁of▁sentence｜>{system_prompt}<｜User｜>{example['problem']}<｜Assistant｜><think>\n"
            )
        assert {"id", "source", "difficulty"} <= set(example)
