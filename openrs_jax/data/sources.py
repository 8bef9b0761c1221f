"""Loading one prompt dataset: hub name, local file, `save_to_disk` directory or builtin.

Layer L0 (no JAX). Every loader returns a `datasets.Dataset` (rows as dicts of all columns).
    "builtin:quickstart"          -> the generated quickstart task (no file at all)
    "builtin:arithmetic"          -> one-digit sums for real models (data/arithmetic.py)
    *.jsonl / *.json file          -> read here, line by line (errors name the line; see below)
    *.parquet / *.csv file         -> `datasets.load_dataset(<format>, data_files=...)`
    directory from `save_to_disk` -> `datasets.load_from_disk` (a DatasetDict picks `split`)
    other directory               -> `datasets.load_dataset(dir, split=...)`
    anything else                 -> the Hugging Face hub, `load_dataset(name, config, split=...)`

JSON files are parsed here rather than by `datasets` (whose Arrow reader stores invalid UTF-8
unchecked, so the error came at the first read of that row, mid-run, and says "position 42"
without file or line): a file holding a JSON array is one document; any other is JSON lines,
blank lines skipped. `open_source` returns the rows that parsed, where each came from, and the
lines that did not (`openrs_jax.data.validation` decides what to do with them).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

from openrs_jax.data.tokenizer import BUILTIN_PREFIX
from openrs_jax.data.validation import BadRow, DataError, summarize

_FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclasses.dataclass(frozen=True)
class LoadedSource:
    """A source's rows: `dataset` (a `datasets.Dataset`), `locate(i)` -> (where row i is, as
    "FILE, line N" / "dataset NAME, row N", and that 1-based N), and `unreadable`: the lines of
    a JSON file that could not be parsed (not in `dataset`)."""

    dataset: Any
    locate: Callable[[int], tuple[str, int]]
    unreadable: tuple[BadRow, ...] = ()


def _kind(value: Any) -> str:
    """A JSON value's kind for the one-type-per-column check (ints and floats mix)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _parse_json_lines(path: pathlib.Path, data: bytes) -> tuple[list[dict], list[int], list[BadRow]]:
    rows, lines, bad = [], [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}, line {number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(BadRow(where, number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"))
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            bad.append(BadRow(where, number, f"malformed JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(row, dict):
            bad.append(BadRow(where, number, f"a JSON {_kind(row)} where a row (a JSON object) was expected"))
            continue
        if "\\u" in text.lower():  # only escapes can smuggle in lone surrogates (not encodable text)
            try:
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError as e:
                bad.append(BadRow(where, number, f"a string holds an unpaired surrogate escape ({e.reason})"))
                continue
        rows.append(row)
        lines.append(number)
    return rows, lines, bad


def _parse_json_array(path: pathlib.Path, data: bytes) -> tuple[list[dict], list[int], list[BadRow]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    rows, numbers, bad = [], [], []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            rows.append(item)
            numbers.append(number)
        else:
            bad.append(BadRow(f"{path}, element {number}", number, f"a JSON {_kind(item)}, not a row object"))
    return rows, numbers, bad


def _mixed_types(path: pathlib.Path, rows: list[dict], lines: list[int], unit: str) -> dict[int, BadRow]:
    """Rows whose value in some column has another kind than the column's first value (Arrow
    columns hold one type; `datasets` fails on such a file with no row named)."""
    first: dict[str, tuple[str, int]] = {}
    bad = {}
    for i, (row, line) in enumerate(zip(rows, lines)):
        for column, value in row.items():
            if value is None:
                continue
            kind = _kind(value)
            seen = first.setdefault(column, (kind, line))
            if seen[0] != kind and i not in bad:
                bad[i] = BadRow(f"{path}, {unit} {line}", line,
                                f"column {column!r} is a {kind} here but a {seen[0]} on {unit} {seen[1]}")
    return bad


def read_json_file(path: str | pathlib.Path) -> LoadedSource:
    """A .json / .jsonl file as a `LoadedSource` (see the module docstring). Raises DataError
    for a file without rows; bad lines are returned, not raised."""
    import datasets

    path = pathlib.Path(path)
    data = path.read_bytes()
    is_array = data.lstrip()[:1] == b"["
    unit = "element" if is_array else "line"
    rows, lines, bad = (_parse_json_array if is_array else _parse_json_lines)(path, data)
    mixed = _mixed_types(path, rows, lines, unit)
    if mixed:
        bad = sorted([*bad, *mixed.values()], key=lambda b: b.position)
        keep = [i for i in range(len(rows)) if i not in mixed]
        rows, lines = [rows[i] for i in keep], [lines[i] for i in keep]
    if not rows:
        what = f"no readable rows ({summarize(bad)})" if bad else "no rows (the file is empty)"
        raise DataError(f"dataset file {path} holds {what}")
    columns = list(dict.fromkeys(c for row in rows for c in row))
    try:
        dataset = datasets.Dataset.from_dict({c: [row.get(c) for row in rows] for c in columns})
    except Exception as e:  # Arrow type errors inside nested values
        raise DataError(f"dataset file {path}: its rows do not fit one table ({type(e).__name__}: {e})") from e
    return LoadedSource(dataset, lambda i: (f"{path}, {unit} {lines[i]}", lines[i]), tuple(bad))


def _load_builtin(name: str, split: str):
    builtin = name[len(BUILTIN_PREFIX):]
    if builtin == "arithmetic":
        from openrs_jax.data.arithmetic import arithmetic_dataset

        return arithmetic_dataset(split)
    if builtin != "quickstart":
        raise ValueError(f"unknown builtin dataset {name!r}; known: 'builtin:quickstart', 'builtin:arithmetic'")
    from openrs_jax.data.quickstart import QUICKSTART_SPLITS, quickstart_dataset

    if split not in QUICKSTART_SPLITS:
        raise ValueError(f"dataset {name!r} has splits {sorted(QUICKSTART_SPLITS)}, not {split!r}")
    return quickstart_dataset(**QUICKSTART_SPLITS[split])


def load_source(path: str, config: str | None = None, split: str = "train"):
    """Loads one dataset as a `datasets.Dataset` (see the module docstring for the forms of
    `path`). A JSON line that does not parse raises DataError naming file and line."""
    loaded = open_source(path, config, split)
    if loaded.unreadable:
        first, others = loaded.unreadable[0], len(loaded.unreadable) - 1
        raise DataError(f"{first}" + (f" ({others} more bad rows)" if others else ""))
    return loaded.dataset


def open_source(path: str, config: str | None = None, split: str = "train") -> LoadedSource:
    """One dataset as a `LoadedSource`: its rows, where each row is, and unreadable JSON lines."""
    if path.startswith(BUILTIN_PREFIX):
        return _rows_of(_load_builtin(path, split), f"dataset {path!r}")
    local = pathlib.Path(path)
    if local.is_file():
        fmt = _FILE_FORMATS.get(local.suffix.lower())
        if fmt is None:
            raise ValueError(f"dataset file {path!r}: unknown format {local.suffix!r}; use {', '.join(_FILE_FORMATS)}")
        if fmt == "json":
            return read_json_file(local)
        import datasets

        try:
            # Local files have one split; `split` names a hub split, so it is not applied here.
            dataset = datasets.load_dataset(fmt, data_files=str(local), split="train")
        except Exception as e:  # name the file; the cause stays chained
            raise DataError(f"dataset file {path}: cannot be read as {fmt} ({type(e).__name__}: {e})") from e
        return _rows_of(dataset, str(local))
    return _rows_of(_load_directory_or_hub(path, config, split), f"dataset {path!r}")


def _rows_of(dataset, name: str) -> LoadedSource:
    return LoadedSource(dataset, lambda i: (f"{name}, row {i + 1}", i + 1))


def _load_directory_or_hub(path: str, config: str | None, split: str):
    import datasets

    local = pathlib.Path(path)
    if local.is_dir():
        if (local / "dataset_info.json").is_file() or (local / "state.json").is_file():
            return datasets.load_from_disk(str(local))
        if (local / "dataset_dict.json").is_file():
            loaded = datasets.DatasetDict.load_from_disk(str(local))
            if split not in loaded:
                raise ValueError(f"dataset {path!r} has splits {sorted(loaded)}, not {split!r}")
            return loaded[split]
        return datasets.load_dataset(str(local), config, split=split)
    if local.suffix.lower() in _FILE_FORMATS or path.startswith((".", "/")):
        raise FileNotFoundError(f"dataset file {path!r} does not exist (relative to {pathlib.Path.cwd()})")
    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as e:  # offline, unknown name: say which dataset and how to use local data
        raise ValueError(
            f"dataset {path!r} (config {config!r}, split {split!r}) is not a local path and could not be "
            f"loaded from the Hugging Face hub ({type(e).__name__}: {e}); pass a local .jsonl/.parquet "
            "file or save_to_disk directory instead"
        ) from e


def check_columns(dataset, required: Sequence[str], source: str) -> None:
    """Raises ValueError naming the missing column(s), the dataset and its columns."""
    columns = list(dataset.column_names)
    missing = [c for c in dict.fromkeys(required) if c not in columns]
    if missing:
        raise ValueError(
            f"dataset {source!r} has no column {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(columns)}); set data.problem_column / data.solution_column to the right names"
        )


def filter_rows(dataset, where: Mapping[str, Any], source: str):
    """Keeps rows whose column equals the value (or is in it, for a list value)."""
    indices = matching_rows(dataset, where, source)
    return dataset if indices is None else dataset.select(indices)


def matching_rows(dataset, where: Mapping[str, Any], source: str) -> list[int] | None:
    """Indices of the rows `filter_rows` keeps (None: no filter, all rows)."""
    if not where:
        return None
    check_columns(dataset, list(where), source)
    keep = [True] * len(dataset)
    for column, wanted in where.items():
        allowed = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        mask = [value in allowed for value in dataset[column]]
        keep = [a and b for a, b in zip(keep, mask)]
    indices = [i for i, ok in enumerate(keep) if ok]
    if not indices:
        raise ValueError(f"dataset {source!r}: no row matches where={dict(where)}")
    return indices
