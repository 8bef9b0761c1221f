"""The built-in JAX sampler against HF generate and sampling theory."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from hf_utils import make_hf_qwen2
from openrs_jax import sharding as shd
from openrs_jax.rollout.base import SamplingParams, pack_arrays, pack_completions
from openrs_jax.rollout.jax_engine import JaxEngine
from openrs_jax.rollout.sampling import filter_top_k, filter_top_p, hash_gumbel, sample_tokens
from openrs_jax.weights import load_hf

EOS = 2
PAD = 0


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    ref = make_hf_qwen2(path, vocab_size=128, num_layers=2)
    return ref, load_hf(path, dtype=jnp.float32), path


PROMPTS = [[5, 9, 17, 33, 4, 8, 21], [7, 7, 3], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [11]]


def _hf_greedy(ref, prompts, max_new):
    t = max(map(len, prompts))
    ids = torch.full((len(prompts), t), PAD)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, t - len(p) :] = torch.tensor(p)
        mask[i, t - len(p) :] = 1
    with torch.no_grad():
        out = ref.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
            eos_token_id=EOS, pad_token_id=PAD,
        )
    return out[:, t:].numpy()


@pytest.mark.parametrize("compact,cache_mode,attn,chunk", [(False, "slice", "xla", 128), (True, "slice", "xla", 4),
                                                          (True, "grow", "xla", 4), (True, "grow", "pallas", 128),
                                                          (True, "full", "pallas", 4)])
def test_greedy_matches_hf_generate(tiny_pair, compact, cache_mode, attn, chunk):
    """attn="pallas": the fused decode kernel (Pallas interpreter on CPU). chunk 4: the
    prompts (up to 11 tokens, a region of 12) are prefilled in 3 chunks; 128: in one."""
    ref, model, _ = tiny_pair
    want = _hf_greedy(ref, PROMPTS, 64)
    engine = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=16,
                       prompt_bucket=4, prefill_chunk=chunk, compact=compact, cache_mode=cache_mode,
                       decode_attention=attn, compact_min_rows=1)
    assert engine.decode_attention == attn
    batch = engine.generate(PROMPTS, 1, SamplingParams(max_new_tokens=64, temperature=0.0))
    for i in range(len(PROMPTS)):
        n = int(batch.lengths[i])
        np.testing.assert_array_equal(batch.completion_ids[i, :n], want[i, :n])
        if batch.finish_reasons[i] == "stop":
            assert batch.completion_ids[i, n - 1] == EOS
        else:
            assert n == 64
        assert batch.completion_mask[i, :n].all() and not batch.completion_mask[i, n:].any()


def test_progress_counts_finished_rows_between_segments(tiny_pair):
    """`engine.progress(finished, total)` after each decode segment: real rows only (no batch
    fillers), never backwards, every row finished by the last report; chunks add up."""
    _, model, _ = tiny_pair
    engine = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=8, prompt_bucket=4,
                       max_batch_size=4)
    seen = []
    engine.progress = lambda done, total: seen.append((done, total))
    batch = engine.generate(PROMPTS[:3], 2, SamplingParams(max_new_tokens=40, temperature=1.0, seed=3))
    assert {total for _, total in seen} == {6}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 6 and len(done) >= 2
    # Rows 0-3 are the first chunk of 4, rows 4-5 the second: its reports start at 4.
    assert min(d for d in done if d >= 4) >= 4 and batch.completion_ids.shape[0] == 6


def test_sampled_logprobs_equal_model_log_softmax(tiny_pair):
    ref, model, _ = tiny_pair
    engine = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=16, prompt_bucket=4)
    batch = engine.generate(PROMPTS[:2], 3, SamplingParams(max_new_tokens=20, temperature=1.0, seed=7))
    assert batch.completion_ids.shape[0] == 6 and batch.num_generations == 3
    for row in range(6):
        prompt = PROMPTS[row // 3]
        comp = batch.completion_ids[row, : batch.lengths[row]].tolist()
        seq = torch.tensor([prompt + comp])
        with torch.no_grad():
            logp = torch.log_softmax(ref(seq).logits[0].double(), -1).numpy()
        want = [logp[len(prompt) - 1 + j, tok] for j, tok in enumerate(comp)]
        np.testing.assert_allclose(batch.logprobs[row, : len(comp)], want, atol=1e-4)
    # Different samples of one prompt differ (per-row PRNG), and a seed reproduces them.
    again = engine.generate(PROMPTS[:2], 3, SamplingParams(max_new_tokens=20, temperature=1.0, seed=7))
    np.testing.assert_array_equal(again.completion_ids, batch.completion_ids)
    assert len({tuple(r) for r in batch.completion_ids[:3].tolist()}) > 1


@pytest.mark.parametrize("sample_t,logprob_t", [(0.7, 1.0), (0.7, None), (1.3, 0.5)])
def test_logprobs_at_the_trainers_temperature(tiny_pair, sample_t, logprob_t):
    """`logprob_temperature`: log softmax(logits / T) at the sampled token, whatever the sampling
    temperature (None: the sampling distribution, softmax(logits / sample_t)); same samples."""
    ref, model, _ = tiny_pair
    engine = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=16, prompt_bucket=4)
    base = SamplingParams(max_new_tokens=12, temperature=sample_t, seed=3)
    plain = engine.generate(PROMPTS[:2], 2, base)
    batch = engine.generate(PROMPTS[:2], 2, dataclasses.replace(base, logprob_temperature=logprob_t))
    np.testing.assert_array_equal(batch.completion_ids, plain.completion_ids)
    t = sample_t if logprob_t is None else logprob_t
    for row in range(4):
        prompt = PROMPTS[row // 2]
        comp = batch.completion_ids[row, : batch.lengths[row]].tolist()
        with torch.no_grad():
            logits = ref(torch.tensor([prompt + comp])).logits[0].double()
        logp = torch.log_softmax(logits / t, -1).numpy()
        want = [logp[len(prompt) - 1 + j, tok] for j, tok in enumerate(comp)]
        np.testing.assert_allclose(batch.logprobs[row, : len(comp)], want, atol=1e-4)


def test_pow2_rows_pad_without_changing_samples(tiny_pair):
    _, model, _ = tiny_pair
    sp = SamplingParams(max_new_tokens=12, temperature=1.0, seed=5)
    kw = dict(eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=8, prompt_bucket=4)
    a = JaxEngine(model, **kw).generate(PROMPTS[:3], 1, sp)  # 3 rows
    padded = JaxEngine(model, pow2_rows=True, **kw)
    b = padded.generate(PROMPTS[:3], 1, sp)  # decoded as 4 rows
    np.testing.assert_array_equal(a.completion_ids, b.completion_ids)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)
    padded.generate(PROMPTS[:4], 1, sp)
    assert padded.last_stats["rollout/compiles"] == 0  # 3 and 4 rows: one set of programs


@pytest.mark.parametrize("attn", ["xla", "pallas"])
def test_no_compilation_after_the_first_call(tiny_pair, attn):
    """The openrs3 recipe's rollout shapes, shrunken: 2 prompts x G = 6 rows, prompts of any
    length up to the 512-token prompt limit (the region the trainer asks for). The first call compiles its programs; later calls with
    other prompt lengths (other prefill chunk counts) compile nothing. pallas: the full-cache
    mode, where finished rows stay in the batch (no compaction below 128 rows); xla: the grow
    mode, rows decoding to the end (compaction would add shapes there)."""
    _, model, _ = tiny_pair
    eos = [EOS] if attn == "pallas" else []
    engine = JaxEngine(model, eos_token_ids=eos, pad_token_id=PAD, max_batch_size=12, segment_len=8,
                       max_prompt_len=512, decode_attention=attn)
    rng = np.random.default_rng(0)
    counts = []
    for call, lens in enumerate([(40, 90), (7, 200), (300, 3), (512, 1)]):
        prompts = [rng.integers(3, 128, n).tolist() for n in lens]
        batch = engine.generate(prompts, 6, SamplingParams(max_new_tokens=24, temperature=0.7, seed=call))
        assert batch.completion_ids.shape == (12, 24)
        counts.append(engine.last_stats["rollout/compiles"])
    assert counts[0] > 0 and counts[1:] == [0, 0, 0], counts
    assert engine.last_stats["rollout/compile_s"] == 0.0


@pytest.mark.parametrize("attn", ["xla", "pallas"])
def test_sharded_engine_matches_single_device(tiny_pair, attn):
    """8 CPU devices, rows over data × fsdp, heads over tensor; pallas: the kernel per device
    under shard_map."""
    _, model, path = tiny_pair
    sp = SamplingParams(max_new_tokens=24, temperature=0.8, seed=3)
    single = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=16, prompt_bucket=4)
    mesh = shd.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    train_model = load_hf(path, dtype=jnp.float32, mesh=mesh)
    sharded = JaxEngine(train_model, eos_token_ids=[EOS], pad_token_id=PAD, mesh=mesh, kv_bucket=32, segment_len=16,
                        prompt_bucket=4, decode_attention=attn)
    q = sharded._params["layers"][0]["attn"]["q_proj"]
    assert q[...].sharding.spec == jax.sharding.PartitionSpec(None, "tensor")  # no FSDP when sampling
    a = single.generate(PROMPTS[:3], 2, sp)
    b = sharded.generate(PROMPTS[:3], 2, sp)
    np.testing.assert_array_equal(a.completion_ids, b.completion_ids)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


@pytest.mark.parametrize("attn", ["xla", "pallas"])
def test_float8_kv_cache_stays_close(tiny_pair, attn):
    """kv_cache_dtype float8: half the cache bytes; greedy decoding starts the same and the
    sampled log-probs stay within float8 rounding of the full-precision cache's."""
    _, model, _ = tiny_pair
    kw = dict(eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=8, prompt_bucket=4, prefill_chunk=4,
              decode_attention=attn)
    sp = SamplingParams(max_new_tokens=8, temperature=0.0)
    full = JaxEngine(model, **kw)
    f8 = JaxEngine(model, kv_cache_dtype="float8_e4m3fn", **kw)
    assert f8.kv_bytes_per_slot() * 4 == full.kv_bytes_per_slot()  # float32 model: 4 bytes -> 1
    a, b = full.generate(PROMPTS, 1, sp), f8.generate(PROMPTS, 1, sp)
    np.testing.assert_array_equal(a.completion_ids[:, :2], b.completion_ids[:, :2])
    assert np.isfinite(b.logprobs).all()
    np.testing.assert_allclose(b.logprobs[:, 0], a.logprobs[:, 0], atol=0.05)


