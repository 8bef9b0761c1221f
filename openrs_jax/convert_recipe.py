"""Convert a TRL / open-r1 GRPO recipe (flat keys) to our sectioned YAML.

    python -m openrs_jax.convert_recipe recipes/grpo.yaml -o openrs3.yaml --num_processes 3 --cosine_max_len 3584
    openrs-convert-recipe config_demo.yaml --trl_defaults open-r1 --num_processes 7

Arguments after the recipe are given the way TRL's own scripts take them: `--KEY VALUE` (or
`--KEY=VALUE`) sets a recipe key (`--cosine_max_len 3584`, as Open-RS's exp-3 launch did) or
one of the launch keys `num_processes` (as given to `accelerate launch`) and `trl_defaults`
(whose defaults fill the keys the recipe leaves out: open-rs, open-r1, trl);
`--set a.b=c` sets a field of the converted config. The output is the whole resolved config
(every field spelled out) with the conversion notes as a comment header; `train --config` reads
it, and reads the TRL recipe itself the same way (openrs_jax/config/trl.py).
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys

from openrs_jax.cli import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m openrs_jax.convert_recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", help="a TRL / open-r1 GRPO recipe (YAML with flat keys)")
    ap.add_argument("-o", "--output", default=None, help="write the converted YAML here (default: stdout)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="set a field of the converted config, e.g. --set rollout.engine=vllm (repeatable)")
    return ap


def trl_style_args(tokens: list[str]) -> list[str]:
    """`--key value` / `--key=value` / `--flag` tokens as `key=value` overrides (values YAML)."""
    out, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise UserError(f"unexpected argument {token!r}: give recipe keys as --KEY VALUE")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = "true"
        out.append(f"{key}={value}")
        i += 1
    return out


def convert_file(recipe: str, overrides: list[str], command: str | None = None) -> str:
    """The converted YAML text: a comment header (source, command, notes), then the config."""
    from openrs_jax.config import ConfigError, dump_yaml, load_recipe

    cfg, conversion = load_recipe(recipe, overrides)
    if conversion is None:
        raise ConfigError(f"{recipe} is already in our format (it has sections such as model: / optim:); "
                          "nothing to convert")
    header = [f"# Converted from the TRL/open-r1 recipe {recipe} by openrs_jax.convert_recipe."]
    if command:
        header.append(f"#   {command}")
    header += ["#", "# Notes:"] + [f"# - {note}" for note in conversion.notes] + [""]
    return "\n".join(header) + dump_yaml(cfg)


def main(argv=None) -> int:
    args, rest = build_parser().parse_known_args(argv)

    def run() -> int:
        overrides = trl_style_args(rest) + list(args.overrides)
        command = shlex.join(["python", "-m", "openrs_jax.convert_recipe", *(sys.argv[1:] if argv is None else argv)])
        text = convert_file(args.recipe, overrides, command)
        if args.output is None:
            sys.stdout.write(text)
        else:
            pathlib.Path(args.output).write_text(text, encoding="utf-8")
            print(f"wrote {args.output}", file=sys.stderr)
        return 0

    return run_cli("openrs_jax.convert_recipe", run)


if __name__ == "__main__":
    sys.exit(main())
