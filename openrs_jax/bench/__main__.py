"""`openrs-bench`: the GRPO update, the reference forward and generation for the 1.5B shape
(random init, bf16), our JAX implementation against PyTorch (HF transformers), in one run on
one GPU; one table and one JSON.

    python -m openrs_jax.bench --out bench.json                       # everything (~8 min, H100)
    python -m openrs_jax.bench --phases update --seq 2048 --remat dots,full --chunk 512,1024
    python -m openrs_jax.bench --torch-compile

Phases
- update: JAX `build_train_step` (the trainer's step; variants over --remat and --chunk)
  against the TRL-style PyTorch step
  (eager; also compiled with --torch-compile), micro-batch --batch, T in --seq, prompt --prompt.
- reference: JAX `build_logps_fn` against PyTorch no_grad forward + selective log-softmax,
  T in --ref-seq.
- generation: the `jax` engine against HF `generate` (openrs_jax.bench.decode's workers),
  batch --gen-batch, prompt --prompt, --gen-new new tokens.

Columns: tokens/s counts all T tokens of every row (generation: new tokens); MFU = model
FLOPs (openrs_jax.bench.flops.model_flops: 6·N·T + 6·D·V·C + 6·L·N_h·H·T² per update row,
a third of it per reference row, N without embeddings; generation: 2·(N + D·V) +
4·L·N_h·H·context per new token) / (time × bf16 matmul rate), the rate being the larger of
JAX's and PyTorch's n × n × n product measured first in this run; peak GiB per worker
process; ratio = JAX / PyTorch eager tokens/s at the same phase and T (ratio_compile: against
torch.compile). In each (phase, T) the fastest one-GPU JAX row is marked `*` in notes, and
the JSON's "best" lists it.

Every measurement runs in its own subprocess with a timeout (--timeout; `bench.workers`); an
OOM or failure becomes a row with an error. Results are written to --out after every row. The
workers: `bench.update` (JAX), `bench.torch_trl` (PyTorch), on `bench.spec`'s shape and batch;
the FLOP counts: `bench.flops`. On a CPU (the smoke test) shrink the model with
--layers/--hidden/--intermediate/--heads/--kv-heads/--vocab and use --ceiling-n 256
--skip-generation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from openrs_jax.bench import flops, runner, workers
from openrs_jax.bench.spec import Spec, model_config

PHASES = ("update", "reference", "generation")
COLUMNS = ["phase", "impl", "T", "tokens_per_s", "MFU", "peak_GiB", "ratio", "ratio_compile", "scaling", "notes"]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _strs(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m openrs_jax.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default=",".join(PHASES), help="comma list of update,reference,generation")
    ap.add_argument("--skip-generation", action="store_true", help="drop the generation phase")
    ap.add_argument("--seq", default="1024,2048,4096", help="T values (prompt + completion) for update/reference")
    ap.add_argument("--ref-seq", default="2048", help="T values for the reference phase")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--batch", type=int, default=6, help="micro-batch rows for update/reference")
    ap.add_argument("--remat", default="dots", help="JAX update variants: comma list of none,dots,full")
    ap.add_argument("--chunk", default="512", help="JAX log-prob chunk sizes (comma list)")
    ap.add_argument("--impls", default="jax,torch", help="comma list of jax,torch")
    ap.add_argument("--devices", default="1",
                    help="JAX update over these GPU counts (comma list; a mesh over --parallel, --batch rows per GPU); "
                         "rows with more than one GPU get a `scaling` column against the one-GPU row")
    ap.add_argument("--parallel", default="data",
                    help="mesh axis of the multi-GPU rows: data (replicated state, the trainer's default), "
                         "fsdp (sharded state), or both")
    ap.add_argument("--torch-compile", action="store_true", help="also run PyTorch with torch.compile")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gen-batch", type=int, default=96)
    ap.add_argument("--gen-new", type=int, default=1024)
    ap.add_argument("--gen-repeats", type=int, default=1)
    ap.add_argument("--ceiling-n", type=int, default=16384, help="matmul size of the bf16 ceiling")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement subprocess")
    ap.add_argument("--in-process", action="store_true", help="no subprocesses (tests; CPU only)")
    ap.add_argument("--out", default=None, help="JSON path (rewritten after every row)")
    shape = ap.add_argument_group("model shape (ModelConfig overrides of the 1.5B preset)")
    for flag, field in [("--layers", "num_layers"), ("--hidden", "hidden_size"), ("--intermediate", "intermediate_size"),
                        ("--heads", "num_heads"), ("--kv-heads", "num_kv_heads"), ("--vocab", "vocab_size"),
                        ("--head-dim", "head_dim")]:
        shape.add_argument(flag, dest=field, type=int, default=None)
    args = ap.parse_args(argv)
    phases = _strs(args.phases)
    bad = [p for p in phases if p not in PHASES]
    if bad:
        ap.error(f"--phases: unknown {bad}; known {list(PHASES)}")
    if args.skip_generation:
        phases = [p for p in phases if p != "generation"]
    args.phase_list = phases
    args.impl_list = _strs(args.impls)
    if set(args.impl_list) - {"jax", "torch"}:
        ap.error(f"--impls: expected jax and/or torch, got {args.impls!r}")
    for r in _strs(args.remat):
        if r not in ("none", "dots", "full"):
            ap.error(f"--remat: {r!r} is not none, dots or full")
    for par in _strs(args.parallel):
        if par not in ("data", "fsdp"):
            ap.error(f"--parallel: {par!r} is not data or fsdp")
    args.model = {f: getattr(args, f) for f in ("num_layers", "hidden_size", "intermediate_size", "num_heads",
                                                 "num_kv_heads", "vocab_size", "head_dim") if getattr(args, f) is not None}
    return args


def plan(args) -> list[tuple[str, str, dict[str, Any]]]:
    """The measurements, in order: (phase, worker kind, Spec fields)."""
    base = dict(batch=args.batch, prompt=args.prompt, warmup=args.warmup, repeats=args.repeats, model=args.model)
    out = []
    for phase in ("update", "reference"):
        if phase not in args.phase_list:
            continue
        for t in _ints(args.seq if phase == "update" else args.ref_seq):
            if "jax" in args.impl_list:
                remats = _strs(args.remat) if phase == "update" else ["none"]
                for remat in remats:
                    for chunk in _ints(args.chunk):
                        for n in (_ints(args.devices) if phase == "update" else [1]):
                            for par in (_strs(args.parallel) if n > 1 else ["data"]):  # n = 1: no mesh
                                out.append((phase, f"jax_{phase}", dict(base, seq=t, remat=remat, chunk=chunk,
                                                                        devices=n, parallel=par)))
            if "torch" in args.impl_list:
                out.append((phase, f"torch_{phase}", dict(base, seq=t)))
                if args.torch_compile:
                    out.append((phase, f"torch_{phase}", dict(base, seq=t, compile=True)))
    return out


def _notes(kind: str, spec: Spec, res: dict[str, Any]) -> str:
    if kind.startswith("jax_update"):
        note = f"remat={spec.remat} chunk={spec.chunk}" + (f" devices={spec.devices} {spec.parallel}" if spec.devices > 1 else "")
    elif kind.startswith("jax_reference"):
        note = f"chunk={spec.chunk}"
    else:
        note = "compile" if spec.compile else "eager"
    if "error" in res:
        note += f" [{res['error']}]"
    return note


def make_row(phase: str, kind: str, spec: Spec, res: dict[str, Any], flops_per_s: float | None) -> dict[str, Any]:
    """One table row from a worker record: tokens/s over all B·T tokens and MFU."""
    cfg = model_config(spec.model)
    impl = "jax" if kind.startswith("jax") else ("torch.compile" if spec.compile else "torch")
    row = {"phase": phase, "impl": impl, "T": spec.seq, "notes": _notes(kind, spec, res),
           "spec": dataclasses.asdict(spec), "result": res}
    row["devices"] = spec.devices
    if "step_s" in res:
        tokens = spec.rows * spec.seq
        row["tokens_per_s"] = tokens / res["step_s"]
        if res.get("peak_GiB") is not None:
            row["peak_GiB"] = res["peak_GiB"]  # of the first GPU
        step_flops = spec.rows * flops.model_flops(cfg, spec.seq, spec.completion, phase)
        row["model_TFLOP"] = step_flops / 1e12
        if flops_per_s:  # per GPU
            row["MFU"] = step_flops / (res["step_s"] * flops_per_s * spec.devices)
    return row


def generation_rows(args, flops_per_s: float | None) -> list[dict[str, Any]]:
    """JAX engine and HF generate through openrs_jax.bench.decode's workers (own processes)."""
    cfg = model_config(args.model)
    rows = []
    for kind, impl in (("jax", "jax"), ("hf", "torch")):
        if impl not in args.impl_list:
            continue
        cmd = [sys.executable, "-m", "openrs_jax.bench.decode", "--_worker", kind, "--batches", str(args.gen_batch),
               "--prompt", str(args.prompt), "--new", str(args.gen_new), "--repeats", str(args.gen_repeats)]
        if args.model.get("num_layers") is not None:
            cmd += ["--layers", str(args.model["num_layers"])]
        res = runner.run_json(cmd, timeout_s=args.timeout, env=runner.FULL_GPU_ENV)
        row = {"phase": "generation", "impl": impl, "T": args.prompt + args.gen_new,
               "notes": f"B={args.gen_batch} new={args.gen_new}" + ("" if kind == "jax" else " HF generate")
               + (f" [{res['error']}]" if "error" in res else ""), "result": res}
        if "tokens_per_s" in res:
            row["tokens_per_s"] = res["tokens_per_s"]
            if res.get("peak_GiB") is not None:
                row["peak_GiB"] = res["peak_GiB"]
            if flops_per_s:
                per_tok = flops.decode_flops_per_token(cfg, args.prompt + args.gen_new / 2)
                row["MFU"] = per_tok * res["tokens_per_s"] / flops_per_s
        rows.append(row)
        print(_brief(row), flush=True)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """JAX / PyTorch tokens/s per (phase, T) on every JAX row; marks the fastest one-GPU JAX
    variant with `*`. Returns {phase: {T: best row summary}}."""
    best: dict[tuple[str, int], dict[str, Any]] = {}  # (phase, T) -> row
    for r in rows:
        if r["impl"] != "jax" or "tokens_per_s" not in r:
            continue
        if r.get("devices", 1) > 1:
            # Scaling: against the one-GPU row of the same variant; not compared with PyTorch.
            one = next((o for o in rows if o["impl"] == "jax" and o.get("devices", 1) == 1 and o["phase"] == r["phase"]
                        and o["T"] == r["T"] and o["spec"]["remat"] == r["spec"]["remat"]
                        and o["spec"]["chunk"] == r["spec"]["chunk"] and "tokens_per_s" in o), None)
            if one is not None:
                r["scaling"] = r["tokens_per_s"] / one["tokens_per_s"]
            continue
        for other, col in (("torch", "ratio"), ("torch.compile", "ratio_compile")):
            ref = next((o for o in rows if o["impl"] == other and o["phase"] == r["phase"] and o["T"] == r["T"]
                        and "tokens_per_s" in o), None)
            if ref is not None:
                r[col] = r["tokens_per_s"] / ref["tokens_per_s"]
        key = (r["phase"], r["T"])
        cur = best.get(key)
        if cur is None or r["tokens_per_s"] > cur["tokens_per_s"]:
            best[key] = r
    summary: dict[str, Any] = {}
    for (phase, t), r in best.items():
        r["notes"] += " *"
        summary.setdefault(phase, {})[str(t)] = {k: r.get(k) for k in ("tokens_per_s", "MFU", "peak_GiB", "ratio",
                                                                           "ratio_compile", "notes")}
    return summary


