"""Reading configs: YAML recipes and `--set a.b=c` overrides into the schema, and back (layer L0).

`load_config(path_or_name, overrides)` is the one entry point: a recipe name ("openrs3") or a
YAML path, overrides applied in order, every key and value checked (unknown keys name their
closest matches, wrong types name the expected type). `dump_yaml` writes the resolved config
that `load_config` reads back to an equal RunConfig. `describe_fields` lists every field with
its type, default, range and help (the CLI's `--help`).
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
import types
import typing
from typing import Any, Literal, Mapping, Sequence

import yaml

from openrs_jax.config.fields import ConfigError, range_text
from openrs_jax.config.schema import RunConfig, did_you_mean
from openrs_jax.config.trl import Conversion, convert, is_trl_recipe, split_overrides, trl_hint

# The recipes ship inside the package (package data), so recipe names ("openrs3", "quickstart")
# resolve in an installed wheel as in a checkout; the repository's `configs/` links here.
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "recipes"
# The recipe `load_config(None)` loads: runs on a fresh CPU-only machine with no download.
DEFAULT_RECIPE = "quickstart"


def _is_section(hint: Any) -> typing.TypeGuard[type]:
    """Whether a type hint is a dataclass type (a config section)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _all_qualified_keys(cls: type, prefix: str = "") -> list[str]:
    """'optim.learning_rate'-style names of every leaf field below `cls`."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            out += _all_qualified_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    local = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    suggestions = [f"{where}{name}" for name in local]
    # Also look in the other sections: Open-RS/TRL recipes are flat, so `learning_rate` at the
    # top level or under the wrong section should point at `optim.learning_rate`.
    leaves = {}
    for qualified in _all_qualified_keys(RunConfig):
        leaves.setdefault(qualified.rsplit(".", 1)[-1], []).append(qualified)
    for leaf in difflib.get_close_matches(key, list(leaves), n=3, cutoff=0.6):
        suggestions += [q for q in leaves[leaf] if q not in suggestions]
    if not suggestions:  # nothing close: still name the nearest keys, here or in any section
        candidates = {f"{where}{name}": name for name in names}
        candidates.update({q: q.rsplit(".", 1)[-1] for q in _all_qualified_keys(RunConfig)})
        score = lambda q: difflib.SequenceMatcher(None, key, candidates[q]).ratio()
        suggestions = sorted(candidates, key=score, reverse=True)[:3]
    full = f"{where}{key}"
    hint = trl_hint(key)
    trl = f" (TRL/open-r1's {key!r} is {hint} here)" if hint else ""
    return ConfigError(
        f"unknown config key {full!r}{trl}; closest keys: {', '.join(repr(s) for s in suggestions[:4])}"
    )


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list [{', '.join(_type_name(a) for a in args)}]"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(hint)[1])}"
    if hint is Any:
        return "any"
    if _is_section(hint):
        return f"mapping ({hint.__name__})"
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, where: str, shown: Any = None) -> Any:
    """Checks `value` against the type hint `hint`, converting YAML shapes (list -> tuple,
    int -> float, "1e-6" -> float, mapping -> dataclass). Raises ConfigError naming `where`
    and the expected type (`shown`, when `hint` is one member of that Optional)."""

    def fail(extra: str = "") -> ConfigError:
        return ConfigError(
            f"{where}: expected {_type_name(shown or hint)}, got {type(value).__name__} {value!r}{extra}"
        )

    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:  # Optional[X]: X's message (with its hints), naming "X or null"
            return _coerce(value, members[0], where, shown=hint)
        for arg in members:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise fail()
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices and type(value) is type(choices[0]):
            return value
        extra = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise fail(extra)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads `1e-6` (no dot) as a string; accept numeric strings.
            try:
                return float(value)
            except ValueError:
                pass
        raise fail()
    if hint is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f" (needs {len(args)} entries)")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce(k, key_hint, f"{where} key"): _coerce(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if _is_section(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise fail()
        return from_dict(hint, value, prefix=f"{where}.")
    raise TypeError(f"{where}: unsupported type hint {hint!r}")  # a bug in this module


def from_dict(cls: type, raw: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds dataclass `cls` from a (YAML) mapping: unknown keys, wrong types and failed
    validations raise ConfigError naming the key (`prefix` + field name)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key_error(cls, str(key), prefix)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: missing required key(s) {missing}")
    return cls(**kwargs)


def config_to_dict(config: Any) -> Any:
    """Plain YAML/JSON-ready data (dicts, lists, scalars) of a config dataclass."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def dump_yaml(config: RunConfig, path: str | pathlib.Path | None = None) -> str:
    """The resolved config as YAML text (written to `path` if given); `load_config` reads it back
    to an equal RunConfig."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True, width=100)
    if path is not None:
        pathlib.Path(path).write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------- overrides, loading
def parse_override(override: str) -> tuple[list[str], Any]:
    """"a.b=c" -> (["a", "b"], yaml.safe_load("c")). An empty value is null."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. optim.learning_rate=1e-6")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {e}") from None
    return key.split("."), value


