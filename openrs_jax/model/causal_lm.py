"""The decoder-only causal LM in Flax NNX: Qwen2 (DeepSeek-R1-Distill-Qwen, Qwen2.5), Llama
(Llama 3.x, SmolLM2) and Qwen3, one module with the switches of `ModelConfig`.

    tokens [B, T] ─embed─► x [B, T, D] ─(L × DecoderLayer)─► RMSNorm ─lm_head─► logits [B, T, V]
    DecoderLayer: x += Attention(RMSNorm(x)); x += MLP(RMSNorm(x))

Positions default to 0..T-1 (as HF's forward without `position_ids`); the sampler passes
padding-aware positions. `attention_mask` [B, T] marks real tokens (1) versus padding (0);
left and right padding both work. Parameters are stored in `param_dtype`, matmuls run in
`dtype` (bf16 on GPU), norm statistics, softmax and logits in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from openrs_jax import sharding as shd
from openrs_jax.model.attention import Attention, AttentionOp, CacheView, KVCache, LayerCache, cudnn_op, xla_op
from openrs_jax.model.config import ModelConfig
from openrs_jax.model.decode_attention import decode_attention_op
from openrs_jax.model.layers import MLP, RMSNorm, Rope, param, rope_cos_sin, rope_inv_freq

_REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs | None):
        dtype, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=pdt, rngs=rngs)
        self.attn = Attention(cfg, dtype=dtype, param_dtype=pdt, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=pdt, rngs=rngs)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, dtype=dtype, param_dtype=pdt, rngs=rngs)

    def __call__(
        self,
        x: Float[Array, "B T D"],
        rope: Rope,
        attend: AttentionOp,
        cache: CacheView | None = None,
    ) -> tuple[Float[Array, "B T D"], LayerCache | None]:
        """x + Attention(RMSNorm(x)), then + MLP(RMSNorm(·)); with a cache view, also the
        layer's updated cache (else None)."""
        h, new_cache = self.attn(self.input_norm(x), rope, attend, cache)
        x = x + h
        x = x + self.mlp(self.post_attn_norm(x))
        return x, new_cache


