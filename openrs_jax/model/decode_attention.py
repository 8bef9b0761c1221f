"""Fused decode attention (one query token per row) over the [B, K, S, H] KV cache: a Pallas
(Triton) kernel, flash-decoding style.

Why: in the XLA path a decode step's attention is two batched matmuls with M = 6 query rows
(q·kᵀ over the cache, then p·v) plus the mask, softmax and casts between them, each its own
kernel: on an H100 at batch 96 they ran at ~60 % of HBM bandwidth and, with the softmax
kernels, were the largest cost of a step after the MLP (docs/BENCHMARKS.md, issue 4). Here
each (row, kv head, share of the row's valid cache blocks) is one program that reads its keys
and values once and keeps the scores on chip (online softmax); a small XLA epilogue merges
the shares. The shares are cut at run time from the row's valid range, so a cache allocated
for the longest completion costs nothing until it fills, and a finished row (an empty range)
reads nothing.

Mask semantics: row b attends to the slots [start[b], end[b]) of the cache, which must be
exactly its valid slots. That holds for the sampler's decode: prompts are left-padded (valid
from the first prompt token), every later slot up to the one just written is valid, and slots
past it are empty. (`decode_attention_op` derives start/end from the cache's `valid` mask.)
An empty range (start >= end) gives zeros.

Precision: bf16 (or float32) q, k, v (a float8 cache is widened to q's dtype on load); scores, softmax statistics and the accumulator in
float32; probabilities rounded to v's dtype for the p·v product (as the XLA path does);
split outputs merged in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt
from jaxtyping import Array, Bool, Float, Int

from openrs_jax import sharding as shd

# Query rows of one program are padded to 16 (Triton's smallest dot tile).
_MIN_ROWS = 16
_NEG = -1e30  # finite "minus infinity" for the running max: exp2(_NEG - m) underflows to 0
_LOG2E = 1.4426950408889634

# Tuning defaults, read when a call is traced: slots per loop step, Triton warps and pipeline
# stages, and the programs to aim for over the whole grid. Swept on an H200 (docs/BENCHMARKS.md,
# issue 19: 28 layers' caches per timed call): block 64, 4 warps, 3 stages were best or within
# 2 % at batch 96 and 72, contexts 768 and 2048; one program per (row, kv head) at batch 96
# (192 programs), two at batch 72; more shares lost to the merge epilogue. Benchmarks may set
# them before the first call.
DEFAULTS = {"block_k": 64, "num_warps": 4, "num_stages": 3, "n_split": None, "target_programs": 192}


def _attend(start, end, q, k_ref, v_ref, lo, hi, *, block_k: int, scale: float):
    """Online softmax over the cache blocks [lo, hi): (acc [rows, H], running max [rows] in
    log2 units, sum of exponentials [rows]; rows = Q padded to a power of two ≥ 16), all float32, unnormalised."""
    rows, head_dim = q.shape

    def body(i, carry):
        acc, m, l = carry
        k = k_ref[pl.ds(i * block_k, block_k), :].astype(q.dtype)  # [block_k, H] (a float8 cache widened)
        s = plt.dot(q, k, trans_b=True) * (scale * _LOG2E)  # [rows, block_k] float32, log2 units
        slot = i * block_k + jnp.arange(block_k)
        valid = ((slot >= start) & (slot < end))[None, :]
        s = jnp.where(valid, s, _NEG)
        m_new = jnp.maximum(m, s.max(axis=1))
        p = jnp.where(valid, jnp.exp2(s - m_new[:, None]), 0.0)
        corr = jnp.exp2(m - m_new)
        v = v_ref[pl.ds(i * block_k, block_k), :].astype(q.dtype)
        acc = acc * corr[:, None] + plt.dot(p.astype(v.dtype), v)
        return acc, m_new, l * corr + p.sum(axis=1)

    init = (jnp.zeros((rows, head_dim), jnp.float32), jnp.full((rows,), _NEG, jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    return jax.lax.fori_loop(lo, jnp.maximum(lo, hi), body, init)


def _valid_blocks(start, end, block_k: int):
    """The blocks [b0, b1) holding the slots [start, end) (empty when start >= end)."""
    b0 = start // block_k
    return b0, jnp.where(end > start, (end + block_k - 1) // block_k, b0)


def _kernel(start_ref, end_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, *, block_k: int, n_split: int,
            scale: float):
    """One share of a (row, kv head)'s valid blocks; unnormalised outputs merged by the caller.
    The shares are cut from the valid range at run time: the work follows the filled length,
    not the allocated cache."""
    j = pl.program_id(2)
    start, end = start_ref[()], end_ref[()]
    b0, b1 = _valid_blocks(start, end, block_k)
    per = (b1 - b0 + n_split - 1) // n_split
    lo = b0 + j * per
    acc, m, l = _attend(start, end, q_ref[...], k_ref, v_ref, lo, jnp.minimum(b1, lo + per), block_k=block_k,
                        scale=scale)
    o_ref[...] = acc
    m_ref[...] = m
    l_ref[...] = l


def _kernel_whole(start_ref, end_ref, q_ref, k_ref, v_ref, o_ref, *, block_k: int, scale: float):
    """A (row, kv head)'s whole valid range in one program, normalised in place (no merge)."""
    start, end = start_ref[()], end_ref[()]
    b0, b1 = _valid_blocks(start, end, block_k)
    acc, _, l = _attend(start, end, q_ref[...], k_ref, v_ref, b0, b1, block_k=block_k, scale=scale)
    o_ref[...] = (acc / jnp.where(l > 0, l, 1.0)[:, None]).astype(o_ref.dtype)


