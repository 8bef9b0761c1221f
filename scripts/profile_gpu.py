"""Where the GPU time of a decode segment or an update step goes: a jax.profiler trace of a
warm call, summarised per kernel (total time, count, share) and per HLO module, plus the busy
fraction of the device stream (kernel time / wall span) that tells launch gaps from slow
kernels.

    PYTHONPATH=. python3 scripts/profile_gpu.py decode --batch 96 --new 1024 --out $OUT/prof_decode
    PYTHONPATH=. python3 scripts/profile_gpu.py update --seq 1024 --remat none --out $OUT/prof_update

Set XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text to map fusion names to HLO (the
kernels are named after the fusions of the optimised module). Writes summary.json and
prints the top kernels. Works on CPU too (events of the host threads), with --layers for a
small model.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import time

import jax
import numpy as np


def _events(xspace_path: str):
    """(plane, line, name, start_ns, duration_ns, stats) of every device-plane event (GPU) or,
    with no GPU plane, of the host threads running XLA thunks."""
    from jax.profiler import ProfileData

    pd = ProfileData.from_file(xspace_path)
    planes = [p for p in pd.planes if p.name.startswith("/device:GPU")]
    out = []
    for plane in planes:
        for line in plane.lines:
            for e in line.events:
                out.append((plane.name, line.name, e.name, e.start_ns, e.duration_ns, dict(e.stats)))
    if not planes:  # CPU: the thunk events carry hlo_op
        for plane in pd.planes:
            for line in plane.lines:
                for e in line.events:
                    st = dict(e.stats)
                    if "hlo_op" in st:
                        out.append((plane.name, line.name, e.name, e.start_ns, e.duration_ns, st))
    return out


def summarise(xspace_path: str, top: int = 40) -> dict:
    ev = _events(xspace_path)
    # The compute stream: the line with the most kernel time (memcpy lines are separate).
    per_line = collections.defaultdict(float)
    for plane, line, _name, _s, d, _st in ev:
        per_line[(plane, line)] += d
    lines = sorted(per_line.items(), key=lambda kv: -kv[1])
    main = lines[0][0] if lines else None
    k = [e for e in ev if (e[0], e[1]) == main]
    k.sort(key=lambda e: e[3])
    busy = sum(e[4] for e in k)
    span = (k[-1][3] + k[-1][4] - k[0][3]) if k else 0
    gaps = np.diff([e[3] for e in k]) - np.asarray([e[4] for e in k[:-1]]) if len(k) > 1 else np.zeros(0)
    by_name = collections.defaultdict(lambda: [0.0, 0])
    by_module = collections.defaultdict(float)
    for e in k:
        by_name[e[2]][0] += e[4]
        by_name[e[2]][1] += 1
        by_module[str(e[5].get("hlo_module", "?"))] += e[4]
    rows = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    return {
        "lines": [{"line": f"{p} {l}", "ms": t / 1e6} for (p, l), t in lines[:8]],
        "main_line": None if main is None else f"{main[0]} {main[1]}",
        "kernels": len(k),
        "busy_ms": busy / 1e6,
        "span_ms": span / 1e6,
        "busy_fraction": busy / span if span else None,
        "gap_ms_total": float(gaps.clip(min=0).sum()) / 1e6,
        "gap_us_median": float(np.median(gaps)) / 1e3 if len(gaps) else None,
        "modules_ms": {m: t / 1e6 for m, t in sorted(by_module.items(), key=lambda kv: -kv[1])},
        "top": [{"name": n, "ms": t / 1e6, "count": c, "share": t / busy if busy else None,
                 "us_each": t / c / 1e3} for n, (t, c) in rows[:top]],
    }


def _trace(fn, out: pathlib.Path) -> str:
    trace_dir = out / "trace"
    with jax.profiler.trace(str(trace_dir)):
        fn()
    paths = sorted(glob.glob(str(trace_dir / "**" / "*.xplane.pb"), recursive=True))
    if not paths:
        raise RuntimeError(f"no .xplane.pb written under {trace_dir}")
    return paths[-1]


def profile_decode(args, out: pathlib.Path) -> dict:
    from openrs_jax.bench import common
    from openrs_jax.model import create_sharded, deepseek_r1_distill_qwen_1p5b
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.jax_engine import JaxEngine

    if args.decode_kernel:  # tuning of the fused kernel (JSON of decode_attention.DEFAULTS entries)
        from openrs_jax.model import decode_attention as da

        text = pathlib.Path(args.decode_kernel).read_text() if args.decode_kernel.endswith(".json") else args.decode_kernel
        da.DEFAULTS.update(json.loads(text))
    cfg = deepseek_r1_distill_qwen_1p5b(**({} if args.layers is None else {"num_layers": args.layers}))
    model = create_sharded(cfg, seed=0)
    engine = JaxEngine(model, eos_token_ids=[], pad_token_id=0, max_batch_size=args.batch,
                       segment_len=args.segment_len, max_prompt_len=512)  # the recipes' prompt limit
    prompts = common.np_random_tokens(args.batch, args.prompt, 150000).tolist()
    sp = SamplingParams(max_new_tokens=args.new, temperature=args.temperature, top_p=args.top_p, seed=0)
    engine.generate(prompts, 1, sp)  # compile every segment shape
    t0 = time.perf_counter()
    engine.generate(prompts, 1, sp)
    wall = time.perf_counter() - t0
    path = _trace(lambda: engine.generate(prompts, 1, sp), out)
    s = summarise(path, args.top)
    steps = args.new - 1
    s.update(wall_s=wall, tokens_per_s=args.batch * args.new / wall, steps=steps,
             ms_per_step_wall=1e3 * wall / args.new, kernels_per_step=s["kernels"] / steps,
             busy_ms_per_step=s["busy_ms"] / steps)
    return s


def profile_update(args, out: pathlib.Path) -> dict:
    from openrs_jax.bench import update as upd
    from openrs_jax.bench.spec import Spec

    model = {} if args.layers is None else {"num_layers": args.layers}
    spec = Spec(batch=args.batch, seq=args.seq, prompt=args.prompt, remat=args.remat, chunk=args.chunk,
                    model=model)
    _, compiled, params, opt_state, batch, _ = upd.build_jax_update(spec)
    state = [params, opt_state]

    def run(n):
        for _ in range(n):
            state[0], state[1], m = compiled(state[0], state[1], batch)
        jax.block_until_ready(state)

    run(2)
    t0 = time.perf_counter()
    run(3)
    wall = (time.perf_counter() - t0) / 3
    path = _trace(lambda: run(3), out)
    s = summarise(path, args.top)
    s.update(step_s=wall, tokens_per_s=args.batch * args.seq / wall, busy_ms_per_step=s["busy_ms"] / 3)
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["decode", "update"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=None, help="decode rows (96) / update micro-batch (6)")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=1024)
    ap.add_argument("--segment-len", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--remat", default="dots")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--decode-kernel", default=None, help="decode: JSON (or .json file) of decode_attention.DEFAULTS")
    args = ap.parse_args(argv)
    if args.batch is None:
        args.batch = 96 if args.what == "decode" else 6
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = profile_decode(args, out) if args.what == "decode" else profile_update(args, out)
    s["args"] = vars(args)
    s["device"] = str(jax.devices()[0].device_kind)
    (out / "summary.json").write_text(json.dumps(s, indent=1, default=float))
    print(json.dumps({k: v for k, v in s.items() if k not in ("top", "lines")}, indent=1, default=float))
    for r in s["top"]:
        print(f"{r['ms']:10.2f} ms {r['count']:7d} x {r['us_each']:9.1f} us  {100 * (r['share'] or 0):5.1f}%  {r['name'][:110]}")


if __name__ == "__main__":
    main()