def test_float8_cache_writes_saturate():
    from openrs_jax.model.attention import to_cache_dtype

    got = to_cache_dtype(jnp.asarray([1e4, -1e4, 1.0, 0.5], jnp.bfloat16), jnp.float8_e4m3fn)
    np.testing.assert_array_equal(np.asarray(got, np.float32), [448.0, -448.0, 1.0, 0.5])


def test_stop_tokens_and_update_weights(tiny_pair):
    _, model, _ = tiny_pair
    engine = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=32, segment_len=16, prompt_bucket=4)
    greedy = engine.generate(PROMPTS, 1, SamplingParams(max_new_tokens=16, temperature=0.0))
    stop = int(greedy.completion_ids[0, 2])
    cut = engine.generate(PROMPTS[:1], 1, SamplingParams(max_new_tokens=16, temperature=0.0, stop_token_ids=(stop,)))
    first = greedy.completion_ids[0].tolist().index(stop) + 1
    assert int(cut.lengths[0]) == first and cut.finish_reasons[0] == "stop"
    # New weights change the samples and bump the version.
    v0 = engine.weight_version
    state = nnx.state(model, nnx.Param)
    engine.update_weights(jax.tree.map(lambda x: x * 1.5, state))
    assert engine.weight_version == v0 + 1
    changed = engine.generate(PROMPTS, 1, SamplingParams(max_new_tokens=16, temperature=0.0))
    assert not np.array_equal(changed.completion_ids, greedy.completion_ids)


