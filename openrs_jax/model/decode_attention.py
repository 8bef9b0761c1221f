"""Fused decode attention (one query token per row) over the [B, K, S, H] KV cache: a Pallas
(Triton) kernel, flash-decoding style.

Why: in the XLA path a decode step's attention is two batched matmuls with M = 6 query rows
(q·kᵀ over the cache, then p·v) plus the mask, softmax and casts between them, each its own
kernel: on an H100 at batch 96 they ran at ~60 % of HBM bandwidth and, with the softmax
kernels, were the largest cost of a step after the MLP (docs/BENCHMARKS.md, issue 4). Here
each (row, kv head, split of the cache) is one program that reads its keys and values once,
keeps the scores on chip (online softmax), and skips cache blocks outside the row's valid
slots; a small XLA epilogue merges the splits.

Mask semantics: row b attends to the slots [start[b], end[b]) of the cache, which must be
exactly its valid slots. That holds for the sampler's decode: prompts are left-padded (valid
from the first prompt token), every later slot up to the one just written is valid, and slots
past it are empty. (`decode_attention_op` derives start/end from the cache's `valid` mask.)

Precision: bf16 (or float32) q, k, v; scores, softmax statistics and the accumulator in
float32; probabilities rounded to v's dtype for the p·v product (as the XLA path does);
split outputs merged in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt
from jaxtyping import Array, Bool, Float, Int

from openrs_jax import sharding as shd

# Query rows of one program are padded to 16 (Triton's smallest dot tile).
_MIN_ROWS = 16
_NEG = -1e30  # finite "minus infinity" for the running max: exp(_NEG - m) underflows to 0


def _kernel(start_ref, end_ref, q_ref, k_ref, v_ref, o_ref, m_ref, l_ref, *, block_k: int, split: int,
            scale: float):
    j = pl.program_id(2)  # which split of the cache
    base = j * split
    start = start_ref[()]
    end = end_ref[()]
    q = q_ref[...]  # [G16, H]
    rows, head_dim = q.shape
    # Blocks of this split that hold valid slots: [lo, hi).
    lo = jnp.clip(start - base, 0, split) // block_k
    hi = (jnp.clip(end - base, 0, split) + block_k - 1) // block_k

    def body(i, carry):
        acc, m, l = carry
        k = k_ref[pl.ds(i * block_k, block_k), :]  # [bk, H]
        s = plt.dot(q, k, trans_b=True) * scale  # [G16, bk] float32
        slot = base + i * block_k + jnp.arange(block_k)
        valid = ((slot >= start) & (slot < end))[None, :]
        s = jnp.where(valid, s, _NEG)
        m_new = jnp.maximum(m, s.max(axis=1))
        p = jnp.where(valid, jnp.exp(s - m_new[:, None]), 0.0)
        corr = jnp.exp(m - m_new)
        v = v_ref[pl.ds(i * block_k, block_k), :]
        acc = acc * corr[:, None] + plt.dot(p.astype(v.dtype), v)
        return acc, m_new, l * corr + p.sum(axis=1)

    init = (jnp.zeros((rows, head_dim), jnp.float32), jnp.full((rows,), _NEG, jnp.float32),
            jnp.zeros((rows,), jnp.float32))
    acc, m, l = jax.lax.fori_loop(lo, hi, body, init)
    o_ref[...] = acc
    m_ref[...] = m
    l_ref[...] = l


def default_split(batch: int, kv_heads: int, slots: int, block_k: int) -> int:
    """Slots per program: small enough that B·K·splits fills an H100 a few times over (132
    SMs), at least 2 blocks and dividing the cache."""
    target_programs = 4 * 132
    splits = max(1, math.ceil(target_programs / (batch * kv_heads)))
    split = max(2 * block_k, slots // splits)
    split = min(slots, -(-split // block_k) * block_k)
    while slots % split:
        split += block_k
    return split


@functools.partial(jax.jit, static_argnames=("block_k", "split", "num_warps", "num_stages", "interpret"))
def decode_attention(
    q: Float[Array, "B N H"],
    k: Float[Array, "B K S H"],
    v: Float[Array, "B K S H"],
    start: Int[Array, "B"],
    end: Int[Array, "B"],
    *,
    block_k: int | None = None,
    split: int | None = None,
    num_warps: int = 4,
    num_stages: int = 2,
    interpret: bool = False,
) -> Float[Array, "B N H"]:
    """softmax(q·kᵀ/√H)·v over the slots [start, end) of each row; query heads grouped over
    the K kv heads (N = K·G). Every row needs start < end. `block_k` slots per loop step
    (default: 64, or 32 / 16 where S is not a multiple of 64); `split` slots per program (a
    multiple of `block_k` dividing S; default `default_split`). `interpret=True` runs the
    kernel in Python (CPU tests)."""
    b, n, h = q.shape
    kv, s = k.shape[1], k.shape[2]
    g = n // kv
    if block_k is None:
        block_k = next((c for c in (64, 32, 16) if s % c == 0), 0)
        if not block_k:
            raise ValueError(f"decode attention needs a cache length that is a multiple of 16, got {s}")
    if s % block_k:
        raise ValueError(f"cache length {s} must be a multiple of block_k={block_k}")
    split = split or default_split(b, kv, s, block_k)
    if split % block_k or s % split:
        raise ValueError(f"split {split} must be a multiple of block_k={block_k} and divide the cache length {s}")
    n_split = s // split
    rows = max(_MIN_ROWS, pl.next_power_of_2(g))
    qg = q.reshape(b, kv, g, h)
    if rows != g:
        qg = jnp.pad(qg, ((0, 0), (0, 0), (0, rows - g), (0, 0)))
    kernel = functools.partial(_kernel, block_k=block_k, split=split, scale=h**-0.5)
    acc, m, l = pl.pallas_call(
        kernel,
        grid=(b, kv, n_split),
        in_specs=[
            pl.BlockSpec((None,), lambda i, c, j: (i,)),
            pl.BlockSpec((None,), lambda i, c, j: (i,)),
            pl.BlockSpec((None, None, rows, h), lambda i, c, j: (i, c, 0, 0)),
            pl.BlockSpec((None, None, split, h), lambda i, c, j: (i, c, j, 0)),
            pl.BlockSpec((None, None, split, h), lambda i, c, j: (i, c, j, 0)),
        ],
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
        compiler_params=plt.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        interpret=interpret,
        name="decode_attention",
    )(start.astype(jnp.int32), end.astype(jnp.int32), qg, k, v)
    # Merge the splits: each holds an unnormalised sum under its own running max.
    m_all = m.max(axis=2, keepdims=True)
    w = jnp.exp(m - m_all)  # an empty split has m = _NEG: weight 0
    out = (acc * w[..., None]).sum(axis=2) / (l * w).sum(axis=2)[..., None]
    return out[:, :, :g].reshape(b, n, h).astype(q.dtype)


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
    spec = lambda *axes: shd.activation_spec(rules, *axes)  # noqa: E731
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
) -> Callable[[Array, Array, Array], Array]:
    """The attention operation (`openrs_jax.model.attention.AttentionOp`) of a decode step
    (T = 1) writing slot `index`: the fused kernel over each row's valid slots, from its first
    valid slot to the slot just written. Valid slots must be contiguous, as they are for
    left-padded prompts followed by generated tokens (the sampler)."""
    b = valid.shape[0]
    start = jnp.argmax(valid, axis=1).astype(jnp.int32)
    end = jnp.broadcast_to(index + 1, (b,)).astype(jnp.int32)
    kernel = sharded_decode_attention(mesh, rules)

    def attend(q, k, v):
        # The kernel reads only the rows' valid slots: no slicing (a slice of the [B, K, S, H]
        # buffer along S would be copied for the custom call).
        return kernel(q[:, 0], k, v, start, end)[:, None]

    return attend
