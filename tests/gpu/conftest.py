"""GPU tests: each marked `gpu` and skipped unless JAX's backend is a GPU. tests/conftest.py
makes CPU the default platform, so name the GPU when running them:

    JAX_PLATFORMS=cuda python -m pytest -m gpu tests/gpu        # or: bash scripts/gpu_tests.sh
"""

import pytest


@pytest.fixture(autouse=True)
def _gpu_only(request):
    if request.node.get_closest_marker("gpu") is None:
        return
    import jax

    if jax.default_backend() != "gpu":
        pytest.skip(f"needs a GPU (JAX's backend is {jax.default_backend()}; on a GPU machine set JAX_PLATFORMS=cuda)")
