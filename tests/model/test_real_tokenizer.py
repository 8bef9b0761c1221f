"""The real R1-distill tokenizer drives a model of the R1-distill shape end to end."""

import jax.numpy as jnp
import tokenizers
from flax import nnx

from openrs_jax import _compat
from openrs_jax.model import Qwen2, abstract_model, deepseek_r1_distill_qwen_1p5b


def test_r1_shape_model_with_real_tokenizer(shared_data):
    tok = tokenizers.Tokenizer.from_file(str(shared_data / "tokenizer-qwen2" / "tokenizer.json"))
    sample = tok.encode("Find the sum of all integer bases $b>9$").ids
    assert sample == [151646, 9885, 279, 2629, 315, 678, 7546, 23092, 400, 65, 29, 24, 3]
    prompt = "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 1+1?<｜Assistant｜><think>\n"
    ids = tok.encode(prompt, add_special_tokens=False).ids
    assert ids[0] == 151646 and 151644 in ids and 151645 in ids and 151648 in ids
    # The prompt survives the tokenizer round trip.
    assert tok.decode(ids, skip_special_tokens=False) == prompt

    # The preset's shapes (abstract: no memory; two of its 28 identical layers), and its
    # parameter count, which the tree confirms, is the published model's 1,777,088,000
    # (3,554,176,000 bf16 bytes). Every tokenizer id has an embedding row.
    full = deepseek_r1_distill_qwen_1p5b()
    two = full.replace(num_layers=2)
    params = {path: _compat.variable_value(v) for path, v in _compat.flat_state(nnx.state(abstract_model(two), nnx.Param))}
    assert params[("embed",)].shape == (151936, 1536) and params[("embed",)].dtype == jnp.bfloat16
    assert params[("lm_head",)].shape == (1536, 151936)  # untied
    assert params[("layers", 1, "attn", "q_proj")].shape == (1536, 12 * 128)  # N 12 x H 128
    assert params[("layers", 1, "attn", "k_proj")].shape == (1536, 2 * 128)  # K 2 x H 128
    assert params[("layers", 1, "mlp", "gate")].shape == (1536, 8960)
    assert sum(p.size for p in params.values()) == two.num_params()
    assert full.num_params() == 1_777_088_000
    assert tok.get_vocab_size() <= full.vocab_size and max(ids) < full.vocab_size

    # The forward with the real vocabulary and head layout (12 query / 2 kv heads), narrower
    # (D 96, H 8, F 128) and two layers so CPU stays cheap: prefill, then decode from the cache.
    cfg = two.replace(hidden_size=96, intermediate_size=128)
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    fwd = nnx.jit(lambda m, t, c, p, a: m.forward_cached(t, p, a, c, last_n=1))
    tokens = jnp.asarray([ids], jnp.int32)
    cache = model.init_cache(1, len(ids) + 4)
    positions = jnp.arange(len(ids), dtype=jnp.int32)[None]
    logits, cache = fwd(model, tokens, cache, positions, jnp.ones_like(tokens))
    assert logits.shape == (1, 1, 151936) and logits.dtype == jnp.float32
    generated = []
    for i in range(3):
        assert bool(jnp.isfinite(logits).all())
        nxt = int(jnp.argmax(logits[0, -1]))
        generated.append(nxt)
        step = jnp.asarray([[nxt]], jnp.int32)
        pos = jnp.asarray([[len(ids) + i]], jnp.int32)
        logits, cache = fwd(model, step, cache, pos, jnp.ones_like(step))
    text = tok.decode(generated, skip_special_tokens=False)
    assert isinstance(text, str) and all(0 <= t < 151936 for t in generated)
