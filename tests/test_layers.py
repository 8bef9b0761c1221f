"""The dependency direction of STYLE.md: a module never imports one of a higher layer
(imports inside functions count too). L0 modules never import JAX."""

import ast
import pathlib

PKG = pathlib.Path(__file__).resolve().parents[1] / "openrs_jax"

# Longest prefix wins.
LAYERS = {
    "openrs_jax": 0,  # the package's own __init__ (empty: nothing happens at import)
    "openrs_jax.config": 0,
    "openrs_jax.model.config": 0,
    "openrs_jax.data": 0,
    "openrs_jax.rewards": 0,
    "openrs_jax.rollout.base": 0,
    "openrs_jax.metrics": 0,
    "openrs_jax.progress": 0,
    "openrs_jax.plotting": 0,
    "openrs_jax.eval": 0,
    "openrs_jax.hostmem": 0,
    "openrs_jax._compat": 1,
    "openrs_jax.compile_stats": 1,
    "openrs_jax.sharding": 1,
    "openrs_jax.distributed": 1,
    "openrs_jax.compile_log": 1,
    "openrs_jax.model": 2,
    "openrs_jax.weights": 3,
    "openrs_jax.grpo": 3,
    "openrs_jax.rollout": 4,
    "openrs_jax.checkpoint": 4,
    "openrs_jax.trainer": 5,
    "openrs_jax.train": 6,
    "openrs_jax.cli": 6,
    "openrs_jax.evaluate": 6,
    "openrs_jax.export": 6,
    "openrs_jax.serve": 6,
    "openrs_jax.plot": 6,
    "openrs_jax.generate": 6,
    "openrs_jax.convert_recipe": 6,
    "openrs_jax.bench": 6,
}


def layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return None if best is None else best[1]


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for a in node.names:  # `from openrs_jax import grpo`
                yield f"{node.module}.{a.name}"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        mod = module_name(path)
        mine = layer_of(mod)
        assert mine is not None, f"{mod} has no layer in tests/test_layers.py"
        for imp in imports(path):
            if not imp.startswith("openrs_jax"):
                continue
            theirs = layer_of(imp)
            if theirs is not None and theirs > mine and not (imp == "openrs_jax" or imp.startswith(mod)):
                bad.append(f"{mod} (L{mine}) imports {imp} (L{theirs})")
    assert not bad, "\n".join(bad)


def test_layer0_never_imports_jax():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        mod = module_name(path)
        if layer_of(mod) != 0:
            continue
        for imp in imports(path):
            if imp == "jax" or imp.startswith(("jax.", "flax", "optax", "orbax")):
                bad.append(f"{mod} imports {imp}")
    assert not bad, "\n".join(bad)