def _brief(row: dict[str, Any]) -> str:
    keep = {k: row.get(k) for k in COLUMNS if row.get(k) is not None}
    if "error" in row.get("result", {}):
        keep["detail"] = str(row["result"].get("detail", ""))[-300:]
    return json.dumps(keep, default=str)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    from openrs_jax.bench import common

    # This process never touches the GPU: every measurement, the ceiling included, runs in a
    # worker, so no allocator here holds memory the workers need.
    base = Spec(batch=args.batch, prompt=args.prompt, seq=args.prompt + 1, ceiling_n=args.ceiling_n, model=args.model)
    ceil = workers.run_worker("ceiling", base, timeout_s=args.timeout, in_process=args.in_process)
    ceil_torch = (workers.run_worker("ceiling_torch", base, timeout_s=args.timeout, in_process=args.in_process)
                  if "torch" in args.impl_list else {})
    rates = [r["matmul_flops"] for r in (ceil, ceil_torch) if r.get("matmul_flops")]
    flops_per_s = max(rates) if rates else None
    record: dict[str, Any] = {"env": ceil.get("env"), "matmul_flops": flops_per_s,
                              "ceiling": {"jax": ceil, "torch": ceil_torch},
                              "model": dataclasses.asdict(model_config(args.model)),
                              "non_embedding_params": model_config(args.model).num_params(include_embeddings=False),
                              "args": {k: v for k, v in vars(args).items() if k not in ("phase_list", "impl_list")},
                              "rows": [], "partial": True}
    print(f"bf16 matmul ceiling: {(flops_per_s or 0) / 1e12:.1f} TFLOP/s (jax "
          f"{(ceil.get('matmul_flops') or 0) / 1e12:.1f}, torch {(ceil_torch.get('matmul_flops') or 0) / 1e12:.1f})  "
          f"{ceil.get('env') or ceil.get('detail')}", flush=True)
    rows = record["rows"]
    for phase, kind, fields in plan(args):
        spec = Spec(**fields)
        res = workers.run_worker(kind, spec, timeout_s=args.timeout, in_process=args.in_process)
        rows.append(make_row(phase, kind, spec, res, flops_per_s))
        print(_brief(rows[-1]), flush=True)
        common.write_json(args.out, record)
    if "generation" in args.phase_list:
        rows.extend(generation_rows(args, flops_per_s))
        common.write_json(args.out, record)
    record["best"] = add_ratios(rows)
    record["partial"] = False
    env = record["env"] or {}
    print(f"\ndevice {env.get('device')}  jax {env.get('jax')}  torch {env.get('torch')}  "
          f"bf16 matmul {(flops_per_s or 0) / 1e12:.0f} TFLOP/s  date {env.get('date')}")
    print(common.fmt_table(rows, COLUMNS))
    common.write_json(args.out, record)
    return record


def cli() -> int:
    """The `openrs-bench` command: main() returns the record (for tests); a command exits 0."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
