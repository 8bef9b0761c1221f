"""Bad data fails before the first step, naming file and line (or is skipped with a warning).

Each case is a fault from issue 14: a non-UTF-8 row deep in a JSONL file, a malformed line, an
empty file, rows without problem or solution, an undecodable parquet value, mixed column types.
"""

import json
import os
import subprocess
import sys

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openrs_jax.config import load_config
from openrs_jax.data import DataError, build_prompt_iterator, load_source, load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def good_row(i):
    return {"id": f"r{i}", "problem": f"max {i % 10} {(i * 7) % 10}", "answer": str(max(i % 10, (i * 7) % 10)),
            "solution": f"$\\boxed{{{i}}}$"}


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def good_lines(n):
    return [json.dumps(good_row(i)).encode() for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:quickstart")


def build(path, tokenizer, *overrides, **kw):
    config = load_config("quickstart", [f"data.dataset_name={path}", "data.solution_column=solution", *overrides])
    return build_prompt_iterator(config.data, tokenizer, seed=0, **kw)


def rows_of(iterator):
    return [e["num_rows"] for e in iterator.state_dict()["sources"]]


def test_non_utf8_row_fails_when_the_stream_is_built_naming_file_and_line(tmp_path, tokenizer):
    lines = good_lines(100)
    lines[59] = b'{"id": "r59", "problem": "bad \xff\xfe bytes", "solution": "1"}'
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as e:
        build(path, tokenizer)
    message = str(e.value)
    column = lines[59].index(b"\xff") + 1
    assert f"{path}, line 60: not valid UTF-8 (byte 0xff at column {column})" in message, message
    assert "bad_rows: skip" in message


def test_malformed_json_names_file_and_line_not_a_position(tmp_path, tokenizer):
    lines = good_lines(50)
    lines[41] = b'{"problem": "x", "solution": }'
    lines.insert(10, b"")  # blank lines are skipped but still counted in line numbers
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError, match=rf"{path}, line 43: malformed JSON \(Expecting value at column 30\)"):
        build(path, tokenizer)
    # load_source on its own says the same.
    with pytest.raises(DataError, match=r"line 43: malformed JSON"):
        load_source(str(path))


def test_not_an_object_and_lone_surrogate_lines(tmp_path, tokenizer):
    lines = good_lines(5)
    lines[1] = b'["a", "list"]'
    lines[3] = b'{"problem": "half a pair \\ud800", "solution": "1"}'
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as e:
        build(path, tokenizer)
    message = str(e.value)
    assert "line 2: a JSON list where a row (a JSON object) was expected" in message
    assert "(1 more bad rows in" in message
    warnings = []
    iterator = build(path, tokenizer, bad_rows="skip", warn=warnings.append)
    assert rows_of(iterator) == [3]
    assert "line 4: a string holds an unpaired surrogate escape" in warnings[0]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_jsonl_names_the_file(tmp_path, tokenizer, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"dataset file {path} holds no rows \(the file is empty\)"):
        build(path, tokenizer)


def test_missing_problem_or_solution_in_a_row(tmp_path, tokenizer):
    lines = good_lines(20)
    lines[6] = json.dumps({"id": "r6", "solution": "1"}).encode()  # no problem
    lines[11] = json.dumps({"id": "r11", "problem": "max 1 2", "solution": None}).encode()
    lines[14] = json.dumps({"id": "r14", "problem": "   ", "solution": "1"}).encode()
    path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as e:
        build(path, tokenizer)
    message = str(e.value)
    assert f"{path}, line 7: column 'problem' is NoneType None, expected the problem text" in message
    assert "(2 more bad rows in" in message
    warnings = []
    iterator = build(path, tokenizer, bad_rows="skip", warn=warnings.append)
    assert rows_of(iterator) == [17]
    (warning,) = warnings
    assert "skipped 3 bad rows of 20" in warning
    assert "line 12: column 'solution' is missing (null)" in warning
    assert "line 15: column 'problem' is empty" in warning
    ids = {e["id"] for e in iterator.next_batch(17)}
    assert ids == {f"r{i}" for i in range(20)} - {"r6", "r11", "r14"}
    # Without a solution column, a null solution is no problem.
    iterator = build(path, tokenizer, "data.solution_column=null", bad_rows="skip", warn=warnings.append)
    assert rows_of(iterator) == [18]