def default_n_split(batch: int, kv_heads: int, slots: int, block_k: int) -> int:
    """Programs per (row, kv head): DEFAULTS["n_split"] if set, else enough that B·K·n_split
    reaches DEFAULTS["target_programs"]; at most one per cache block."""
    if DEFAULTS["n_split"]:
        return max(1, min(slots // block_k, DEFAULTS["n_split"]))
    return max(1, min(slots // block_k, math.ceil(DEFAULTS["target_programs"] / (batch * kv_heads))))


@functools.partial(jax.jit, static_argnames=("block_k", "n_split", "num_warps", "num_stages", "interpret"))
def decode_attention(
    q: Float[Array, "B N H"],
    k: Float[Array, "B K S H"],
    v: Float[Array, "B K S H"],
    start: Int[Array, " B"],
    end: Int[Array, " B"],
    *,
    block_k: int | None = None,
    n_split: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    interpret: bool = False,
) -> Float[Array, "B N H"]:
    """softmax(q·kᵀ/√H)·v over the slots [start, end) of each row; query heads grouped over
    the K kv heads (N = K·Q). A row with start >= end reads no cache and gets zeros (the
    sampler passes that for finished rows). Reads only the blocks of `block_k` slots that
    hold valid slots (default: DEFAULTS, or 64 / 32 / 16 where S is not a multiple of it), split evenly
    over `n_split` programs per row and kv head (default `default_n_split`; 1 when interpreted).
    `interpret=True` runs the kernel in Python (CPU tests)."""
    b, n, h = q.shape
    kv, s = k.shape[1], k.shape[2]
    q_per_kv = n // kv  # Q
    if block_k is None:
        block_k = next((c for c in (DEFAULTS["block_k"], 64, 32, 16) if s % c == 0), 0)
        if not block_k:
            raise ValueError(f"decode attention needs a cache length that is a multiple of 16, got {s}")
    if s % block_k:
        raise ValueError(f"cache length {s} must be a multiple of block_k={block_k}")
    # The interpreter (CPU) runs the programs one after another: splitting only adds work.
    n_split = n_split or (1 if interpret else default_n_split(b, kv, s, block_k))
    rows = max(_MIN_ROWS, pl.next_power_of_2(q_per_kv))
    qg = q.reshape(b, kv, q_per_kv, h)  # [B, K, Q, H]
    if rows != q_per_kv:
        qg = jnp.pad(qg, ((0, 0), (0, 0), (0, rows - q_per_kv), (0, 0)))
    num_warps = num_warps or DEFAULTS["num_warps"]
    num_stages = num_stages or DEFAULTS["num_stages"]
    params = plt.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    scalar = pl.BlockSpec((None,), lambda i, c, *_: (i,))
    q_spec = pl.BlockSpec((None, None, rows, h), lambda i, c, *_: (i, c, 0, 0))
    # The whole [S, H] of one row and kv head: the program picks its blocks itself.
    kv_spec = pl.BlockSpec((None, None, s, h), lambda i, c, *_: (i, c, 0, 0))
    args = (start.astype(jnp.int32), end.astype(jnp.int32), qg, k, v)
    if n_split == 1:
        out = pl.pallas_call(
            functools.partial(_kernel_whole, block_k=block_k, scale=h**-0.5),
            grid=(b, kv),
            in_specs=[scalar, scalar, q_spec, kv_spec, kv_spec],
            out_specs=pl.BlockSpec((None, None, rows, h), lambda i, c: (i, c, 0, 0)),
            out_shape=jax.ShapeDtypeStruct((b, kv, rows, h), q.dtype),
            compiler_params=params, interpret=interpret, name="decode_attention",
        )(*args)
        return out[:, :, :q_per_kv].reshape(b, n, h)
    acc, m, l = pl.pallas_call(
        functools.partial(_kernel, block_k=block_k, n_split=n_split, scale=h**-0.5),
        grid=(b, kv, n_split),
        in_specs=[scalar, scalar, q_spec, kv_spec, kv_spec],
        out_specs=[
            pl.BlockSpec((None, None, None, rows, h), lambda i, c, j: (i, c, j, 0, 0)),
            pl.BlockSpec((None, None, None, rows), lambda i, c, j: (i, c, j, 0)),
            pl.BlockSpec((None, None, None, rows), lambda i, c, j: (i, c, j, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((b, kv, n_split, rows, h), jnp.float32),
            jax.ShapeDtypeStruct((b, kv, n_split, rows), jnp.float32),
            jax.ShapeDtypeStruct((b, kv, n_split, rows), jnp.float32),
        ],
        compiler_params=params, interpret=interpret, name="decode_attention",
    )(*args)
    # Merge the splits: each holds an unnormalised sum under its own running max (log2 units).
    acc, m, l = acc[:, :, :, :q_per_kv], m[:, :, :, :q_per_kv], l[:, :, :, :q_per_kv]
    m_all = m.max(axis=2, keepdims=True)
    w = jnp.exp2(m - m_all)  # an empty split has m = _NEG: weight 0 (or 1 with l = 0)
    denom = (l * w).sum(axis=2)
    out = (acc * w[..., None]).sum(axis=2) / jnp.where(denom > 0, denom, 1.0)[..., None]
    return out.reshape(b, n, h).astype(q.dtype)


def sharded_decode_attention(mesh: jax.sharding.Mesh | None, rules: Mapping[str, Any] | None):
    """`decode_attention` for arrays laid out over `mesh` by `rules`: a Pallas call is opaque
    to the SPMD partitioner (it would gather the whole cache onto every device), so on a mesh
    of several devices it runs per device under `shard_map`, rows over the batch axes and
    heads over the tensor axis. Same signature as `decode_attention`; on CPU the kernel runs
    in the Pallas interpreter (tests)."""
    interpret = jax.default_backend() != "gpu"
    fn = functools.partial(decode_attention, interpret=interpret)
    if mesh is None or mesh.size == 1:
        return fn
    rules = dict(rules or {})
    spec = lambda *axes: shd.activation_spec(rules, *axes)
    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(spec("batch", "q_heads", None), spec("batch", "kv_heads", None, None),
                  spec("batch", "kv_heads", None, None), spec("batch"), spec("batch")),
        out_specs=spec("batch", "q_heads", None),
        check_vma=False,
    )


def decode_attention_op(
    valid: Bool[Array, "B S"],
    index: Int[Array, ""],
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    active_rows: Bool[Array, " B"] | None = None,
) -> Callable[[Array, Array, Array], Array]:
    """The attention operation (`openrs_jax.model.attention.AttentionOp`) of a decode step
    (T = 1) writing slot `index`: the fused kernel over each row's valid slots, from its first
    valid slot to the slot just written. Valid slots must be contiguous, as they are for
    left-padded prompts followed by generated tokens (the sampler). Rows with `active_rows`
    False read no cache (an empty range; their outputs are zeros): the sampler's finished rows."""
    b = valid.shape[0]
    start = jnp.argmax(valid, axis=1).astype(jnp.int32)
    end = jnp.broadcast_to(index + 1, (b,)).astype(jnp.int32)
    if active_rows is not None:
        start = jnp.where(active_rows, start, end)
    kernel = sharded_decode_attention(mesh, rules)

    def attend(q, k, v):
        # The kernel reads only the rows' valid slots: no slicing (a slice of the [B, K, S, H]
        # buffer along S would be copied for the custom call).
        return kernel(q[:, 0], k, v, start, end)[:, None]

    return attend
