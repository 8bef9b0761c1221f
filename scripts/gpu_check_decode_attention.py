"""GPU check of the fused decode-attention kernel: error against float32 XLA attention, and
time per call against the XLA path at the 1.5B decode shapes, over a small sweep of block
sizes (one layer's attention: q [B, 12, 128], cache [B, 2, S, 128] bf16).

    PYTHONPATH=. python3 scripts/gpu_check_decode_attention.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from openrs_jax.bench.common import time_fn
from openrs_jax.model.attention import xla_attention
from openrs_jax.model.decode_attention import decode_attention, default_split


def _mask(start, end, s):
    slot = jnp.arange(s)
    return ((slot[None] >= start[:, None]) & (slot[None] < end[:, None]))[:, None, :]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for b, s, fill in [(96, 1024, 768), (96, 2560, 2304), (18, 1024, 768), (72, 4096, 3800)]:
        kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
        q = jax.random.normal(kq, (b, 12, 128), jnp.bfloat16)
        k = jax.random.normal(kk, (b, 2, s, 128), jnp.bfloat16)
        v = jax.random.normal(kv, (b, 2, s, 128), jnp.bfloat16)
        start = jnp.asarray(np.random.default_rng(0).integers(0, 200, b), jnp.int32)
        end = jnp.full((b,), fill, jnp.int32)
        mask = _mask(start, end, s)
        ref = xla_attention(q[:, None].astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask)[:, 0]
        xla = jax.jit(lambda q, k, v, m: xla_attention(q[:, None], k, v, m)[:, 0])
        t_xla = time_fn(lambda: xla(q, k, v, mask), warmup=3, repeats=20)["min_s"]
        err_xla = float(jnp.abs(xla(q, k, v, mask).astype(jnp.float32) - ref).max())
        kv_bytes = 2 * b * 2 * (fill - 0) * 128 * 2
        base = {"batch": b, "S": s, "filled": fill, "xla_us": t_xla * 1e6, "xla_err": err_xla,
                "xla_TBps": kv_bytes / t_xla / 1e12}
        for block_k in (32, 64, 128):
            for split_mult in (None, 2):
                split = default_split(b, 2, s, block_k)
                if split_mult:
                    split = min(s, split * split_mult)
                    if s % split:
                        continue
                for warps in (4, 8):
                    fn = jax.jit(lambda q, k, v, st, en, bk=block_k, sp=split, w=warps: decode_attention(
                        q, k, v, st, en, block_k=bk, split=sp, num_warps=w))
                    try:
                        out = fn(q, k, v, start, end)
                        t = time_fn(lambda: fn(q, k, v, start, end), warmup=3, repeats=20)["min_s"]
                    except Exception as e:  # noqa: BLE001 — a config the compiler rejects is a row
                        rows.append({**base, "block_k": block_k, "split": split, "warps": warps, "error": str(e)[:300]})
                        continue
                    err = float(jnp.abs(out.astype(jnp.float32) - ref).max())
                    rows.append({**base, "block_k": block_k, "split": split, "warps": warps, "pallas_us": t * 1e6,
                                 "pallas_err": err, "pallas_TBps": kv_bytes / t / 1e12, "speedup": t_xla / t})
                    print(rows[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