def _chi_square_pvalue(counts, probs):
    from scipy.stats import chisquare  # scipy comes with the test extras

    keep = probs > 0
    assert counts[~keep].sum() == 0, "sampled a token outside the support"
    expected = counts.sum() * probs[keep] / probs[keep].sum()
    expected *= counts.sum() / expected.sum()  # exact totals: scipy checks them to 1e-8
    return chisquare(counts[keep], expected).pvalue


@pytest.mark.parametrize("noise", ["hash", "threefry"])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.3, 0, 0.8), (1.0, 3, 1.0)])
def test_sampling_frequencies_match_theory(temperature, top_k, top_p, noise):
    logits = jnp.asarray([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    n = 20000
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    toks, lps = sample_tokens(jnp.repeat(logits, n, 0), keys, temperature=temperature, top_k=top_k, top_p=top_p,
                              noise=noise)
    # Theory, written out independently of the implementation.
    z = np.asarray(logits[0]) / temperature
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    if top_k:
        p = np.where(np.argsort(np.argsort(-p)) < top_k, p, 0)
    if top_p < 1:
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]
        keep = np.zeros_like(p, bool)
        keep[order] = before < top_p
        p = np.where(keep, p, 0)
    p = p / p.sum()
    counts = np.bincount(np.asarray(toks), minlength=6)
    assert _chi_square_pvalue(counts, p) > 1e-3
    np.testing.assert_allclose(np.asarray(lps), np.log(p[np.asarray(toks)]), atol=1e-5)


def test_hash_gumbel_is_standard_gumbel_and_independent():
    """The sampler's Gumbel noise: Kolmogorov-Smirnov against the standard Gumbel law over a
    whole row and over one token id across rows (keys of consecutive steps, as the sampler
    folds them), and no correlation between neighbouring token ids or between rows."""
    from scipy import stats

    base = jax.random.key_data(jax.random.PRNGKey(3))
    keys = jax.vmap(lambda t: jax.random.fold_in(base, t))(jnp.arange(4000))  # one row's steps
    g = np.asarray(hash_gumbel(keys, 512), np.float64)  # [steps, V]
    assert np.isfinite(g).all()
    assert stats.kstest(g[0], stats.gumbel_r.cdf).pvalue > 1e-3  # along the vocabulary
    assert stats.kstest(g[:, 7], stats.gumbel_r.cdf).pvalue > 1e-3  # one token, across steps
    assert stats.kstest(g.ravel()[::97], stats.gumbel_r.cdf).pvalue > 1e-3
    assert abs(np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(g[:-1].ravel(), g[1:].ravel())[0, 1]) < 0.01


def test_filters_keep_the_right_support():
    logits = jnp.asarray([[3.0, 1.0, 2.0, 0.0]])
    assert np.isfinite(np.asarray(filter_top_k(logits, 2))).tolist() == [[True, False, True, False]]
    # probs ≈ [.64, .09, .24, .03]: top_p .7 keeps the first two most likely (.64 < .7).
    assert np.isfinite(np.asarray(filter_top_p(logits, 0.7))).tolist() == [[True, False, True, False]]
    assert np.isfinite(np.asarray(filter_top_p(logits, 0.5))).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 10.0])
