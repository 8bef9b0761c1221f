"""pyproject.toml declares what the package imports: every third-party module that openrs_jax
imports (at module level or inside a function) comes from a declared distribution, imports outside
the benchmarks come from the base dependencies (a fresh `pip install .` runs them), and every base
dependency is imported, or listed below with the reason it is needed anyway."""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "openrs_jax"

# Declared but not imported by openrs_jax: why each is needed.
NOT_IMPORTED = {
    "jinja2": "transformers' apply_chat_template renders every prompt with it but does not require it",
    "sympy": "math-verify compares sympy expressions: grading depends on its version (kept beside math-verify)",
}
# Subpackages whose third-party imports may come from an optional extra.
EXTRA_SCOPES = ("openrs_jax.bench",)
# Modules imported only when a user asks for them, from an extra of that name (the import says
# how to install it when missing).
OPTIONAL_IMPORTS = {
    "wandb": "the [wandb] extra: log.report_to: [wandb] (openrs_jax.metrics.WandbWriter)",
    "gguf": "the [gguf] extra: a .gguf file as model.name_or_path (openrs_jax.weights.gguf)",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"[A-Za-z0-9._-]+", req.strip()).group(0))


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    return base, extras


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the openrs_jax modules that import it."""
    found: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "openrs_jax" and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(module)
    return found


def test_every_import_is_declared_and_every_dependency_imported():
    base, extras = _declared()
    dists_of = importlib.metadata.packages_distributions()
    problems, imported = [], set()
    for top, modules in sorted(_imports().items()):
        dists = {_norm(d) for d in dists_of.get(top, [])}
        if not dists:
            problems.append(f"{top} (imported by {sorted(modules)}) belongs to no installed distribution")
            continue
        imported |= dists
        in_base_scope = any(not m.startswith(EXTRA_SCOPES) for m in modules) and top not in OPTIONAL_IMPORTS
        allowed = base if in_base_scope else base | extras
        if not dists & allowed:
            where = "the base dependencies" if in_base_scope else "any dependency list"
            problems.append(f"{top} ({sorted(dists)}, imported by {sorted(modules)[:3]}) is not in {where}")
    for dist in sorted(base - imported - set(NOT_IMPORTED)):
        problems.append(f"{dist} is a dependency that openrs_jax never imports")
    for dist in sorted(set(NOT_IMPORTED) - base):
        problems.append(f"{dist} is listed in NOT_IMPORTED but not declared")
    assert not problems, "\n".join(problems)
