"""User errors in the command-line tools: one line on stderr and a non-zero exit code;
tracebacks for bugs, and for everything with OPENRS_DEBUG=1 (openrs_jax/cli.py)."""

import errno
import os
import pathlib
import subprocess
import sys

import pytest

from openrs_jax.checkpoint import CheckpointError
from openrs_jax.cli import UserError, run_cli
from openrs_jax.config import ConfigError
from openrs_jax.data import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]


def raising(exc):
    def main():
        raise exc

    return main


@pytest.mark.parametrize(
    "exc,code,line",
    [
        (UserError("--out x is not empty"), 2, "error: --out x is not empty"),
        (ConfigError("optim.lr: must be > 0"), 2, "error: optim.lr: must be > 0"),
        (DataError("f.jsonl, line 3: malformed JSON"), 1, "error: DataError: f.jsonl, line 3: malformed JSON"),
        (CheckpointError("no checkpoints in d"), 1, "error: CheckpointError: no checkpoints in d"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.jsonl"), 1,
         "error: FileNotFoundError: [Errno 2] No such file or directory: 'x.jsonl'"),
        (OSError(errno.ENOSPC, "No space left on device"), 1, "error: OSError: [Errno 28] No space left on device"),
        (ValueError("bad value"), 1, "error: ValueError: bad value"),
    ],
)
def test_user_errors_are_one_line(exc, code, line, capsys, monkeypatch):
    monkeypatch.delenv("OPENRS_DEBUG", raising=False)
    assert run_cli("prog", raising(exc)) == code
    assert capsys.readouterr().err == line + "\n"


def test_bugs_keep_their_traceback_and_debug_shows_all(monkeypatch):
    monkeypatch.delenv("OPENRS_DEBUG", raising=False)
    with pytest.raises(KeyError):
        run_cli("prog", raising(KeyError("a bug")))
    monkeypatch.setenv("OPENRS_DEBUG", "1")
    with pytest.raises(DataError):
        run_cli("prog", raising(DataError("shown with its traceback")))


def test_exit_codes_of_success_interrupt_and_system_exit(capsys, monkeypatch):
    monkeypatch.delenv("OPENRS_DEBUG", raising=False)
    assert run_cli("prog", lambda: 0) == 0 and run_cli("prog", lambda: None) == 0 and run_cli("prog", lambda: 3) == 3
    assert run_cli("prog", raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "prog: interrupted\n"
    with pytest.raises(SystemExit, match="a message"):
        run_cli("prog", raising(SystemExit("a message")))


def cli(*args, debug=False, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    env.pop("OPENRS_DEBUG", None)
    if debug:
        env["OPENRS_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def test_evaluate_missing_benchmark_file_is_one_line(tmp_path):
    """It printed a FileNotFoundError traceback."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    args = ("openrs_jax.evaluate", "--model", str(model), "--benchmarks", "aime24", "--data-dir", str(tmp_path / "none"),
            "--output", str(tmp_path / "out"))
    proc = cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: FileNotFoundError: ") and "aime24" in last
    assert "Traceback" in cli(*args, debug=True).stderr


def test_generate_damaged_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    from run_utils import make_run_dir

    from openrs_jax import generate

    monkeypatch.delenv("OPENRS_DEBUG", raising=False)
    run = tmp_path / "run"
    make_run_dir(run, steps=(1,))
    damaged = max((p for p in (run / "checkpoints" / "1").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    damaged.write_bytes(bytes(damaged.stat().st_size))
    assert generate.main(["--model", str(run), "--prompt", "max 1 2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --model {run}: no intact checkpoint in {run / 'checkpoints'}: step 1: ")
    assert "\n" not in err


def test_generate_unreachable_vllm_server_is_one_line(tmp_path, capsys, monkeypatch):
    """It printed a traceback, after retrying for the whole retry timeout."""
    from flax import nnx

    from openrs_jax import generate
    from openrs_jax.data import build_quickstart_tokenizer
    from openrs_jax.model import Qwen2, tiny
    from openrs_jax.rollout import vllm_engine
    from openrs_jax.rollout.vllm_server import free_port
    from openrs_jax.weights import save_hf

    class Clock:  # the engine's retries run on virtual time
        now = 0.0

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.now += seconds

    monkeypatch.setattr(vllm_engine, "time", Clock())
    monkeypatch.delenv("OPENRS_DEBUG", raising=False)
    tok = build_quickstart_tokenizer()
    save_hf(Qwen2(tiny(vocab_size=len(tok)), rngs=nnx.Rngs(0)), tmp_path / "hf", tokenizer=tok)
    port = free_port()
    code = generate.main(["--model", str(tmp_path / "hf"), "--prompt", "max 1 2", "--engine", "vllm",
                          "--vllm-url", f"http://127.0.0.1:{port}"])
    line = capsys.readouterr().err.strip()
    assert code == 1
    assert line.startswith(f"error: VLLMUnavailableError: no vLLM server answers at http://127.0.0.1:{port}")
    assert "python -m openrs_jax.serve" in line and "\n" not in line