def test_top_p_search_matches_the_sorted_definition(scale):
    """The sort-free top-p equals the sorted-cumsum definition computed in float64, except
    where a token's preceding mass is within float32 rounding of p; ties are kept together."""
    rng = np.random.default_rng(int(scale * 10))
    logits = (rng.standard_normal((24, 3000)) * scale).astype(np.float32)
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for p in (0.05, 0.5, 0.9, 0.95, 0.999):
        got = np.isfinite(np.asarray(filter_top_p(jnp.asarray(logits), p)))
        for r in range(len(probs)):
            order = np.argsort(-probs[r])
            before = np.empty_like(probs[r])
            before[order] = np.cumsum(probs[r][order]) - probs[r][order]
            want = before < p
            differ = got[r] != want
            assert np.all(np.abs(before[differ] - p) < 1e-6), (p, r, before[differ])
            assert got[r].sum() >= 1
    tied = jnp.asarray([[1.0, 1.0, 1.0, 1.0, -5.0]])  # 4 equal tokens hold ~all the mass
    assert np.isfinite(np.asarray(filter_top_p(tied, 0.3))).tolist() == [[True, True, True, True, False]]


def test_decode_attention_choice():
    from openrs_jax.model import Qwen2, tiny

    model = Qwen2(tiny(), rngs=nnx.Rngs(0))
    assert JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD).decode_attention == "xla"  # auto on CPU
    with pytest.raises(ValueError, match="decode_attention"):
        JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, decode_attention="flash")
    with pytest.raises(ValueError, match="kv_bucket"):
        JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, decode_attention="pallas", kv_bucket=24)


