"""Test set-up: 8 fake CPU devices for every test, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep test output readable and deterministic.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One persistent compilation cache for the whole session, every program in it: dozens of
# tests (in-process and CLI subprocesses) compile the same small models' programs, a third of
# a quickstart run's time on 2 cores (measured: 27 s -> 12 s of CPU per run with hits). Made
# here, in the first process (xdist's controller, or pytest alone), before any worker starts:
# workers and subprocesses inherit the variables. Cache hits are still counted as compilations
# (compile/count), so the no-recompilation tests keep their meaning.
if "OPENRS_COMPILATION_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="openrs-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["OPENRS_COMPILATION_CACHE"] = _cache  # the CLIs (openrs_jax.train)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)  # JAX in this process and its children
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pathlib

import pytest
from jaxtyping import install_import_hook

# Every annotation of the modules with array annotations is checked at run time, shapes
# included (jaxtyping binds the README's shape letters per call; beartype checks the types): a
# function called with a wrong shape or type raises in the tests. Installed before anything
# imports them (this conftest is imported first, in the main process and in every xdist
# worker); CLIs run as subprocesses are not checked.
CHECKED_MODULES = (
    "openrs_jax.grpo",
    "openrs_jax.model.attention",
    "openrs_jax.model.causal_lm",
    "openrs_jax.model.decode_attention",
    "openrs_jax.model.layers",
    "openrs_jax.rollout.sampling",
)
install_import_hook(CHECKED_MODULES, "beartype.beartype")

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data beside the checkout (benchmarks, training set, real tokenizer)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} not found: tests expect ../shared/data beside the repository")
    return SHARED_DATA


@pytest.fixture
def unchecked():
    """Run-time annotation checks off for one test: for tests of a function's own argument
    validation, which callers outside the tests (unchecked) rely on."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)



def pytest_collection_modifyitems(config, items):
    """Files with more slow tests first, the rest in their usual order (a stable sort): with two
    pytest-xdist workers taking one file at a time (scripts/test.sh, which turns off xdist's own
    reordering by test count), a long file collected last keeps one worker busy for minutes
    while the other has nothing left to run."""
    slow: dict = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