def test_skip_leaves_a_source_without_rows_an_error(tmp_path, tokenizer):
    path = write_lines(tmp_path / "train.jsonl", [b"\xff", b"{", json.dumps({"problem": "", "solution": "1"}).encode()])
    with pytest.raises(DataError, match=r"has no usable rows \(3 bad rows of 3: .*line 1: not valid UTF-8"):
        build(path, tokenizer, bad_rows="skip", warn=lambda m: None)
    with pytest.raises(ValueError, match="bad_rows must be one of error, skip"):
        build(path, tokenizer, bad_rows="ignore")


def test_mixed_column_types_name_the_line(tmp_path, tokenizer):
    rows = [good_row(i) for i in range(6)]
    for i, row in enumerate(rows):
        row["level"] = i + 0.5 if i % 2 else i  # ints and floats mix
    rows[4]["level"] = "hard"
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(r).encode() for r in rows])
    with pytest.raises(DataError, match=r"line 5: column 'level' is a string here but a number on line 1"):
        build(path, tokenizer)
    iterator = build(path, tokenizer, bad_rows="skip", warn=lambda m: None)
    assert rows_of(iterator) == [5]


def test_json_array_file(tmp_path, tokenizer):
    rows = [good_row(i) for i in range(4)] + [{"id": "x", "problem": None, "solution": "1"}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows, indent=1))
    with pytest.raises(DataError, match=rf"{path}, element 5: column 'problem' is NoneType"):
        build(path, tokenizer)
    path.write_text(json.dumps(rows, indent=1)[:-3])
    with pytest.raises(DataError, match=rf"{path}, line \d+: malformed JSON"):
        build(path, tokenizer)


def test_undecodable_parquet_value_names_the_row(tmp_path, tokenizer):
    """Arrow string columns can hold invalid UTF-8 (`datasets` raised when it read the row)."""
    raw = pa.array([b"max 1 2", b"max 3 4", b"bad \xff"], pa.binary())
    problems = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers()[:3])
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"problem": problems, "solution": ["1", "2", "3"]}), str(path))
    with pytest.raises(DataError, match=rf"{path}, row 3: a value does not decode \(UnicodeDecodeError"):
        build(path, tokenizer)
    iterator = build(path, tokenizer, bad_rows="skip", warn=lambda m: None)
    assert rows_of(iterator) == [2]
    assert sorted(e["problem"] for e in iterator.next_batch(2)) == ["max 1 2", "max 3 4"]


def test_bad_rows_after_a_where_filter_keep_their_file_lines(tmp_path, tokenizer):
    rows = [{**good_row(i), "level": "hard" if i % 2 else "easy"} for i in range(10)]
    rows[7]["problem"] = ""  # a hard row (kept by the filter), line 8
    rows[4]["problem"] = None  # an easy row, filtered out: not a problem
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(r).encode() for r in rows])
    config = load_config("quickstart", [
        "data.dataset_name=null", "data.solution_column=solution",
        f"data.sources=[{{path: {path}, where: {{level: hard}}}}]",
    ])  # fmt: skip
    with pytest.raises(DataError, match=rf"{path}, line 8: column 'problem' is empty"):
        build_prompt_iterator(config.data, tokenizer, seed=0)


def test_saved_datasets_are_checked_too(tmp_path, tokenizer):
    rows = [good_row(i) for i in range(5)]
    rows[2]["problem"] = ""
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"dataset '.*saved', row 3: column 'problem' is empty"):
        build(tmp_path / "saved", tokenizer)


def test_train_cli_stops_before_step_one_with_a_one_line_error(tmp_path):
    """The operator's case: a bad row at line 60 used to end the run at the step that reached it."""
    lines = [json.dumps({"problem": f"max {i % 10} {i % 7}", "answer": str(max(i % 10, i % 7))}).encode()
             for i in range(100)]
    lines[59] = b'{"problem": "max \xff 1", "answer": "1"}'
    path = write_lines(tmp_path / "train.jsonl", lines)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    env.pop("OPENRS_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.train", "--config", "quickstart", "--output-dir", str(out),
         "--set", f"data.dataset_name={path}", "--set", "optim.max_steps=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**env, "OPENRS_COMPILATION_CACHE": "off"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    column = lines[59].index(b"\xff") + 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: DataError: {path}, line 60: not valid UTF-8 (byte 0xff at column {column}); "
        "fix or remove the row, or skip bad rows (data.bad_rows: skip) with a warning"
    )
    assert "Traceback" not in proc.stderr
    assert "[openrs] model:" not in proc.stdout  # the data is checked before the model is built
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip()
