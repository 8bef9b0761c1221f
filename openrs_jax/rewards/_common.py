"""Helpers shared by the reward modules: completion texts and dataset columns (no JAX)."""

from __future__ import annotations

from typing import Any, Sequence


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """B completions -> B strings.

    Accepts plain strings (our trainer) and TRL's conversational form, a list of messages per
    completion, of which Open-RS reads `completion[0]["content"]`.
    """
    texts = []
    for i, completion in enumerate(completions):
        if isinstance(completion, str):
            texts.append(completion)
        elif isinstance(completion, dict) and "content" in completion:
            texts.append(completion["content"])
        elif (
            isinstance(completion, (list, tuple))
            and completion
            and isinstance(completion[0], dict)
            and "content" in completion[0]
        ):
            texts.append(completion[0]["content"])
        else:
            raise TypeError(
                f"completion {i} is a {type(completion).__name__}; expected a string or a list "
                "of chat messages with a 'content' key"
            )
    return texts


def column(columns: dict[str, Any], name: str, reward: str, size: int) -> list:
    """The dataset column `name` as a list of `size` items, or a clear error."""
    if name not in columns:
        available = sorted(k for k in columns if k != "completions")
        raise KeyError(f"reward {reward!r} needs the column {name!r}; got columns {available}")
    values = list(columns[name])
    if len(values) != size:
        raise ValueError(
            f"reward {reward!r}: column {name!r} has {len(values)} rows, "
            f"but there are {size} completions"
        )
    return values


def token_lengths(columns: dict[str, Any], reward: str, size: int) -> list[int]:
    """len(completion_ids[b]) for each completion b (TRL passes the unpadded id lists)."""
    return [len(ids) for ids in column(columns, "completion_ids", reward, size)]
