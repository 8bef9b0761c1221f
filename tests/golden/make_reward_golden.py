"""Golden rewards: Open-RS's own reward code, run once on the corpus of `reward_corpus.py`.

Nothing of Open-RS is copied into this repository. This script imports `rewards.py` from a
checkout of knoveleng/open-rs at 2889c47 (checked by its git blob id) and runs it inside a
throwaway virtual environment holding the math-verify version under test, then stores the
values as JSON; `tests/rewards/test_openrs_golden.py` asserts that our rewards reproduce them.

    git -C open-rs archive 2889c47 src/open_r1 | tar -x -C /tmp/open-rs     # any checkout
    python -m venv /tmp/venv-ref
    /tmp/venv-ref/bin/pip install math-verify==0.5.2 sympy==1.13.1        # as the run had them
    /tmp/venv-ref/bin/python tests/golden/make_reward_golden.py \
        --open-rs /tmp/open-rs --data ../shared/data

Open-RS pinned math-verify==0.5.2 (which pins latex2sympy2_extended==1.0.6) and torch 2.5.1
(which pins sympy==1.13.1). The output file is named after the math-verify version, so a run
in a venv with another version (e.g. 0.9.0) writes a second file beside the first.

`rewards.py` does `from .utils import is_e2b_available` (its package's utils import
transformers and TRL) and, when E2B is available, imports `dotenv` and
`e2b_code_interpreter.AsyncSandbox`; without them the module does not import at all (an
annotation names `AsyncSandbox`), so the run had them installed. We give it stubs of the three:
`is_e2b_available()` True, a no-op `load_dotenv`, an empty `AsyncSandbox` class. They only
serve the code-execution rewards, which we do not run. Each reward is called as Open-RS's trainer
called it: TRL's conversational completions `[[{"role": "assistant", "content": text}]]` and
the `solution` column.

A case any of whose rewards takes over `--slow-s` seconds is left out (listed under
`excluded`): math-verify's signal timeouts (3 s in 0.5.2) make such cases depend on the
machine's speed. sympy's cache is cleared before each case, so the time measured is that of a
cold start, not a cache hit left by an earlier case about the same expression.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import pathlib
import platform
import sys
import time
import types

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reward_corpus import COSINE_MAX_LEN, build_corpus, corpus_sha256, golden_path  # noqa: E402

OPENRS_COMMIT = "2889c47"
REWARDS_BLOB = "49d587da0f5bb341c5daede7cff085770cdf65d8"  # git rev-parse 2889c47:src/open_r1/rewards.py

# exp 3 (recipes/grpo.yaml + grpo.py's script-argument defaults).
COSINE_KWARGS = dict(
    min_value_wrong=0.0, max_value_wrong=-0.5, min_value_correct=0.5, max_value_correct=1.0,
    max_len=COSINE_MAX_LEN,
)
REPETITION_KWARGS = dict(ngram_size=3, max_penalty=-1.0)  # grpo.py defaults


def _git_blob_id(path: pathlib.Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def load_openrs_rewards(checkout: pathlib.Path) -> types.ModuleType:
    """`open_r1.rewards` from `checkout` (its src/open_r1/rewards.py), with stubbed E2B imports."""
    path = checkout / "src" / "open_r1" / "rewards.py"
    blob = _git_blob_id(path)
    if blob != REWARDS_BLOB:
        raise SystemExit(f"{path} is blob {blob}, not open-rs@{OPENRS_COMMIT}'s {REWARDS_BLOB}")
    package = types.ModuleType("open_r1")
    package.__path__ = [str(path.parent)]
    utils = types.ModuleType("open_r1.utils")
    utils.is_e2b_available = lambda: True
    dotenv = types.ModuleType("dotenv")
    dotenv.load_dotenv = lambda *a, **k: None
    e2b = types.ModuleType("e2b_code_interpreter")
    e2b.AsyncSandbox = type("AsyncSandbox", (), {})
    sys.modules.update({"open_r1": package, "open_r1.utils": utils, "dotenv": dotenv,
                        "e2b_code_interpreter": e2b})
    spec = importlib.util.spec_from_file_location("open_r1.rewards", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["open_r1.rewards"] = module
    spec.loader.exec_module(module)
    return module


def _versions() -> dict[str, str]:
    names = ("math-verify", "latex2sympy2_extended", "sympy", "antlr4-python3-runtime")
    return {n: importlib.metadata.version(n) for n in names} | {"python": platform.python_version()}


def dump_golden(golden: dict) -> str:
    """JSON with one line per reward's value list (about 9,000 values each)."""
    head = json.dumps({**golden, "values": None}, indent=1)
    values = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in golden["values"].items())
    return head.replace('"values": null', '"values": {\n' + values + "\n }") + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open-rs", type=pathlib.Path, required=True, help="a knoveleng/open-rs checkout at 2889c47")
    ap.add_argument("--data", type=pathlib.Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--slow-s", type=float, default=0.5)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()

    rw = load_openrs_rewards(args.open_rs)
    fns = {
        "format": rw.format_reward,
        "accuracy": rw.accuracy_reward,
        "cosine": rw.get_cosine_scaled_reward(**COSINE_KWARGS),
        "repetition_penalty": rw.get_repetition_penalty_reward(**REPETITION_KWARGS),
    }
    cases = build_corpus(args.data)
    values: dict[str, list] = {name: [] for name in fns}
    excluded: dict[str, str] = {}
    t_start = time.time()
    import sympy.core.cache

    for n, case in enumerate(cases):
        sympy.core.cache.clear_cache()
        completions = [[{"role": "assistant", "content": case["completion"]}]]
        row, slowest = {}, 0.0
        for name, fn in fns.items():
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # Open-RS prints parse failures
                try:
                    row[name] = fn(completions, solution=[case["gold"]])[0]
                except Exception as exc:  # noqa: BLE001 - Open-RS's cosine has no try/except
                    row[name] = f"raises {type(exc).__name__}"
            slowest = max(slowest, time.perf_counter() - t0)
        if slowest > args.slow_s:
            excluded[case["name"]] = f"slow: {slowest:.2f} s"
            row = {name: None for name in fns}
        for name in fns:
            values[name].append(row[name])
        if n % 500 == 0:
            print(f"{n}/{len(cases)} cases, {time.time() - t_start:.0f} s", file=sys.stderr)

    versions = _versions()
    out = args.out or golden_path(versions["math-verify"])
    golden = {
        "about": "Open-RS's rewards on tests/golden/reward_corpus.py; written by make_reward_golden.py",
        "source": {"repo": "knoveleng/open-rs", "commit": OPENRS_COMMIT, "rewards_py_blob": REWARDS_BLOB},
        "versions": versions,
        "kwargs": {"cosine": COSINE_KWARGS, "repetition_penalty": REPETITION_KWARGS},
        "corpus_sha256": corpus_sha256(cases),
        "num_cases": len(cases),
        "excluded": excluded,
        "values": values,
    }
    out.write_text(dump_golden(golden))
    print(f"wrote {out}: {len(cases)} cases, {len(excluded)} excluded, {time.time() - t_start:.0f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