def test_bf16_engine_left_padded_batch():
    """bf16 weights and cache, prompts of different lengths (XLA:CPU lacks some bf16 dots)."""
    from openrs_jax.model import Qwen2, tiny

    model = Qwen2(tiny(dtype="bfloat16", param_dtype="bfloat16"), rngs=nnx.Rngs(0))
    engine = JaxEngine(model, eos_token_ids=[EOS], pad_token_id=PAD, kv_bucket=16, segment_len=8, prompt_bucket=4)
    batch = engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=12, temperature=0.7, seed=1))
    assert batch.completion_ids.shape[0] == 8
    assert np.isfinite(batch.logprobs).all() and (batch.logprobs <= 0).all()


def test_pack_cuts_after_the_first_stop_within_each_row():
    """One definition of a completion's extent for both engines (lists from vLLM, arrays
    from the jax engine): cut after the first stop token inside the row's valid length."""
    lists = [[5, 2, 7], [4, 4, 4, 4], [9], [6, 8, 3]]
    lps = [[-0.5, -1.0, -2.0], [-0.1] * 4, [-3.0], [-0.2, -0.3, -0.4]]
    batch = pack_completions(lists, lps, ["length", "length", "abort", "stop"], [[1], [2]], 2, PAD, [2, 3])
    np.testing.assert_array_equal(batch.lengths, [2, 4, 1, 3])
    assert batch.finish_reasons == ["stop", "length", "abort", "stop"]
    np.testing.assert_array_equal(batch.completion_ids, [[5, 2, 0, 0], [4, 4, 4, 4], [9, 0, 0, 0], [6, 8, 3, 0]])
    np.testing.assert_array_equal(batch.completion_mask.sum(1), batch.lengths)
    np.testing.assert_allclose(batch.logprobs[0], [-0.5, -1.0, 0.0, 0.0])
    # Arrays: a stop token past a row's valid length does not count.
    tokens = np.asarray([[5, 6, 2, 0], [5, 6, 7, 8]], np.int32)
    arr = pack_arrays(tokens, np.full((2, 4), -1.0, np.float32), np.asarray([2, 4]), ["length"] * 2,
                      prompt_ids=[[1]], num_generations=2, pad_token_id=PAD, stop_token_ids=[2])
    np.testing.assert_array_equal(arr.lengths, [2, 4])
    assert arr.finish_reasons == ["length", "length"] and arr.completion_ids.shape == (2, 4)


def test_weights_offered_during_generate_switch_between_segments(tiny_pair):
    """`offer_weights` from another thread: the running generate takes them between two decode
    segments (KV cache kept), records each token's weights version, and the tokens before the
    switch are those of the old weights."""
    import threading

    _, model, _ = tiny_pair
    other = jax.tree.map(lambda x: x * 1.5, nnx.state(model, nnx.Param))  # clearly different weights
    sp = SamplingParams(max_new_tokens=24, temperature=0.0)
    engine = JaxEngine(model, eos_token_ids=[], pad_token_id=PAD, kv_bucket=32, segment_len=8, prompt_bucket=4)
    engine.offer_weights(model, 0)
    old = engine.generate(PROMPTS[:2], 1, sp)  # version 0 throughout
    assert (old.token_versions[old.completion_mask > 0] == 0).all()

    # Offer version 1 once the first segment has run: a hook on the segment program.
    real = engine._segment_fn
    calls = {"n": 0}

    def segment_fn(*args, **kwargs):
        fn = real(*args, **kwargs)

        def run(*a):
            out = fn(*a)
            calls["n"] += 1
            if calls["n"] == 1:
                t = threading.Thread(target=engine.offer_weights, args=(other, 1))
                t.start()
                t.join()
            return out

        return run

    engine._segment_fn = segment_fn
    mixed = engine.generate(PROMPTS[:2], 1, sp)
    v = mixed.token_versions
    assert (v[:, :8] == 0).all() and (v[:, 8:24][mixed.completion_mask[:, 8:24] > 0] == 1).all()
    np.testing.assert_array_equal(mixed.completion_ids[:, :8], old.completion_ids[:, :8])
    assert (mixed.completion_ids[:, 8:] != old.completion_ids[:, 8:]).any()
    assert engine.policy_version == 1
