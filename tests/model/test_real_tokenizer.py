"""The real R1-distill tokenizer drives a model of the R1-distill shape end to end."""

import jax.numpy as jnp
import tokenizers
from flax import nnx

from openrs_jax.model import Qwen2, deepseek_r1_distill_qwen_1p5b


def test_r1_shape_model_with_real_tokenizer(shared_data):
    tok = tokenizers.Tokenizer.from_file(str(shared_data / "tokenizer-qwen2" / "tokenizer.json"))
    sample = tok.encode("Find the sum of all integer bases $b>9$").ids
    assert sample == [151646, 9885, 279, 2629, 315, 678, 7546, 23092, 400, 65, 29, 24, 3]
    prompt = "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 1+1?<｜Assistant｜><think>\n"
    ids = tok.encode(prompt, add_special_tokens=False).ids
    assert ids[0] == 151646 and 151644 in ids and 151645 in ids and 151648 in ids

    # The real shape (vocab 151936, D 1536, 12/2 heads, F 8960), two layers to keep CPU cheap.
    cfg = deepseek_r1_distill_qwen_1p5b(num_layers=2)
    model = Qwen2(cfg, rngs=nnx.Rngs(0))
    assert model.embed[...].shape == (151936, 1536) and model.embed[...].dtype == jnp.bfloat16
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
    # The prompt survives the tokenizer round trip.
    assert tok.decode(ids, skip_special_tokens=False) == prompt
