"""The decode-attention kernel and the sampler timed alone on the GPU, at the 1.5B
decode shapes, in the setting of a decode step: 28 layers' caches (several times the L2), each
layer's output the next one's query, one jitted call timed as a whole (no per-call dispatch in
the figure).

    PYTHONPATH=. python3 scripts/gpu_decode_sweep.py --out $OUT/sweep.json [--old PATH]

Attention: bytes = K and V of each row's valid slots; the table gives TB/s against the HBM copy
bandwidth of the same run. `--old PATH` also times the kernel file at PATH (the previous
version, loaded under another name) with its defaults. The best configuration per shape is
written to the JSON (`best`), and `--write-best PREFIX` writes each as PREFIX_96x2048.json
(batch x context) for `bench.decode --decode-kernel`.
Sampling: one [B, 151,936] float32 row of logits per row, temperature 0.7, hash vs threefry
noise.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from openrs_jax.bench import common
from openrs_jax.model import decode_attention as da
from openrs_jax.model.attention import xla_attention
from openrs_jax.rollout.sampling import sample_tokens

LAYERS, KV, G, H = 28, 2, 6, 128


def _time(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(min(ts))


def _caches(b, s, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * LAYERS)
    mk = jax.jit(lambda k: jax.random.normal(k, (b, KV, s, H), jnp.bfloat16))
    return [mk(keys[2 * i]) for i in range(LAYERS)], [mk(keys[2 * i + 1]) for i in range(LAYERS)]


def _chain(kernel):
    def f(q, ks, vs, start, end):
        for k, v in zip(ks, vs):
            q = kernel(q, k, v, start, end)
        return q

    return jax.jit(f)


def attention_sweep(shapes, old_path, out_rows, extra=None):
    old = None
    if old_path:
        spec = importlib.util.spec_from_file_location("old_decode_attention", old_path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    best = {}
    for b, ctx, s in shapes:
        ks, vs = _caches(b, s)
        q = jax.random.normal(jax.random.PRNGKey(1), (b, KV * G, H), jnp.bfloat16)
        rng = np.random.default_rng(0)
        start = jnp.asarray(rng.integers(min(200, s - ctx - 1), min(300, s - ctx), b), jnp.int32)  # left padding
        end = start + ctx
        nbytes = LAYERS * b * ctx * KV * H * 2 * 2
        # Correctness of one layer against float32 XLA attention.
        slot = jnp.arange(s)
        mask = ((slot[None] >= start[:, None]) & (slot[None] < end[:, None]))[:, None, :]
        ref = xla_attention(q[:, None].astype(jnp.float32), ks[0].astype(jnp.float32), vs[0].astype(jnp.float32),
                            mask)[:, 0]

        def run(name, kernel, cfg, ks=ks, vs=vs):  # this iteration's caches (deleted below)
            row = {"batch": b, "ctx": ctx, "S": s, "kernel": name, **cfg}
            try:
                err = float(jnp.abs(jax.jit(kernel)(q, ks[0], vs[0], start, end).astype(jnp.float32) - ref).max())
                med, mn = _time(_chain(kernel), q, ks, vs, start, end)
            except Exception as e:  # noqa: BLE001 - a configuration the compiler rejects is a row
                row["error"] = str(e)[:300]
                out_rows.append(row)
                print(row, flush=True)
                return None
            row.update(us_per_layer=1e6 * med / LAYERS, TBps=nbytes / med / 1e12, max_err=err)
            out_rows.append(row)
            print(json.dumps(row), flush=True)
            return row

        xla = lambda q, k, v, st, en: xla_attention(
            q[:, None], k, v, ((jnp.arange(k.shape[2])[None] >= st[:, None]) &
                               (jnp.arange(k.shape[2])[None] < en[:, None]))[:, None, :])[:, 0]
        run("xla", xla, {})
        if old is not None:
            run("old", lambda q, k, v, st, en: old.decode_attention(q, k, v, st, en), {})
        rows = []
        # Stage 1: block size x programs per row, at 4 warps / 3 stages; stage 2: warps x
        # stages around the best of stage 1.
        for bk, n_split in itertools.product((64, 128) if s % 128 == 0 else (16,), (1, 2, 4)):
            cfg = dict(block_k=bk, n_split=n_split, num_warps=4, num_stages=3)
            r = run("v2", lambda q, k, v, st, en, c=cfg: da.decode_attention(q, k, v, st, en, **c, **(extra or {})), cfg)
            if r:
                rows.append(r)
        if not rows:
            continue
        top = min(rows, key=lambda r: r["us_per_layer"])
        for warps, stages in itertools.product((4, 8), (2, 3, 4)):
            if (warps, stages) == (4, 3):
                continue
            cfg = dict(block_k=top["block_k"], n_split=top["n_split"], num_warps=warps, num_stages=stages)
            r = run("v2", lambda q, k, v, st, en, c=cfg: da.decode_attention(q, k, v, st, en, **c, **(extra or {})), cfg)
            if r:
                rows.append(r)
        top = min(rows, key=lambda r: r["us_per_layer"])
        best[f"{b}x{ctx}"] = {k: top[k] for k in ("block_k", "n_split", "num_warps", "num_stages", "us_per_layer",
                                                  "TBps")}
        del ks, vs
    return best


def sampling_times(out_rows, b=96, v=151936):
    logits = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (b, v), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(1), b)
    keys = jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys
    res = {}
    for noise in ("hash", "threefry"):
        # 20 steps in one call, keys folded per step as the sampler does.
        def f(logits, keys, noise=noise):
            def body(i, acc):
                kk = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)
                tok, lp = sample_tokens(logits + acc[:, None] * 0, kk, temperature=0.7, noise=noise)
                return acc + lp
            return jax.lax.fori_loop(0, 20, body, jnp.zeros((b,), jnp.float32))

        med, _ = _time(jax.jit(f), logits, keys)
        res[noise] = 1e6 * med / 20
        out_rows.append({"sampling": noise, "batch": b, "us_per_step": res[noise]})
        print(out_rows[-1], flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--old", default=None, help="path of the previous decode_attention.py")
    ap.add_argument("--write-best", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, kernels interpreted (CPU check of the script)")
    args = ap.parse_args(argv)
    global LAYERS
    if args.smoke:
        LAYERS = 2
    bw = common.hbm_bandwidth(2**20 if args.smoke else 2 * 1024**3)
    print(f"HBM copy {bw / 1e12:.2f} TB/s", flush=True)
    rows = []
    shapes = [(4, 40, 64)] if args.smoke else [(96, 2048, 4096), (96, 768, 1280), (72, 2048, 4096)]
    best = attention_sweep(shapes, args.old, rows, {"interpret": True} if args.smoke else None)
    samp = sampling_times(rows, b=4 if args.smoke else 96, v=1000 if args.smoke else 151936)
    res = {"device": jax.devices()[0].device_kind, "hbm_bytes_per_s": bw, "rows": rows, "best": best,
           "sampling_us": samp}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    if args.write_best:
        for shape, cfg in best.items():  # PREFIX_96x2048.json, ...
            with open(f"{args.write_best}_{shape}.json", "w") as f:
                json.dump({k: cfg[k] for k in ("block_k", "n_split", "num_warps", "num_stages")}, f)
    print("best:", json.dumps(best), flush=True)
    for r in rows:
        if "us_per_layer" in r:
            print(f"{r['batch']:4d} {r['ctx']:5d} {r['kernel']:5s} bk={r.get('block_k', '-')} ns={r.get('n_split', '-')} "
                  f"w={r.get('num_warps', '-')} st={r.get('num_stages', '-')}: {r['us_per_layer']:7.1f} us/layer "
                  f"{r['TBps']:.2f} TB/s ({r['TBps'] * 1e12 / bw:.0%} of copy) err {r['max_err']:.1e}")


if __name__ == "__main__":
    main()