class CausalLM(nnx.Module):
    """Qwen2/Llama/Qwen3ForCausalLM (`cfg.architecture`). `CausalLM(cfg, rngs=nnx.Rngs(0))`
    initialises randomly;
    `openrs_jax.weights.load_hf` loads HF weights; `openrs_jax.model.create_sharded` builds
    it directly into a device mesh."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs | None):
        self.config = cfg
        pdt = jnp.dtype(cfg.param_dtype)
        self.embed = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pdt)
        self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=pdt, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pdt)
        # Static (hashable) sharding context for activation constraints; set by
        # `set_sharding`. None: single device, nothing to constrain.
        self.mesh = None
        self.rules = None

    # ------------------------------------------------------------------ sharding
    def set_sharding(self, mesh: jax.sharding.Mesh | None, rules: dict[str, Any] | None) -> None:
        """Activation constraints for `mesh` under `rules` (a preset of openrs_jax.sharding)."""
        self.mesh = mesh
        self.rules = None if rules is None else tuple(sorted(rules.items()))

    def _constrain(self, x, *axes):
        return shd.constrain(x, self.mesh, None if self.rules is None else dict(self.rules), *axes)

    # ------------------------------------------------------------------ pieces
    @property
    def dtype(self):
        return jnp.dtype(self.config.dtype)

    def attention_impl(self) -> str:
        impl = self.config.attention_impl
        if impl == "auto":
            # cuDNN flash attention takes bf16/fp16 only; float32 (parity checks) uses XLA.
            fused_ok = jax.default_backend() == "gpu" and self.dtype in (jnp.bfloat16, jnp.float16)
            impl = "cudnn" if fused_ok else "xla"
        return impl

    def rope(self, positions: Int[Array, "B T"]) -> Rope:
        """The rotary tables of one forward (with the config's RoPE scaling)."""
        cfg = self.config
        inv_freq = rope_inv_freq(cfg.resolved_head_dim, cfg.rope_theta, cfg.rope_scaling)
        return rope_cos_sin(positions, inv_freq, self.dtype)

    def lm_head_weight(self) -> Float[Array, "D V"]:
        """The output projection as [D, V] (the transposed embedding when tied)."""
        if self.config.tie_word_embeddings:
            return self.embed[...].T
        return self.lm_head[...]

    def logits(self, hidden: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
        """float32 logits from final hidden states (bf16 matmul, float32 accumulation)."""
        w = self.lm_head_weight().astype(self.dtype)
        return jnp.einsum("btd,dv->btv", hidden.astype(self.dtype), w, preferred_element_type=jnp.float32)

    def embed_tokens(self, tokens: Int[Array, "B T"]) -> Float[Array, "B T D"]:
        return jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)

    # ------------------------------------------------------------------ forward
    def hidden_states(
        self,
        tokens: Int[Array, "B T"],
        positions: Int[Array, "B T"] | None = None,
        attention_mask: Int[Array, "B T"] | None = None,
    ) -> Float[Array, "B T D"]:
        """Final (normed) hidden states of a full-sequence forward (training, scoring)."""
        b, t = tokens.shape
        cfg = self.config
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        impl = self.attention_impl()
        causal = jnp.tril(jnp.ones((t, t), bool))
        if attention_mask is None:
            mask = None if impl == "cudnn" else jnp.broadcast_to(causal, (b, t, t))
        else:
            mask = causal[None] & (attention_mask[:, None, :] != 0)

        def make_op(m: jax.Array | None) -> AttentionOp:  # m is None only on cudnn (mask-free causal)
            return cudnn_op(m) if m is None or impl == "cudnn" else xla_op(m)

        rope = self.rope(positions)
        x = self._constrain(self.embed_tokens(tokens), "batch", "seq", None)
        for layer in self.layers:
            if cfg.remat == "none":
                x, _ = layer(x, rope, make_op(mask))
            else:
                # Plain jax.checkpoint over the layer's state: NNX's own remat transform
                # cannot run inside the raw jax.jit / grad / scan of the train step.
                graphdef, state = nnx.split(layer)

                def pure(state, x, rope, mask, graphdef=graphdef):
                    return nnx.merge(graphdef, state)(x, rope, make_op(mask))[0]

                x = jax.checkpoint(pure, policy=_REMAT_POLICIES[cfg.remat])(state, x, rope, mask)
            x = self._constrain(x, "batch", "seq", None)
        return self.final_norm(x)

    def __call__(
        self,
        tokens: Int[Array, "B T"],
        positions: Int[Array, "B T"] | None = None,
        attention_mask: Int[Array, "B T"] | None = None,
        *,
        return_hidden: bool = False,
        last_n: int | None = None,
    ) -> Float[Array, "B T V"] | Float[Array, "B last_n V"] | Float[Array, "B T D"] | Float[Array, "B last_n D"]:
        """Logits [B, T, V] in float32 (or [B, last_n, V]; or hidden states [B, T, D] with
        `return_hidden=True`)."""
        hidden = self.hidden_states(tokens, positions, attention_mask)
        if last_n is not None:
            hidden = hidden[:, -last_n:]
        if return_hidden:
            return hidden
        return self.logits(hidden)

    def init_cache(self, batch: int, max_length: int, dtype=None) -> KVCache:
        cfg = self.config
        return KVCache.init(
            cfg.num_layers, batch, max_length, cfg.num_kv_heads, cfg.resolved_head_dim, dtype or self.dtype
        )

    def forward_cached(
        self,
        tokens: Int[Array, "B T"],
        positions: Int[Array, "B T"],
        attention_mask: Int[Array, "B T"],
        cache: KVCache,
        *,
        kv_read_len: int | None = None,
        last_n: int | None = None,
        decode_impl: str = "xla",
        active_rows: Bool[Array, " B"] | None = None,
    ) -> tuple[Float[Array, "B T V"] | Float[Array, "B last_n V"], KVCache]:
        """Prefill (T > 1) or decode (T = 1) step against a KV cache.

        The T new tokens go to slots [index, index + T). Query slot i attends to key slots
        s ≤ i that hold real tokens. Only the first `kv_read_len` slots (static; default all)
        are read: the sampler passes a bound on the filled length so decode reads no empty
        cache. Returns float32 logits of the last `last_n` positions (default all) and the
        updated cache.

        decode_impl="pallas" (decode steps, T = 1, on GPUs) runs the fused decode kernel
        (`decode_attention_op`), which takes each row's valid slots as one range: valid slots
        must be contiguous, as they are for left-padded prompts followed by generated tokens
        (the sampler). Prefill (T > 1) always runs the XLA path. `active_rows` (pallas decode
        only): rows marked False read no cache (finished rows of the sampler; their outputs
        are garbage).
        """
        b, t = tokens.shape
        if decode_impl not in ("xla", "pallas"):
            raise ValueError(f"decode_impl must be 'xla' or 'pallas', got {decode_impl!r}")
        index = cache.index
        valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask != 0, (jnp.zeros((), jnp.int32), index))
        if decode_impl == "pallas" and t == 1:
            attend = decode_attention_op(valid, index, self.mesh, None if self.rules is None else dict(self.rules),
                                         active_rows=active_rows)
        else:
            s = kv_read_len or cache.max_length
            q_slots = index + jnp.arange(t)[:, None]  # [T, 1]
            k_slots = jnp.arange(s)[None, :]  # [1, S]
            attend = xla_op((k_slots <= q_slots)[None] & valid[:, None, :s], read_len=s)  # mask [B, T, S]
        rope = self.rope(positions)
        x = self._constrain(self.embed_tokens(tokens), "batch", "seq", None)
        new_layers = []
        for layer, lc in zip(self.layers, cache.layers):
            x, nc = layer(x, rope, attend, CacheView(lc, index))
            x = self._constrain(x, "batch", "seq", None)
            new_layers.append(nc)
        hidden = self.final_norm(x)
        if last_n is not None:
            hidden = hidden[:, -last_n:]
        new_cache = KVCache(layers=new_layers, valid=valid, index=index + t)
        return self.logits(hidden), new_cache
