"""The built-in JAX sampler: the embedded default rollout engine (nothing to start).

    prompts ─left-pad into a prompt region─► prefill: fixed-size chunks written into the cache
            ─► decode segments: lax.while_loop, KV cache donated
                  │ host check between segments:
                  │  all done → stop; few rows left → compact
                  ▼
             RolloutBatch (host numpy)

A fixed set of programs per batch shape, compiled once and reused by every later call (and
by later runs through JAX's persistent compilation cache): the prompts of a call are
left-padded into a prompt region of `max_prompt_len` slots (the trainer passes the data's
prompt limit, 512 in the recipes; without it, the longest prompt rounded up to
`prompt_bucket`), prefilled `prefill_chunk` tokens at a time by one program, and the decode starts by feeding
each row's last prompt token again (step 0 samples the first completion token). So neither
the prompt length nor the filled length of the cache shapes a program; the rollout stats say
how many compilations a call ran (`rollout/compiles`, `rollout/compile_s`).

Decode is memory-bound: every step reads the weights and the KV cache. So:
1. Each step reads only the cache slots that hold tokens. `cache_mode="full"` (the default
   with the fused decode kernel, while the cache for the longest completion fits
   `full_cache_max_bytes`) allocates the cache once and the kernel reads each row's valid
   range, cut at run time; finished rows read none. `"grow"` (the XLA attention path) keeps
   the cache exactly as long as the segment needs and pads it by `kv_bucket` slots between
   segments (one program per length); `"slice"` preallocates and reads a static prefix.
2. The loop stops as soon as every row has produced EOS / a stop token (checked on device in
   the loop condition and on the host between segments).
3. Between segments, when at most half of the rows are still running, the running rows are
   gathered into a smaller batch (a power of two, divisible by the data-parallel size, at
   least `compact_min_rows`), so finished rows stop costing FLOPs and, on the XLA path, KV
   reads. With the fused kernel finished rows read no cache anyway, and a decode step below
   ~128 rows costs about the weights' read whatever the rows: by default the full-cache mode
   compacts only down to 128 rows (the recipe's 72 rows never compact: one decode program).

Several processes (`openrs_jax.distributed`): the mesh spans them all and every process runs
this same code on the same prompts; the batch's rows are gathered to every process
(`to_host`) after each segment's stop check and at the end, so all take the same host-side
decisions (stop, compact) and return the same RolloutBatch.

Per-row PRNG: row r of a call with seed s samples step t with
`fold_in(fold_in(fold_in(key(s), r), t)`, so results do not depend on compaction or batching.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from openrs_jax import sharding as shd
from openrs_jax.compile_stats import CompileCounter
from openrs_jax.distributed import to_host
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
    """Loop carry. B rows; C = max new tokens (the completion length)."""

    cache: KVCache
    token: jax.Array  # [B] token fed at the next step (the last prompt token at step 0)
    pos: jax.Array  # [B] position id of `token`
    done: jax.Array  # [B] bool
    out_tokens: jax.Array  # [B, C] int32
    out_logps: jax.Array  # [B, C] float32
    keys: jax.Array  # [B, 2] per-row PRNG keys (raw uint32)
    step: jax.Array  # [] tokens generated so far


@dataclasses.dataclass(frozen=True)
class _Static:
    """The sampling settings that shape a compilation."""

    temperature: float
    top_k: int
    top_p: float
    stop_ids: tuple[int, ...]
    pad_id: int
    logprob_temperature: float | None = None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """One batch's shapes: B rows, a prompt region of P slots (the last prompt token of every
    row at slot P − 1), prefill chunks of C tokens, a cache of `cache_len` slots at the
    start (the whole `full_len` unless it grows), M new tokens."""

    rows: int
    prompt_slots: int
    chunk: int
    cache_len: int
    full_len: int
    max_new: int


class JaxEngine(RolloutEngine):
    """Samples with the NNX model on the local devices.

    model: the (training) model; its parameters are copied into the sampling layout
      (`sharding.SAMPLE_RULES` on `mesh`) by `update_weights`.
    eos_token_ids: tokens that end a completion (kept in it, like vLLM and HF).
    max_batch_size: rows decoded at once; larger requests are split.
    max_prompt_len: the prompt region's length, for every call whose prompts fit (one set of
      programs for all of them); None, or a longer prompt: the longest prompt rounded up to
      `prompt_bucket`.
    prefill_chunk: prompt tokens per prefill call (a region that is not a multiple of it is
      prefilled in one call).
    kv_bucket: granularity of the cache length (grow/slice: of the read bound).
    segment_len: decode steps between host checks (early stop, compaction).
    compact: gather running rows into a smaller batch when at most half are running, down to
      `compact_min_rows` (None: 128 in the full-cache mode, else the data-parallel size).
    cache_mode: "auto" (full with the fused kernel when the full cache fits
      `full_cache_max_bytes`, else grow), "full", "grow" or "slice" (module docstring).
    pow2_rows: pad each batch to a power of two rows (at most `max_batch_size`), so calls
      with varying numbers of prompts (evaluation chunks) reuse a few compiled shapes;
      the training loop's batch is constant and leaves it off.
    decode_attention: "pallas" (the fused decode kernel of `openrs_jax.model.decode_attention`),
      "xla", or "auto": pallas on one GPU when the compute dtype is bf16/fp16, else xla.
    sampling_noise: Gumbel noise of the sampler, "hash" or "threefry" (`rollout.sampling`).
    kv_cache_dtype: the KV cache's dtype (None: the compute dtype). "float8_e4m3fn" halves the
      bytes every decode step reads from the cache (values stored unscaled and saturated, as
      vLLM's fp8 cache with scale 1.0); the sampled log-probs then differ a little from the
      trainer's (measure `sampling/sampling_logp_difference`).
    compiler_options: XLA options for the prefill and decode programs (e.g.
      {"xla_gpu_enable_triton_gemm": False}); the other programs of the process keep theirs.
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
        max_prompt_len: int | None = None,
        prompt_bucket: int = 128,
        prefill_chunk: int = 128,
        compact: bool = True,
        compact_min_rows: int | None = None,
        cache_mode: str = "auto",
        full_cache_max_bytes: float = 40e9,
        pow2_rows: bool = False,
        decode_attention: str = "auto",
        sampling_noise: str = "hash",
        kv_cache_dtype: str | None = None,
        compiler_options: dict[str, Any] | None = None,
        verbose: bool = False,
    ):
        if cache_mode not in ("auto", "full", "grow", "slice"):
            raise ValueError(f"cache_mode must be 'auto', 'full', 'grow' or 'slice', got {cache_mode!r}")
        if decode_attention not in ("auto", "xla", "pallas"):
            raise ValueError(f"decode_attention must be 'auto', 'xla' or 'pallas', got {decode_attention!r}")
        if sampling_noise not in ("hash", "threefry"):
            raise ValueError(f"sampling_noise must be 'hash' or 'threefry', got {sampling_noise!r}")
        if decode_attention == "auto":
            # Multi-device sampling meshes keep the XLA path by default: the kernel's shard_map
            # path is tested on CPU devices only, not yet measured on GPUs.
            fused_ok = (jax.default_backend() == "gpu" and jnp.dtype(model.config.dtype) in (jnp.bfloat16, jnp.float16)
                        and (mesh is None or mesh.size == 1))
            decode_attention = "pallas" if fused_ok else "xla"
        if decode_attention == "pallas" and kv_bucket % 16:
            raise ValueError(f"decode_attention='pallas' needs kv_bucket to be a multiple of 16 (the kernel's "
                             f"smallest block of cache slots), got {kv_bucket}")
        if min(prompt_bucket, prefill_chunk, kv_bucket, segment_len) < 1:
            raise ValueError("prompt_bucket, prefill_chunk, kv_bucket and segment_len must be >= 1")
        self.decode_attention = decode_attention
        self.pow2_rows = pow2_rows
        self.cache_mode = cache_mode
        self.full_cache_max_bytes = full_cache_max_bytes
        self.config = model.config
        self.mesh = mesh
        self.rules = dict(shd.SAMPLE_RULES if rules is None else rules)
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.max_batch_size = max_batch_size
        self.kv_bucket = kv_bucket
        self.segment_len = segment_len
        self.prompt_bucket = prompt_bucket
        self.max_prompt_len = max_prompt_len
        self.prefill_chunk = prefill_chunk
        self.compact = compact
        self.compact_min_rows = compact_min_rows
        self.sampling_noise = sampling_noise
        self.kv_dtype = jnp.dtype(kv_cache_dtype or model.config.dtype)
        self.compiler_options = dict(compiler_options or {})
        self.verbose = verbose
        self.weight_version = 0
        # In-flight weight updates (`offer_weights`): the newest offered weights, taken by the
        # decode loop before the next segment; `policy_version` names the weights in use.
        self._offer_lock = threading.Lock()
        self._offered: tuple[Any, int] | None = None
        self.policy_version: int | None = None
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

    def offer_weights(self, params: Any, version: int) -> None:
        """Makes `params` (the weights of optimizer step `version`) the weights of the next decode
        segment, without waiting: a `generate` running in another thread switches between two
        segments, keeping its KV cache (the tokens before the switch were computed with the old
        weights), and reports each token's version in `RolloutBatch.token_versions`. Thread-safe;
        a newer offer replaces one not yet taken."""
        with self._offer_lock:
            self._offered = (params, int(version))

    def _take_offered(self) -> None:
        with self._offer_lock:
            offered, self._offered = self._offered, None
        if offered is not None:
            self.update_weights(offered[0])
            self.policy_version = offered[1]

    @staticmethod
    @functools.partial(jax.jit, static_argnums=(1,))
    def _cast(state, dtype):
        return jax.tree.map(lambda x: x.astype(dtype), state)

    # ------------------------------------------------------------------ layout
    def kv_bytes_per_slot(self) -> int:
        """Bytes of K and V of one row's cache slot over all layers."""
        cfg = self.config
        return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.resolved_head_dim * self.kv_dtype.itemsize

    def resolved_cache_mode(self, rows: int, full_len: int) -> str:
        if self.cache_mode != "auto":
            return self.cache_mode
        fits = rows * full_len * self.kv_bytes_per_slot() <= self.full_cache_max_bytes
        return "full" if self.decode_attention == "pallas" and fits else "grow"

    def _layout(self, rows: int, longest_prompt: int, max_new: int) -> tuple[_Layout, str]:
        if self.max_prompt_len is not None and longest_prompt <= self.max_prompt_len:
            p = self.max_prompt_len
        else:
            p = _round_up(longest_prompt, self.prompt_bucket)
        chunk = self.prefill_chunk if p % self.prefill_chunk == 0 else p
        # Step t feeds slot p − 1 + t: the last step (t = max_new − 1) writes slot p + max_new − 2.
        full_len = _round_up(p + max_new - 1, self.kv_bucket)
        mode = self.resolved_cache_mode(rows, full_len)
        cache_len = full_len
        if mode == "grow":
            cache_len = min(full_len, _round_up(p + min(self.segment_len, max_new) - 1, self.kv_bucket))
        return _Layout(rows, p, chunk, cache_len, full_len, max_new), mode

    def _min_rows(self, mode: str) -> int:
        floor = self.compact_min_rows
        if floor is None:
            floor = 128 if mode == "full" else 1
        return max(self._dp, floor)

    # ------------------------------------------------------------------ jitted phases
    def _batch_sharding(self, ndim: int):
        if self.mesh is None:
            return None
        return shd.batch_sharding(self.mesh, self.rules, ndim)

    def _state_sharding(self, x):
        assert self.mesh is not None  # decode state is placed only on a mesh
        if x.ndim == 0:
            return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return self._batch_sharding(x.ndim)

    def _init_fn(self, lay: _Layout, pad_id: int):
        """(token [B], pos [B], keys [B, 2]) -> an empty DecodeState with the cache allocated."""
        key = ("init", lay, pad_id)
        if key in self._fns:
            return self._fns[key]
        cfg = self.config

        def init(token, pos, keys):
            b = token.shape[0]
            cache = KVCache.init(cfg.num_layers, b, lay.cache_len, cfg.num_kv_heads, cfg.resolved_head_dim,
                                 self.kv_dtype)
            return DecodeState(
                cache=cache, token=token, pos=pos, done=jnp.zeros((b,), bool),
                out_tokens=jnp.full((b, lay.max_new), pad_id, jnp.int32),
                out_logps=jnp.zeros((b, lay.max_new), jnp.float32), keys=keys, step=jnp.zeros((), jnp.int32),
            )

        out_shardings = None
        if self.mesh is not None:
            shapes = jax.eval_shape(init, *(jax.ShapeDtypeStruct((lay.rows,) + s, d) for s, d in
                                            (((), jnp.int32), ((), jnp.int32), ((2,), jnp.uint32))))
            out_shardings = jax.tree.map(self._state_sharding, shapes)
        fn = jax.jit(init, out_shardings=out_shardings)
        self._fns[key] = fn
        return fn

    def _chunk_fn(self, lay: _Layout):
        """Prefill of one chunk: (params, state, tokens [B, chunk], positions, mask, start) ->
        state with the chunk's keys and values in slots [start, start + chunk)."""
        key = ("chunk", lay)
        if key in self._fns:
            return self._fns[key]
        graphdef = self._graphdef

        def chunk(params, state: DecodeState, tokens, positions, mask, start):
            model = nnx.merge(graphdef, params)
            cache = dataclasses.replace(state.cache, index=start)
            # The logits are unused (dead code to XLA): the first token is sampled by decode
            # step 0, which feeds the last prompt token again.
            _, cache = model.forward_cached(tokens, positions, mask, cache, kv_read_len=lay.prompt_slots, last_n=1)
            # The next slot to write is the last prompt token's (slot P − 1 after the last chunk).
            cache = dataclasses.replace(cache, index=start + lay.chunk - 1)
            return dataclasses.replace(state, cache=cache)

        fn = jax.jit(chunk, donate_argnums=(1,), compiler_options=self.compiler_options or None)
        self._fns[key] = fn
        return fn

    def _segment_fn(self, st: _Static, kv_read_len: int | None):
        key = ("segment", st, kv_read_len)
        if key in self._fns:
            return self._fns[key]
        graphdef = self._graphdef
        noise = self.sampling_noise

        def segment(params, state: DecodeState, end_step):
            model = nnx.merge(graphdef, params)

            def cond(s: DecodeState):
                return (s.step < end_step) & ~jnp.all(s.done)

            def body(s: DecodeState):
                b = s.token.shape[0]
                logits, cache = model.forward_cached(
                    s.token[:, None], s.pos[:, None], jnp.ones((b, 1), jnp.int32), s.cache,
                    kv_read_len=kv_read_len, last_n=1, decode_impl=self.decode_attention, active_rows=~s.done,
                )
                keys = jax.vmap(lambda k: jax.random.fold_in(k, s.step))(s.keys)
                tok, lp = sample_tokens(logits[:, 0], keys, temperature=st.temperature, top_k=st.top_k, top_p=st.top_p,
                                        noise=noise, logprob_temperature=st.logprob_temperature)
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

        fn = jax.jit(segment, donate_argnums=(1,), compiler_options=self.compiler_options or None)
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
        versions_out = np.full((len(rows), sampling.max_new_tokens), -1, np.int32)
        progress = self.progress
        with CompileCounter() as compiles:
            for start in range(0, len(rows), self.max_batch_size):
                chunk = list(range(start, min(start + self.max_batch_size, len(rows))))
                report = None
                if progress is not None:  # rows finished so far, over all chunks
                    total = len(rows)
                    report = lambda done, start=start, total=total: progress(start + done, total)
                toks, lps, t_prefill, step_versions = self._generate_rows([rows[i] for i in chunk], chunk, sampling,
                                                                          report)
                versions_out[chunk] = step_versions[None, :]
                prefill_s += t_prefill
                tokens_out[chunk] = toks
                logps_out[chunk] = lps
        batch = self._to_batch(tokens_out, logps_out, prompts, num_generations, sampling)
        if self.policy_version is not None:  # weights with versions: each token's (-1 past its end)
            batch.token_versions = np.where(batch.completion_mask > 0, versions_out[:, : batch.completion_ids.shape[1]],
                                            -1).astype(np.int32)
        elapsed = time.perf_counter() - t0
        self.last_stats = {
            "rollout/time_s": elapsed,
            "rollout/tokens": float(batch.lengths.sum()),
            "rollout/tokens_per_s": float(batch.lengths.sum()) / max(elapsed, 1e-9),
            # Prefill including any compilation of its programs (blocked on).
            "rollout/prefill_s": prefill_s,
            # XLA compilations inside this call (0 once every program of the shapes exists).
            "rollout/compiles": float(compiles.count),
            "rollout/compile_s": compiles.seconds,
        }
        return batch

    def _generate_rows(self, rows: list[list[int]], row_ids: list[int], sampling: SamplingParams,
                       report: Callable[[int], None] | None = None):
        """Decodes one batch: (tokens [n, max_new], log-probs [n, max_new], prefill seconds,
        the weights version of each decode step [max_new] (-1 without versions)).
        `report(finished rows of this batch)` is called between decode segments."""
        self._take_offered()
        st = _Static(
            temperature=float(sampling.temperature),
            top_k=int(sampling.top_k),
            top_p=float(sampling.top_p),
            stop_ids=tuple(sorted(set(self.eos_token_ids) | set(sampling.stop_token_ids))),
            pad_id=self.pad_token_id,
            logprob_temperature=sampling.logprob_temperature,
        )
        n = len(rows)
        max_new = sampling.max_new_tokens
        b = max(self._dp, _round_up(n, self._dp))
        if self.pow2_rows:
            b = max(b, min(next_pow2(n), _round_up(self.max_batch_size, self._dp)))
            b = _round_up(b, self._dp)
        lay, mode = self._layout(b, max(len(r) for r in rows), max_new)
        p = lay.prompt_slots
        rows_b = rows + [rows[0]] * (b - n)  # filler rows repeat row 0
        lens = np.array([len(r) for r in rows_b])
        first = p - lens  # each row's first prompt slot
        tokens = np.full((b, p), self.pad_token_id, np.int32)
        for i, r in enumerate(rows_b):
            tokens[i, first[i]:] = r
        slots = np.arange(p)[None, :]
        mask = (slots >= first[:, None]).astype(np.int32)
        positions = np.maximum(slots - first[:, None], 0).astype(np.int32)
        base = jax.random.key_data(jax.random.PRNGKey(sampling.seed))
        ids = np.array(row_ids + [row_ids[0]] * (b - n), np.int32)
        row_keys = np.asarray(jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.asarray(ids)))
        put = lambda x: jnp.asarray(x) if self.mesh is None else jax.device_put(x, self._batch_sharding(x.ndim))

        t0 = time.perf_counter()
        state = self._init_fn(lay, st.pad_id)(put(tokens[:, -1]), put((lens - 1).astype(np.int32)), put(row_keys))
        chunk_fn = self._chunk_fn(lay)
        c = lay.chunk
        for s0 in range(p - _round_up(int(lens.max()), c), p, c):  # only chunks holding prompt tokens
            sl = slice(s0, s0 + c)
            state = chunk_fn(self._params, state, put(tokens[:, sl]), put(positions[:, sl]), put(mask[:, sl]),
                             jnp.int32(s0))
        jax.block_until_ready(state.cache.index)
        prefill_s = time.perf_counter() - t0

        row_map = np.arange(b)  # current row → original row in this chunk
        host_tokens = np.full((b, max_new), self.pad_token_id, np.int32)
        host_logps = np.zeros((b, max_new), np.float32)
        min_rows = self._min_rows(mode)
        step_versions = np.full((max_new,), -1, np.int32)
        step = 0
        while step < max_new:
            end = min(step + self.segment_len, max_new)
            if step > 0:
                self._take_offered()  # an in-flight update: new weights from this segment on
            step_versions[step:end] = -1 if self.policy_version is None else self.policy_version
            needed = min(lay.full_len, _round_up(p + end - 1, self.kv_bucket))  # slots written by step end − 1
            kv_read = None  # the whole buffer (full: the kernel bounds the reads; grow: exactly long enough)
            if mode == "slice":
                kv_read = needed
            elif mode == "grow" and state.cache.max_length < needed:
                state = self._grow_cache(state, needed)
                if self.mesh is not None:
                    state = jax.device_put(state, jax.tree.map(lambda x: self._state_sharding(x), state))
            state = self._segment_fn(st, kv_read)(self._params, state, jnp.int32(end))
            step = int(state.step)
            done = to_host(state.done)  # every process takes the same decisions below
            if report is not None:  # real rows (not fillers) still running
                report(n - int((row_map[np.flatnonzero(~done)] < n).sum()))
            if done.all():
                break
            active = np.flatnonzero(~done)
            cur = done.shape[0]
            new_b = max(min_rows, _round_up(next_pow2(len(active)), self._dp))
            if self.compact and new_b <= cur // 2:
                host_tokens[row_map] = to_host(state.out_tokens)
                host_logps[row_map] = to_host(state.out_logps)
                filler = np.flatnonzero(done)[: new_b - len(active)]
                idx = np.concatenate([active, filler])
                row_map = row_map[idx]
                state = self._take_rows(state, jnp.asarray(idx, jnp.int32))
                if self.mesh is not None:
                    state = jax.device_put(state, jax.tree.map(lambda x: self._state_sharding(x), state))
                if self.verbose:
                    print(f"[jax engine] step {step}: compacted {cur} -> {new_b} rows ({len(active)} running)")
        host_tokens[row_map] = to_host(state.out_tokens)
        host_logps[row_map] = to_host(state.out_logps)
        if report is not None:  # rows cut at the length limit are finished too
            report(n)
        return host_tokens[:n], host_logps[:n], prefill_s, step_versions

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
