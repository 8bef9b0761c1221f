"""Config fields with their help text and constraints as data (layer L0).

Every field of a config section is declared with `field(default, help=..., ge=..., ...)`; the
constraints live in the field's metadata, so one generic check (`check_fields`) validates every
section on construction and the CLI's `--help` lists every field with its type, default, range
and help (`describe_fields`). Cross-field rules (one field's bound depends on another's value)
stay in the section's `_check` method, next to the fields they relate.

Numbers are checked as follows: a float anywhere in a value (also inside lists and mappings,
e.g. `rewards.reward_weights` or `rewards.reward_kwargs`) must be finite: a range test such as
`x < 0` is False for NaN, so a NaN learning rate would otherwise pass and poison every weight.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

_MISSING = dataclasses.MISSING
BOUNDS = (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
          ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b))


class ConfigError(ValueError):
    """A configuration key, value or combination of values is wrong; the message says which."""


def field(
    default: Any = _MISSING,
    *,
    help: str,  # noqa: A002 — the name argparse and TRL's metadata use
    default_factory: Any = _MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    note: str | None = None,
) -> Any:
    """A dataclass field with `help` and bounds (None means no bound; a None *value* of an
    Optional field is never range-checked). `note` is appended to range errors (e.g. what -1
    means)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "note": note}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_nonfinite(v) for v in value)
    if isinstance(value, Mapping):
        return any(_nonfinite(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return False  # a nested section checks itself
    return False


def range_text(meta: Mapping[str, Any]) -> str:
    """"must be in (0, 1]"-style text for the bounds in `meta` ("" when unbounded)."""
    lo = ("[", meta["ge"]) if meta.get("ge") is not None else ("(", meta["gt"]) if meta.get("gt") is not None else None
    hi = ("]", meta["le"]) if meta.get("le") is not None else (")", meta["lt"]) if meta.get("lt") is not None else None
    if lo and hi:
        return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    parts = [f"{sym} {_num(meta[key])}" for key, sym, _ in BOUNDS if meta.get(key) is not None]
    return " and ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def check_fields(section: Any, prefix: str) -> None:
    """Raises ConfigError for the first field of dataclass `section` that is non-finite or
    out of its declared bounds: "`prefix`name: must be ..., got value"."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        where = f"{prefix}{f.name}"
        if _nonfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        meta = f.metadata
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        for key, _, ok in BOUNDS:
            bound = meta.get(key)
            if bound is not None and not ok(value, bound):
                note = f" ({meta['note']})" if meta.get("note") else ""
                raise ConfigError(f"{where}: must be {range_text(meta)}{note}, got {value!r}")


class Section:
    """Base of every config section: validates its fields' bounds, then `_check` (cross-field
    rules). Subclasses are frozen dataclasses; `_prefix` names the section in messages."""

    _prefix = ""

    def __post_init__(self) -> None:
        check_fields(self, self._prefix)
        self._check()

    def _check(self) -> None:
        """Cross-field rules of the section (override)."""
