"""`python -m openrs_jax.evaluate`: the Open-RS benchmarks (paper Table 1) for one model.

    python -m openrs_jax.evaluate --model DIR --benchmarks aime24,math500,amc23,minerva,olympiadbench \\
        [--samples K] [--data-dir DIR] [--engine jax|vllm] [--max-new-tokens N] [--output DIR]

--model is an HF directory (config.json, safetensors, tokenizer), a .gguf file, or a training run directory
(Orbax checkpoints; `--step N`, default the latest). Benchmarks come from the hub datasets
Open-RS used, or with --data-dir from local `<name>.jsonl` files (e.g. ../shared/data).
Generation as in the paper: the model's chat template, no system prompt, the lighteval math
prompt, temperature 0.6, top-p 0.95, up to 32,768 new tokens; grading with math-verify and
lighteval's extraction settings (openrs_jax/eval/grading.py).

Input tokens: the chat-template text is encoded as is (one BOS, as the model was trained).
`--lighteval-tokens` encodes it the way lighteval's vLLM backend did when Open-RS ran its
evaluations (`tokenizer(text)`: special tokens added, so R1-distill prompts start with two
BOS tokens), reproducing those runs' input tokens exactly.

Writes to --output: `records/<benchmark>.jsonl` (one line per problem: prompt, completions,
extracted answers, gold, correct), `results.json` (pass@1, avg@k ± standard error, pass@k,
lengths, settings), `results.md` (Table 1's layout with the paper's published rows beside
ours), `results/<model>/results_<time>.json` (lighteval's results layout: task
`custom|<task>|0`, `extractive_match` = pass@1 and its `_stderr`, and "all") and
`run_config.json`. Records are appended after every chunk of --chunk-size problems,
so a killed evaluation, started again with the same command, resumes where it stopped (and
writes what an uninterrupted run would have).

Engines: `jax` (default) samples in this process; `vllm` talks to a vLLM server, either
running (`--vllm-url`) or started here from the HF directory (`--vllm-launch`, with
`--vllm-args` passed to vLLM, e.g. "--max-model-len 33792 --gpu-memory-utilization 0.8").
A model from a run directory is pushed to the server with the engine's weight sync; with an
HF directory and --vllm-url the server must already serve those weights (nothing is pushed).

Several processes (`srun`, `mpirun`, a JobSet, or --coordinator-address/--num-processes/
--process-id; docs/MULTIHOST.md): the jax engine samples on one mesh over every process's
devices (rows data-parallel), every process grades the same completions, and process 0 alone
writes --output. The vllm engine runs in one process (its server does the sampling).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
import signal
import sys
import time
from typing import Any, Callable, Sequence

from openrs_jax import progress
from openrs_jax.cli import UserError, run_cli
from openrs_jax.eval import benchmarks as bm
from openrs_jax.eval import grading, report
from openrs_jax.eval.runner import EvalSettings, Records, RecordStore, evaluate_benchmark

RUN_CONFIG = "run_config.json"
# Settings that change what is measured: a resumed run must match them exactly.
_IDENTITY_KEYS = ("model", "step", "samples", "max_new_tokens", "temperature", "top_p", "seed", "think_prefill",
                  "add_special_tokens", "prompt_template", "data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m openrs_jax.evaluate",
        description="Evaluate a model on the Open-RS benchmarks (pass@1, avg@k, Table 1).",
    )
    p.add_argument("--model", required=True, help="HF model directory, a .gguf file, or a training run directory (Orbax)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a run directory (default: latest)")
    p.add_argument("--benchmarks", default="all",
                   help=f"comma-separated, from {', '.join(bm.BENCHMARK_ORDER)} (default: all)")
    p.add_argument("--samples", type=int, default=1, help="k samples per problem (pass@1 uses the first)")
    p.add_argument("--data-dir", default=None, help="local <benchmark>.jsonl files (default: the HF hub)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    p.add_argument("--engine", choices=("jax", "vllm"), default="jax")
    p.add_argument("--max-new-tokens", type=int, default=bm.MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=bm.TEMPERATURE)
    p.add_argument("--top-p", type=float, default=bm.TOP_P)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="output directory (default: eval_results/<model name>)")
    p.add_argument("--label", default=None, help="row name in results.md (default: the model name)")
    p.add_argument("--chunk-size", type=int, default=64,
                   help="problems per generate call and per JSONL append (the resume unit); the JAX engine "
                        "holds chunk x samples KV caches of prompt + max-new-tokens")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    p.add_argument("--no-think-prefill", dest="think_prefill", action="store_false",
                   help="do not append '<think>\\n' to prompts whose template does not end with it")
    p.add_argument("--lighteval-tokens", dest="add_special_tokens", action="store_true",
                   help="encode prompts as lighteval did for Open-RS: the template text with the tokenizer's special "
                        "tokens added (two BOS tokens for R1-distill); default: the template text as is")
    p.add_argument("--grading-workers", type=int, default=2, help="math-verify worker processes (0: inline)")
    p.add_argument("--grading-timeout", type=float, default=20.0, help="hard limit per graded completion (s)")
    jax_group = p.add_argument_group("jax engine")
    jax_group.add_argument("--dtype", default="bfloat16",
                           help="compute dtype (HF directories: also the parameter dtype); default bfloat16")
    jax_group.add_argument("--max-batch-size", type=int, default=256, help="rows decoded at once")
    jax_group.add_argument("--prompt-bucket", type=int, default=128, help="prompt lengths round up to this")
    vllm_group = p.add_argument_group("vllm engine")
    vllm_group.add_argument("--vllm-url", default=None, help="a running server (python -m openrs_jax.serve) serving --model's weights")
    vllm_group.add_argument("--vllm-launch", action="store_true", help="start a server from the HF directory")
    vllm_group.add_argument("--vllm-python", default=None, help="interpreter with vllm (default: see serve.py)")
    vllm_group.add_argument("--vllm-args", default="", help="extra vLLM server flags for --vllm-launch")
    vllm_group.add_argument("--vllm-startup-timeout", type=float, default=600.0)
    from openrs_jax.cli import add_distributed_arguments

    add_distributed_arguments(p)
    return p


def _log(message: str) -> None:
    progress.write(f"openrs_jax.evaluate: {message}")  # above an active progress bar


# ---------------------------------------------------------------------------- model
@dataclasses.dataclass
class LoadedModel:
    """What the engines need: the tokenizer always; `hf_dir` when the weights are an HF
    directory; `model` (NNX) when loaded in this process; `step` for run directories."""

    name: str
    tokenizer: Any
    hf_dir: pathlib.Path | None = None
    model: Any = None
    step: int | None = None


def is_hf_dir(path: pathlib.Path) -> bool:
    return (path / "config.json").is_file()


def load_run_dir(path: pathlib.Path, step: int | None, dtype: str):
    """(model, tokenizer, step) of a training run, through `openrs_jax.checkpoint`."""
    try:
        from openrs_jax.checkpoint import load_model_from_run
    except ImportError as e:
        raise SystemExit(
            f"openrs_jax.evaluate: {path} has no config.json, so it is read as a training run directory, but "
            f"openrs_jax.checkpoint.load_model_from_run is not available ({e}). Pass an HF model directory "
            "instead (e.g. one exported with openrs_jax.weights.save_hf)."
        ) from None
    return load_model_from_run(path, step=step, dtype=dtype, mesh=global_mesh())


def eos_and_pad(loaded: LoadedModel) -> tuple[list[int], int]:
    """EOS ids and pad id by the rule training uses (`openrs_jax.data.eos_and_pad`): the
    tokenizer's and the model config's (the loaded model's, else the HF directory's config.json)."""
    from openrs_jax.data import eos_and_pad as rule

    if loaded.model is not None:
        model_eos = loaded.model.config.eos_token_id
    else:
        assert loaded.hf_dir is not None  # load_model sets the model or the HF directory
        model_eos = json.loads((loaded.hf_dir / "config.json").read_text()).get("eos_token_id")
    try:
        return rule(loaded.tokenizer, model_eos)
    except ValueError as e:
        raise SystemExit(f"openrs_jax.evaluate: {e}") from None


def global_mesh():
    """With several processes: a data-parallel mesh over every process's devices (the model
    must span them all); None in one process (the model sits on one device)."""
    from openrs_jax import distributed as dist

    if dist.process_count() == 1:
        return None
    from openrs_jax.sharding import make_mesh

    return make_mesh({"data": -1, "fsdp": 1, "tensor": 1})


def load_model(args: argparse.Namespace, need_weights: bool) -> LoadedModel:
    """Resolves --model. HF directories load weights only when `need_weights` (the jax
    engine); run directories always do (the vllm engine then pushes them to the server)."""
    from openrs_jax.data import load_tokenizer

    path = pathlib.Path(args.model)
    if path.suffix.lower() == ".gguf" and path.is_file():
        from openrs_jax.weights import hf_dir

        path = hf_dir(path)  # dequantised once into a cached HF directory
    if not path.is_dir():
        raise SystemExit(f"openrs_jax.evaluate: --model {path} is not a directory (or a .gguf file)")
    if is_hf_dir(path):
        if args.step is not None:
            raise SystemExit(f"openrs_jax.evaluate: --step is for run directories; {path} is an HF directory")
        tokenizer = load_tokenizer(args.tokenizer or path)
        model = None
        if need_weights:
            import jax.numpy as jnp

            from openrs_jax.weights import load_hf

            model = load_hf(path, dtype=jnp.dtype(args.dtype), mesh=global_mesh())
        return LoadedModel(path.resolve().name, tokenizer, hf_dir=path, model=model)
    model, tokenizer, step = load_run_dir(path, args.step, args.dtype)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    return LoadedModel(f"{path.resolve().name}-step{step}", tokenizer, model=model, step=step)


# ---------------------------------------------------------------------------- engine
def make_engine(args: argparse.Namespace, loaded: LoadedModel, out_dir: pathlib.Path):
    """(engine, close) for --engine, from the one engine builder (openrs_jax.rollout.build);
    `close()` stops what it started."""
    from openrs_jax.rollout.build import EngineSpec, VLLMOptions, build_engine

    eos, pad = eos_and_pad(loaded)
    if args.engine == "vllm" and bool(args.vllm_url) == bool(args.vllm_launch):
        raise UserError("--engine vllm needs exactly one of --vllm-url URL or --vllm-launch")
    spec = EngineSpec(
        kind=args.engine,
        # pow2_rows: each benchmark's last chunk has its own size; powers of two cap the shapes
        # the sampler compiles for (about 40 s each for the 1.5B model on an H100).
        jax_options={"max_batch_size": args.max_batch_size, "prompt_bucket": args.prompt_bucket, "pow2_rows": True},
        vllm=VLLMOptions(url=args.vllm_url, launch=bool(args.vllm_launch), server_args=tuple(shlex.split(args.vllm_args)),
                         python=args.vllm_python, startup_timeout=args.vllm_startup_timeout,
                         # A run directory's weights, not what the server loaded from an HF directory.
                         push_weights=loaded.model is not None and loaded.hf_dir is None),
    )
    return build_engine(spec, loaded.model, eos_token_ids=eos, pad_token_id=pad, work_dir=out_dir,
                        tokenizer=loaded.tokenizer, mesh=global_mesh() if args.engine == "jax" else None,
                        hf_dir=loaded.hf_dir, log=_log)


# ---------------------------------------------------------------------------- run
def run_settings(args: argparse.Namespace) -> EvalSettings:
    return EvalSettings(
        samples=args.samples, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, chunk_size=args.chunk_size, think_prefill=args.think_prefill,
        add_special_tokens=args.add_special_tokens,
    )


def check_run_config(out_dir: pathlib.Path, config: dict[str, Any], write: bool = True) -> None:
    """Check that a resumed run in `out_dir` measures the same thing, then (if `write`)
    write run_config.json. Keys missing from `config` are not compared (a pre-check before
    the model is loaded does not know the step yet)."""
    path = out_dir / RUN_CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        keys = [k for k in _IDENTITY_KEYS if k in config]
        diff = {k: (old.get(k), config.get(k)) for k in keys if old.get(k) != config.get(k)}
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise SystemExit(
                f"openrs_jax.evaluate: {out_dir} holds an evaluation with other settings ({shown}); "
                "use another --output directory"
            )
        if write:
            for key in ("engine", "chunk_size"):
                if old.get(key) != config.get(key):
                    _log(f"warning: resuming with {key} {config.get(key)!r} (was {old.get(key)!r}); new records "
                         "will not be bit-identical to an uninterrupted run")
    if write:
        report.atomic_write_text(path, json.dumps(config, indent=2) + "\n")


class SharedStore:
    """A benchmark's RecordStore as every process of a multi-process evaluation sees it:
    process 0 reads (and repairs) the file and sends what it read to the others, so all skip
    the same chunks; only process 0 appends."""

    def __init__(self, store: RecordStore):
        from openrs_jax import distributed as dist

        self._dist = dist
        self._store = store
        self.path, self.samples, self.dropped = store.path, store.samples, 0

    def load(self) -> dict[int, dict[str, Any]]:
        mine = (self._store.load(), self._store.dropped) if self._dist.is_primary() else None
        done, self.dropped = self._dist.broadcast_object("eval-records", mine)
        return done

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if self._dist.is_primary():
            self._store.append(records)


def default_output(args: argparse.Namespace) -> pathlib.Path:
    name = pathlib.Path(args.model).resolve().name + ("" if args.step is None else f"-step{args.step}")
    return pathlib.Path("eval_results") / name


def evaluate(args: argparse.Namespace, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Runs the evaluation described by parsed CLI arguments; returns the results dict."""
    from openrs_jax import distributed as dist

    primary = dist.is_primary() if dist.is_initialized() else True
    if not primary:
        log = lambda message: None
    if args.engine == "vllm" and dist.is_initialized():
        from openrs_jax.cli import UserError

        raise UserError("--engine vllm evaluates in one process (the server samples); start it without "
                        "--num-processes / the multi-process launcher")
    names = bm.parse_benchmarks(args.benchmarks)
    settings = run_settings(args)
    problems = {n: bm.load_benchmark(n, args.data_dir, args.limit) for n in names}
    if args.engine == "jax" and (args.vllm_url or args.vllm_launch):
        raise SystemExit("openrs_jax.evaluate: --vllm-url / --vllm-launch need --engine vllm")
    out_dir = pathlib.Path(args.output) if args.output else default_output(args)
    config = {
        "model": str(pathlib.Path(args.model).resolve()),
        **{k: v for k, v in dataclasses.asdict(settings).items()},
        "prompt_template": bm.MATH_QUERY_TEMPLATE,
        "data": str(pathlib.Path(args.data_dir).resolve()) if args.data_dir else "hub",
        "engine": args.engine,
        "benchmarks": names,
        "limit": args.limit,
        "command": shlex.join([sys.executable, "-m", "openrs_jax.evaluate", *sys.argv[1:]]),
    }
    check_run_config(out_dir, config, write=False)  # fail before loading weights
    loaded = load_model(args, need_weights=args.engine == "jax" or not is_hf_dir(pathlib.Path(args.model)))
    config["step"] = loaded.step
    out_dir.mkdir(parents=True, exist_ok=True)
    check_run_config(out_dir, config, write=primary)
    pool = grading.grading_pool(args.grading_workers, args.grading_timeout)
    engine, close = make_engine(args, loaded, out_dir)
    per_benchmark: dict[str, dict[str, Any]] = {}
    started = time.time()
    try:
        for name in names:
            t0 = time.perf_counter()
            store: Records = RecordStore(out_dir / "records" / f"{name}.jsonl", settings.samples)
            if dist.is_initialized():
                store = SharedStore(store)
            result = evaluate_benchmark(problems[name], engine, loaded.tokenizer, settings, pool, store, log,
                                        progress_stream=sys.stdout if primary else None)
            summary = dict(result.summary)
            summary.update(
                time_s=time.perf_counter() - t0, generated_tokens=result.generated_tokens,
                generate_s=result.generate_s, grade_s=result.grade_s, resumed_problems=result.resumed,
            )
            per_benchmark[name] = summary
            log(f"[{name}] pass@1 {100 * summary['pass@1']:.1f}  avg@{settings.samples} "
                f"{100 * summary['avg@k']:.1f} ± {100 * summary['avg@k_se']:.1f}  ({summary['n']} problems)")
    finally:
        close()
    results = report.build_results(per_benchmark, samples=settings.samples,
                                   settings={k: v for k, v in config.items() if k != "prompt_template"})
    if not primary:
        return results
    json_path, md_path = report.write_reports(out_dir, results, label=args.label or loaded.name)
    lighteval_path = report.write_lighteval_results(out_dir, results, model_name=args.label or loaded.name,
                                                    started=started, ended=time.time(), limit=args.limit)
    print(report.markdown_table(results, args.label or loaded.name, published=False), flush=True)
    log(f"wrote {json_path}, {md_path}, {lighteval_path} and {out_dir / 'records'}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    # SIGTERM ends the run through `finally` blocks (a launched vLLM server is stopped); the
    # records written so far stay, and the same command resumes.
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    def run() -> int:
        from openrs_jax.cli import start_distributed
        from openrs_jax.compile_log import announce_compiles

        start_distributed(args, log=_log)  # several processes: join them before JAX starts
        from openrs_jax import distributed as dist

        say = _log if dist.is_primary() else (lambda line: None)  # process 0 speaks for all
        with announce_compiles(say, prefix=""):  # "compiling jit(prefill) ..." and its time
            evaluate(args)
        return 0

    # User errors (a missing file, a damaged checkpoint, an unreachable server) as one line.
    return run_cli("openrs_jax.evaluate", run)


if __name__ == "__main__":
    sys.exit(main())
