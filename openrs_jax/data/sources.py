"""Loading one prompt dataset: hub name, local file, `save_to_disk` directory or builtin.

Layer L0 (no JAX). Every loader returns a `datasets.Dataset` (rows as dicts of all columns).
    "builtin:quickstart"          -> the generated quickstart task (no file at all)
    "builtin:arithmetic"          -> one-digit sums for real models (data/arithmetic.py)
    *.jsonl / *.json / *.parquet / *.csv file -> `datasets.load_dataset(<format>, data_files=...)`
    directory from `save_to_disk` -> `datasets.load_from_disk` (a DatasetDict picks `split`)
    other directory               -> `datasets.load_dataset(dir, split=...)`
    anything else                 -> the Hugging Face hub, `load_dataset(name, config, split=...)`
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

from openrs_jax.data.tokenizer import BUILTIN_PREFIX

_FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


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
    """Loads one dataset as a `datasets.Dataset` (see the module docstring for the forms of `path`)."""
    import datasets

    if path.startswith(BUILTIN_PREFIX):
        return _load_builtin(path, split)
    local = pathlib.Path(path)
    if local.is_file():
        fmt = _FILE_FORMATS.get(local.suffix.lower())
        if fmt is None:
            raise ValueError(f"dataset file {path!r}: unknown format {local.suffix!r}; use {', '.join(_FILE_FORMATS)}")
        # Local files have one split; `split` names a hub split, so it is not applied here.
        return datasets.load_dataset(fmt, data_files=str(local), split="train")
    if local.is_dir():
        if (local / "dataset_info.json").is_file() or (local / "state.json").is_file():
            return datasets.load_from_disk(str(local))
        if (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
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
    if not where:
        return dataset
    check_columns(dataset, list(where), source)
    keep = None
    for column, wanted in where.items():
        allowed = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        mask = [value in allowed for value in dataset[column]]
        keep = mask if keep is None else [a and b for a, b in zip(keep, mask)]
    indices = [i for i, ok in enumerate(keep) if ok]
    if not indices:
        raise ValueError(f"dataset {source!r}: no row matches where={dict(where)}")
    return dataset.select(indices)
