"""The built-in JAX sampler: the embedded default rollout engine (nothing to start).

    prompts ─left-pad─► prefill (one jit) ─► decode segments: lax.while_loop, KV cache donated
                                                  │ host check between segments:
                                                  │  all done → stop; few rows left → compact
                                                  ▼
                                             RolloutBatch (host numpy)

Decode is memory-bound: every step reads the weights and the KV cache. So:
1. Each segment reads only the cache slots that can be filled by its end, not a cache
   preallocated for the longest completion. `cache_mode="grow"` (default) keeps the cache
   exactly that long and pads it by `kv_bucket` slots between segments (one copy per
   segment, no slicing in the loop); `"slice"` preallocates everything and reads a static
   prefix (`kv_read_len`) each step.
2. The loop stops as soon as every row has produced EOS / a stop token (checked on device in
   the loop condition and on the host between segments).
3. Between segments, when at most half of the rows are still running, the running rows are
   gathered into a smaller batch (a power of two, divisible by the data-parallel size), so
   finished rows stop costing KV reads and FLOPs.

Per-row PRNG: row r of a call with seed s samples step t with
`fold_in(fold_in(fold_in(key(s), r), t)`, so results do not depend on compaction or batching.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from openrs_jax import sharding as shd
from openrs_jax.model import KVCache, Qwen2, abstract_model
from openrs_jax.rollout.base import FINISH_LENGTH, RolloutBatch, RolloutEngine, SamplingParams, pack_arrays
from openrs_jax.rollout.sampling import sample_tokens


def _round_up(x: int, m: int) -> int:
    return ((x + m - 1) // m) * m


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (batch shapes of compaction and `pow2_rows`)."""
    return 1 << max(0, math.ceil(math.log2(n)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    """Loop carry. B rows; M = max new tokens."""

    cache: KVCache
    token: jax.Array  # [B] last sampled token (fed at the next step)
    pos: jax.Array  # [B] position id of `token`
    done: jax.Array  # [B] bool
    out_tokens: jax.Array  # [B, M] int32
    out_logps: jax.Array  # [B, M] float32
    keys: jax.Array  # [B, 2] per-row PRNG keys (raw uint32)
    step: jax.Array  # [] tokens generated so far


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything that shapes a compilation."""

    temperature: float
    top_k: int
    top_p: float
    stop_ids: tuple[int, ...]
    pad_id: int


class JaxEngine(RolloutEngine):
    """Samples with the NNX model on the local devices.

    model: the (training) model; its parameters are copied into the sampling layout
      (`sharding.SAMPLE_RULES` on `mesh`) by `update_weights`.
    eos_token_ids: tokens that end a completion (kept in it, like vLLM and HF).
    max_batch_size: rows decoded at once; larger requests are split.
    kv_bucket: granularity of the cache read bound (fewer compilations vs. fewer wasted reads).
    segment_len: decode steps between host checks (early stop, compaction).
    compact: gather running rows into a smaller batch when at most half are running.
    pow2_rows: pad each batch to a power of two rows (at most `max_batch_size`), so calls
      with varying numbers of prompts (evaluation chunks) reuse a few compiled shapes;
      the training loop's batch is constant and leaves it off.
    decode_attention: "pallas" (the fused decode kernel of `openrs_jax.model.decode_attention`),
      "xla", or "auto": pallas on one GPU when the compute dtype is bf16/fp16, else xla.
    """

    def __init__(
        self,
        model: Qwen2,
        *,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        mesh: jax.sharding.Mesh | None = None,
        rules: dict[str, Any] | None = None,
        max_batch_size: int = 256,
        kv_bucket: int = 512,
        segment_len: int = 128,
        prompt_bucket: int = 32,
        compact: bool = True,
        cache_mode: str = "grow",
        pow2_rows: bool = False,
        decode_attention: str = "auto",
        verbose: bool = False,
    ):
        if cache_mode not in ("grow", "slice"):
            raise ValueError(f"cache_mode must be 'grow' or 'slice', got {cache_mode!r}")
        if decode_attention not in ("auto", "xla", "pallas"):
            raise ValueError(f"decode_attention must be 'auto', 'xla' or 'pallas', got {decode_attention!r}")
        if decode_attention == "auto":
            # Multi-device sampling meshes keep the XLA path by default: the kernel's shard_map
            # path is tested on CPU devices only, not yet measured on GPUs.
            fused_ok = (jax.default_backend() == "gpu" and jnp.dtype(model.config.dtype) in (jnp.bfloat16, jnp.float16)
                        and (mesh is None or mesh.size == 1))
            decode_attention = "pallas" if fused_ok else "xla"
        if decode_attention == "pallas" and kv_bucket % 16:
            raise ValueError(f"decode_attention='pallas' needs kv_bucket to be a multiple of 16 (the kernel's "
                             f"smallest block of cache slots), got {kv_bucket}")
        self.decode_attention = decode_attention
        self.pow2_rows = pow2_rows
        self.cache_mode = cache_mode
        self.config = model.config
        self.mesh = mesh
        self.rules = dict(shd.SAMPLE_RULES if rules is None else rules)
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = max_batch_size
        self.kv_bucket = kv_bucket
        self.segment_len = segment_len
        self.prompt_bucket = prompt_bucket
        self.compact = compact
        self.verbose = verbose
        self.weight_version = 0
        self.last_stats: dict[str, float] = {}
        template = abstract_model(self.config)
        template.set_sharding(mesh, self.rules if mesh is not None else None)
        self._graphdef, abs_state = nnx.split(template)
        self._param_shardings = None if mesh is None else shd.state_shardings(abs_state, mesh, self.rules)
        self._dp = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
        self._params = None
        self._fns: dict[Any, Any] = {}
        self.update_weights(model)

    # ------------------------------------------------------------------ weights
    def update_weights(self, params: Any) -> None:
        """Takes an NNX model or its Param state; copies it into the sampling layout, in the
        compute dtype (float32 master weights would double the bytes every decode step reads)."""
        state = nnx.state(params, nnx.Param) if isinstance(params, nnx.Module) else params
        compute = jnp.dtype(self.config.dtype)
        if self._param_shardings is not None:
            state = jax.device_put(state, self._param_shardings)
        if any(x.dtype != compute for x in jax.tree.leaves(state)):
            state = self._cast(state, compute)
        self._params = state
        self.weight_version += 1

    @staticmethod
    @functools.partial(jax.jit, static_argnums=(1,))
    def _cast(state, dtype):
        return jax.tree.map(lambda x: x.astype(dtype), state)

    # ------------------------------------------------------------------ jitted phases
    def _batch_sharding(self, ndim: int):
        if self.mesh is None:
            return None
        return shd.batch_sharding(self.mesh, self.rules, ndim)

    def _prefill_fn(self, st: _Static, max_new: int, cache_len: int):
        key = ("prefill", st, max_new, cache_len)
        if key in self._fns:
            return self._fns[key]
        graphdef = self._graphdef

        def prefill(params, tokens, mask, row_keys):
            model = nnx.merge(graphdef, params)
            b, t = tokens.shape
            positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)
            cache = model.init_cache(b, cache_len)
            logits, cache = model.forward_cached(tokens, positions, mask, cache, kv_read_len=t, last_n=1)
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(row_keys)
            tok, lp = sample_tokens(logits[:, 0], step_keys, temperature=st.temperature, top_k=st.top_k, top_p=st.top_p)
            done = _is_stop(tok, st.stop_ids)
            out_tokens = jnp.full((b, max_new), st.pad_id, jnp.int32).at[:, 0].set(tok)
            out_logps = jnp.zeros((b, max_new), jnp.float32).at[:, 0].set(lp)
            return DecodeState(
                cache=cache,
                token=tok,
                pos=positions[:, -1] + 1,
                done=done,
                out_tokens=out_tokens,
                out_logps=out_logps,
                keys=row_keys,
                step=jnp.ones((), jnp.int32),
            )

        fn = jax.jit(prefill)
        self._fns[key] = fn
        return fn

    def _segment_fn(self, st: _Static, kv_read_len: int | None):
        key = ("segment", st, kv_read_len)
        if key in self._fns:
            return self._fns[key]
        graphdef = self._graphdef

        def segment(params, state: DecodeState, end_step):
            model = nnx.merge(graphdef, params)

            def cond(s: DecodeState):
                return (s.step < end_step) & ~jnp.all(s.done)

            def body(s: DecodeState):
                b = s.token.shape[0]
                logits, cache = model.forward_cached(
                    s.token[:, None], s.pos[:, None], jnp.ones((b, 1), jnp.int32), s.cache,
                    kv_read_len=kv_read_len, last_n=1, decode_impl=self.decode_attention,
                )
                keys = jax.vmap(lambda k: jax.random.fold_in(k, s.step))(s.keys)
                tok, lp = sample_tokens(logits[:, 0], keys, temperature=st.temperature, top_k=st.top_k, top_p=st.top_p)
                tok = jnp.where(s.done, st.pad_id, tok)
                lp = jnp.where(s.done, 0.0, lp)
                zero = jnp.zeros((), jnp.int32)
                return DecodeState(
                    cache=cache,
                    token=tok,
                    pos=s.pos + 1,
                    done=s.done | _is_stop(tok, st.stop_ids),
                    out_tokens=jax.lax.dynamic_update_slice(s.out_tokens, tok[:, None], (zero, s.step)),
                    out_logps=jax.lax.dynamic_update_slice(s.out_logps, lp[:, None], (zero, s.step)),
                    keys=s.keys,
                    step=s.step + 1,
                )

            # One token per iteration. Unrolling k tokens per iteration (fewer loop-predicate
            # round trips) was measured on an H100: no gain at batch 18 or 96, 5x the compile
            # time (docs/BENCHMARKS.md, decode optimisation log).
            return jax.lax.while_loop(cond, body, state)

        fn = jax.jit(segment, donate_argnums=(1,))
        self._fns[key] = fn
        return fn

    @staticmethod
    @functools.partial(jax.jit, static_argnums=(1,))  # new shapes: nothing to donate into
    def _grow_cache(state: DecodeState, length: int):
        """Pads every cache buffer to `length` slots (new slots empty and invalid)."""
        extra = length - state.cache.max_length
        pad_kv = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0)))  # [B, K, S, H]
        cache = KVCache(
            layers=[type(l)(pad_kv(l.k), pad_kv(l.v)) for l in state.cache.layers],
            valid=jnp.pad(state.cache.valid, ((0, 0), (0, extra))),
            index=state.cache.index,
        )
        return dataclasses.replace(state, cache=cache)

    @staticmethod
    @jax.jit  # a smaller batch: the old buffers cannot be reused for the output
    def _take_rows(state: DecodeState, idx):
        """Gathers rows `idx` of every [B, ...] array of the carry (compaction)."""
        cache = KVCache(
            layers=[type(l)(l.k[idx], l.v[idx]) for l in state.cache.layers],
            valid=state.cache.valid[idx],
            index=state.cache.index,
        )
        return DecodeState(
            cache=cache,
            token=state.token[idx],
            pos=state.pos[idx],
            done=state.done[idx],
            out_tokens=state.out_tokens[idx],
            out_logps=state.out_logps[idx],
            keys=state.keys[idx],
            step=state.step,
        )

    # ------------------------------------------------------------------ generate
    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], num_generations: int, sampling: SamplingParams
    ) -> RolloutBatch:
        prompts = [list(map(int, p)) for p in prompt_token_ids]
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        rows = [p for p in prompts for _ in range(num_generations)]
        t0 = time.perf_counter()
        prefill_s = 0.0
        tokens_out = np.full((len(rows), sampling.max_new_tokens), self.pad_token_id, np.int32)
        logps_out = np.zeros((len(rows), sampling.max_new_tokens), np.float32)
        for start in range(0, len(rows), self.max_batch_size):
            chunk = list(range(start, min(start + self.max_batch_size, len(rows))))
            report = None
            if self.progress is not None:  # rows finished so far, over all chunks
                report = lambda done, start=start, total=len(rows): self.progress(start + done, total)  # noqa: E731
            toks, lps, t_prefill = self._generate_rows([rows[i] for i in chunk], chunk, sampling, report)
            prefill_s += t_prefill
            tokens_out[chunk] = toks
            logps_out[chunk] = lps
        batch = self._to_batch(tokens_out, logps_out, prompts, num_generations, sampling)
        elapsed = time.perf_counter() - t0
        self.last_stats = {
            "rollout/time_s": elapsed,
            "rollout/tokens": float(batch.lengths.sum()),
            "rollout/tokens_per_s": float(batch.lengths.sum()) / max(elapsed, 1e-9),
            # Prefill including any compilation of a new prompt-length bucket (blocked on).
            "rollout/prefill_s": prefill_s,
        }
        return batch

    def _generate_rows(self, rows: list[list[int]], row_ids: list[int], sampling: SamplingParams,
                       report: Callable[[int], None] | None = None):
        """Decodes one batch: (tokens [n, max_new], log-probs [n, max_new], prefill seconds).
        `report(finished rows of this batch)` is called between decode segments."""
        st = _Static(
            temperature=float(sampling.temperature),
            top_k=int(sampling.top_k),
            top_p=float(sampling.top_p),
            stop_ids=tuple(sorted(set(self.eos_token_ids) | set(sampling.stop_token_ids))),
            pad_id=self.pad_token_id,
        )
        n = len(rows)
        max_new = sampling.max_new_tokens
        b = max(self._dp, _round_up(n, self._dp))
        if self.pow2_rows:
            b = max(b, min(next_pow2(n), _round_up(self.max_batch_size, self._dp)))
            b = _round_up(b, self._dp)
        t_p = _round_up(max(len(r) for r in rows), self.prompt_bucket)
        full_len = _round_up(t_p + max_new, self.kv_bucket)
        first_end = min(1 + self.segment_len, max_new)
        cache_len = full_len if self.cache_mode == "slice" else min(full_len, _round_up(t_p + first_end, self.kv_bucket))
        tokens = np.full((b, t_p), self.pad_token_id, np.int32)
        mask = np.zeros((b, t_p), np.int32)
        for i, r in enumerate(rows + [rows[0]] * (b - n)):  # filler rows repeat row 0
            tokens[i, t_p - len(r) :] = r
            mask[i, t_p - len(r) :] = 1
        base = jax.random.key_data(jax.random.PRNGKey(sampling.seed))
        ids = np.array(row_ids + [row_ids[0]] * (b - n), np.int32)
        row_keys = jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.asarray(ids))
        put = lambda x: jnp.asarray(x) if self.mesh is None else jax.device_put(x, self._batch_sharding(x.ndim))
        t0 = time.perf_counter()
        state = self._prefill_fn(st, max_new, cache_len)(self._params, put(tokens), put(mask), put(np.asarray(row_keys)))
        jax.block_until_ready(state.token)
        prefill_s = time.perf_counter() - t0

        row_map = np.arange(b)  # current row → original row in this chunk
        host_tokens = np.full((b, max_new), self.pad_token_id, np.int32)
        host_logps = np.zeros((b, max_new), np.float32)
        step = 1
        while step < max_new:
            end = min(step + self.segment_len, max_new)
            needed = min(full_len, _round_up(t_p + end - 1, self.kv_bucket))
            if self.cache_mode == "slice":
                kv_read = needed
            else:
                if state.cache.max_length < needed:
                    state = self._grow_cache(state, needed)
                    if self.mesh is not None:
                        state = jax.device_put(state, jax.tree.map(lambda x: self._state_sharding(x), state))
                kv_read = None  # the whole (exactly long enough) buffer
            state = self._segment_fn(st, kv_read)(self._params, state, jnp.int32(end))
            step = int(state.step)
            done = np.asarray(state.done)
            if report is not None:  # real rows (not fillers) still running
                report(n - int((row_map[np.flatnonzero(~done)] < n).sum()))
            if done.all():
                break
            active = np.flatnonzero(~done)
            cur = done.shape[0]
            new_b = max(self._dp, _round_up(next_pow2(len(active)), self._dp))
            if self.compact and new_b <= cur // 2:
                host_tokens[row_map] = np.asarray(state.out_tokens)
                host_logps[row_map] = np.asarray(state.out_logps)
                filler = np.flatnonzero(done)[: new_b - len(active)]
                idx = np.concatenate([active, filler])
                row_map = row_map[idx]
                state = self._take_rows(state, jnp.asarray(idx, jnp.int32))
                if self.mesh is not None:
                    state = jax.device_put(state, jax.tree.map(lambda x: self._state_sharding(x), state))
                if self.verbose:
                    print(f"[jax engine] step {step}: compacted {cur} -> {new_b} rows ({len(active)} running)")
        host_tokens[row_map] = np.asarray(state.out_tokens)
        host_logps[row_map] = np.asarray(state.out_logps)
        if report is not None:  # rows cut at the length limit are finished too
            report(n)
        return host_tokens[:n], host_logps[:n], prefill_s

    def _state_sharding(self, x):
        if x.ndim == 0:
            return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return self._batch_sharding(x.ndim)

    def _to_batch(self, tokens, logps, prompts, num_generations, sampling) -> RolloutBatch:
        b, w = tokens.shape
        return pack_arrays(
            tokens, logps, np.full((b,), w), [FINISH_LENGTH] * b, prompt_ids=prompts,
            num_generations=num_generations, pad_token_id=self.pad_token_id,
            stop_token_ids=set(self.eos_token_ids) | set(sampling.stop_token_ids), weight_version=self.weight_version,
        )


def _is_stop(tok, stop_ids: tuple[int, ...]):
    if not stop_ids:
        return jnp.zeros(tok.shape, bool)
    return (tok[:, None] == jnp.asarray(stop_ids, jnp.int32)[None]).any(axis=-1)