def apply_override(raw: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Sets `raw[path[0]][path[1]]... = value` in place, creating mappings on the way; an
    integer part indexes an existing list (`data.sources.0.ratio=0.3`)."""
    node: Any = raw
    for depth, part in enumerate(path[:-1]):
        where = ".".join(path[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where)]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {'.'.join(path)}: {where} is {child!r}, not a mapping")
        node = child
    last = path[-1]
    if isinstance(node, list):
        node[_list_index(node, last, ".".join(path))] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(f"--set {where}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def recipe_path(path_or_name: str | pathlib.Path) -> pathlib.Path:
    """A YAML file path, or a recipe name ("openrs3", "quickstart") among the shipped recipes
    (`openrs_jax/recipes/`, also reachable as the repository's `configs/`)."""
    path = pathlib.Path(path_or_name)
    if path.is_file():
        return path
    candidate = CONFIGS_DIR / f"{path_or_name}.yaml"
    if path.suffix == "" and candidate.is_file():
        return candidate
    known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")) if CONFIGS_DIR.is_dir() else []
    raise ConfigError(f"config file {str(path_or_name)!r} not found (recipes in {CONFIGS_DIR}: {', '.join(known)})")


def read_recipe(path_or_name: str | pathlib.Path | None = None) -> tuple[pathlib.Path, dict[str, Any]]:
    """(path, mapping) of a YAML recipe (a path or a recipe name; None: the CPU quickstart)."""
    path = recipe_path(DEFAULT_RECIPE if path_or_name is None else path_or_name)
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return path, raw


def load_recipe(
    path_or_name: str | pathlib.Path | None = None, overrides: Sequence[str] = ()
) -> tuple[RunConfig, Conversion | None]:
    """`load_config`, plus the `Conversion` (notes, defaults used) when the file is a flat
    TRL / open-r1 recipe (`openrs_jax.config.trl`), else None.

    Overrides of a TRL recipe: undotted keys set the recipe's own flat keys before it is
    converted (`cosine_max_len=3584`, and the launch keys `num_processes=3`,
    `trl_defaults=open-r1`); dotted keys set fields of the converted config.
    """
    path, raw = read_recipe(path_or_name)
    parsed = [parse_override(o) for o in overrides]
    conversion = None
    if is_trl_recipe(raw):
        flat, parsed = split_overrides(parsed)
        conversion = convert({**raw, **flat}, source=str(path))
        raw = conversion.native
    raw.setdefault("run_name", path.stem)
    for keys, value in parsed:
        apply_override(raw, keys, value)
    try:
        return from_dict(RunConfig, raw), conversion
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_config(path_or_name: str | pathlib.Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Reads a YAML recipe (a path or a recipe name; None: the CPU quickstart), applies
    `--set`-style overrides ("a.b=c", value parsed as YAML) in order, and validates.

    The recipe is ours (sections) or a flat TRL / open-r1 recipe, converted on the way
    (`load_recipe`). `run_name` defaults to the file's stem when the file does not set it.
    """
    return load_recipe(path_or_name, overrides)[0]


# ---------------------------------------------------------------------------- field listing
def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return ""
    else:
        return "required"
    return yaml.safe_dump(config_to_dict(value), default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def field_rows(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(qualified key, type, default, help incl. range) for every leaf field below `cls`; the
    fields of list-of-section values (data.sources) appear as `key[].field`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if _is_section(hint):
            rows += field_rows(hint, f"{prefix}{f.name}.")
            continue
        bounds = range_text(f.metadata)
        help_text = f.metadata.get("help", "")
        if bounds:
            help_text += f" [{bounds}{' ' + f.metadata['note'] if f.metadata.get('note') else ''}]"
        rows.append((f"{prefix}{f.name}", _type_name(hint), _default_text(f), help_text))
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and args and _is_section(args[0]):
            rows += field_rows(args[0], f"{prefix}{f.name}[].")
    return rows


def describe_fields(section: str | None = None) -> str:
    """Every config field (or those of one section) as text: key, type, default, help."""
    rows = [r for r in field_rows() if section is None or r[0].startswith(section.rstrip(".") + ".")
            or r[0] == section]
    if not rows:
        sections = sorted({r[0].split(".")[0] for r in field_rows() if "." in r[0]})
        raise ConfigError(f"no config section {section!r}{did_you_mean(section or '', sections)}; "
                          f"sections: {', '.join(sections)}")
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {key:<{width}}  {help_text} ({type_name}; default {default or '-'})"
                     for key, type_name, default, help_text in rows)
