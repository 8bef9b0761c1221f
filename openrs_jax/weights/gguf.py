"""GGUF files (llama.cpp's format) in: dequantised once into a cached HF directory.

`gguf_to_hf_dir(path)` reads a GGUF file of a Llama, Qwen2 or Qwen3 model with the `gguf`
package (the optional extra `openrs-jax[gguf]`), dequantises every tensor to float32, and writes
an HF directory — config.json, generation_config.json, model.safetensors (+ index), and the
tokenizer when the file carries one — that `load_hf`, `load_tokenizer` and the CLIs read like
any other. The directory is written once and reused:

    $OPENRS_JAX_CACHE/gguf/<file stem>-<key>/      (default ~/.cache/openrs_jax, or
                                                     $XDG_CACHE_HOME/openrs_jax)

where <key> hashes the file's resolved path, size, modification time and `CONVERTER_VERSION`,
so a changed file or a changed converter gives a fresh directory (delete old ones by hand).
`source.json` inside records what it was made from. The directory is assembled beside its final
name and renamed into place, so an interrupted conversion leaves nothing half-written.

What the conversion undoes (as transformers' GGUF loader does):
1. llama.cpp's converter permutes the rows of Llama q/k projections (and biases) to its own
   rotary layout; they are permuted back. Qwen2/Qwen3 files are not permuted.
2. GGML lists dimensions innermost first; `gguf` returns row-major [out, in] arrays, HF's
   Linear layout, so matrices are written as they come.
Refused with an error naming the cause: quantisation types the installed `gguf` cannot
dequantise (all are listed, with tensor counts), other architectures, `rope_freqs` tensors
(Llama 3.1+ RoPE scaling baked into per-frequency factors), partial rotary embeddings, RoPE
scaling other than linear, and tensors this converter has no HF name for.
The tokenizer is converted by transformers (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`), whose GGUF reader needs torch installed.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

import numpy as np

from openrs_jax.model.config import ModelConfig
from openrs_jax.weights.hf import WeightsError, write_safetensors

GGUF_SUFFIX = ".gguf"
# Bump when the conversion changes: cached directories of older versions are not reused.
CONVERTER_VERSION = 1
ARCHITECTURES = ("llama", "qwen2", "qwen3")

# GGUF tensor name (llama.cpp) → HF tensor name; `{i}` is the layer index.
GGUF_TO_HF: tuple[tuple[str, str], ...] = (
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("blk.{i}.attn_q.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("blk.{i}.attn_q.bias", "model.layers.{i}.self_attn.q_proj.bias"),
    ("blk.{i}.attn_k.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("blk.{i}.attn_k.bias", "model.layers.{i}.self_attn.k_proj.bias"),
    ("blk.{i}.attn_v.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("blk.{i}.attn_v.bias", "model.layers.{i}.self_attn.v_proj.bias"),
    ("blk.{i}.attn_output.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("blk.{i}.attn_output.bias", "model.layers.{i}.self_attn.o_proj.bias"),
    ("blk.{i}.attn_q_norm.weight", "model.layers.{i}.self_attn.q_norm.weight"),
    ("blk.{i}.attn_k_norm.weight", "model.layers.{i}.self_attn.k_norm.weight"),
    ("blk.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("blk.{i}.ffn_gate.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("blk.{i}.ffn_up.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("blk.{i}.ffn_down.weight", "model.layers.{i}.mlp.down_proj.weight"),
)
_GGUF_RE = [(re.compile("^" + re.escape(g).replace(r"\{i\}", r"(?P<i>\d+)") + "$"), h) for g, h in GGUF_TO_HF]


class GGUFError(WeightsError):
    """A GGUF file that cannot be converted; the message says which field or tensor and why."""


def is_gguf(path: str | os.PathLike) -> bool:
    """True for an existing file named *.gguf."""
    p = pathlib.Path(path)
    return p.suffix.lower() == GGUF_SUFFIX and p.is_file()


def cache_root() -> pathlib.Path:
    """Where converted GGUF files go: $OPENRS_JAX_CACHE/gguf, else $XDG_CACHE_HOME/openrs_jax/gguf,
    else ~/.cache/openrs_jax/gguf."""
    base = os.environ.get("OPENRS_JAX_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "openrs_jax")
    return pathlib.Path(base) / "gguf"


def cache_key(path: str | os.PathLike) -> str:
    """16 hex digits of sha256(resolved path, size, mtime in ns, CONVERTER_VERSION)."""
    p = pathlib.Path(path).resolve()
    st = p.stat()
    raw = f"{p}|{st.st_size}|{st.st_mtime_ns}|v{CONVERTER_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def gguf_to_hf_dir(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The HF directory of the GGUF file `path`: converted on first use, then reused (see the
    module docstring for where it lives). `cache_dir` overrides `cache_root()`."""
    path = pathlib.Path(path)
    if not is_gguf(path):
        raise GGUFError(f"{path} is not a .gguf file")
    root = pathlib.Path(cache_dir) if cache_dir is not None else cache_root()
    out = root / f"{path.stem}-{cache_key(path)}"
    if (out / "source.json").is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=root))
    try:
        _convert(path, tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same conversion first: keep theirs
            if not (out / "source.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------- conversion
def _reader(path: pathlib.Path):
    try:
        import gguf
    except ImportError:
        raise GGUFError(
            f"reading {path.name} needs the `gguf` package: pip install 'openrs-jax[gguf]' (or pip install gguf)"
        ) from None
    return gguf, gguf.GGUFReader(str(path))


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_config_from_gguf(reader, source: str = "the GGUF file") -> dict[str, Any]:
    """The HF config.json dict that the GGUF metadata describes (validated by `ModelConfig`)."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{source}: GGUF architecture {arch!r} is not supported (only {', '.join(ARCHITECTURES)})")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise GGUFError(
            f"{source}: rope_freqs.weight (Llama 3.1+ RoPE scaling stored as per-frequency factors) is not read; "
            "load the model's HF safetensors checkpoint instead"
        )
    a = lambda key, default=None: _field(reader, f"{arch}.{key}", default)
    d, n = int(a("embedding_length")), int(a("attention.head_count"))
    k = a("attention.head_count_kv", n)
    if isinstance(k, list):
        if len(set(k)) != 1:
            raise GGUFError(f"{source}: per-layer kv head counts {sorted(set(k))} are not supported")
        k = k[0]
    head_dim = int(a("attention.key_length", d // n))
    if int(a("attention.value_length", head_dim)) != head_dim:
        raise GGUFError(f"{source}: value_length {a('attention.value_length')} ≠ key_length {head_dim}")
    rope_dim = a("rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise GGUFError(f"{source}: rope.dimension_count {rope_dim} ≠ head_dim {head_dim} (partial rotary embeddings)")
    vocab = a("vocab_size")
    if vocab is None:
        embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
        vocab = int(embed.shape[-1])  # GGML order: [D, V]
    hf: dict[str, Any] = {
        "model_type": arch,
        "vocab_size": int(vocab),
        "hidden_size": d,
        "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")),
        "num_attention_heads": n,
        "num_key_value_heads": int(k),
        "head_dim": head_dim,
        "rope_theta": float(a("rope.freq_base", 10000.0)),
        "rms_norm_eps": float(a("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(a("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    if arch != "qwen2":
        hf["attention_bias"] = "blk.0.attn_q.bias" in names
    scaling = a("rope.scaling.type")
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise GGUFError(f"{source}: RoPE scaling {scaling!r} is not supported (none or linear)")
        hf["rope_scaling"] = {"rope_type": "linear", "factor": float(a("rope.scaling.factor"))}
    try:
        ModelConfig.from_hf_config(hf)
    except (KeyError, ValueError) as e:
        raise GGUFError(f"{source}: {e}") from None
    return hf


def _hf_name(gguf_name: str) -> str | None:
    for rx, hf in _GGUF_RE:
        m = rx.match(gguf_name)
        if m:
            return hf.replace("{i}", m.groupdict().get("i") or "")
    return None


def unpermute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's `LlamaModel.permute` of q/k rows ([heads·H, ...] weights or
    [heads·H] biases): per head, rows (pair j, half c) go back from j·2 + c to c·H/2 + j."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors_from_gguf(gguf, reader, hf: dict[str, Any], source: str = "the GGUF file") -> dict[str, np.ndarray]:
    """HF tensor name → float32 array, dequantised (and un-permuted for Llama q/k)."""
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    unreadable: dict[str, list[str]] = collections.defaultdict(list)
    for t in reader.tensors:
        name = _hf_name(t.name)
        if name is None:
            unknown.append(t.name)
            continue
        try:
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
        except (NotImplementedError, KeyError, ValueError):
            unreadable[t.tensor_type.name].append(t.name)
            continue
        arr = np.asarray(arr, dtype=np.float32)
        if hf["model_type"] == "llama":
            if ".self_attn.q_proj." in name:
                arr = unpermute_rotary(arr, hf["num_attention_heads"])
            elif ".self_attn.k_proj." in name:
                arr = unpermute_rotary(arr, hf["num_key_value_heads"])
        out[name] = np.ascontiguousarray(arr)
    if unreadable:
        listed = "; ".join(f"{q} ({len(v)} tensors, e.g. {v[0]})" for q, v in sorted(unreadable.items()))
        raise GGUFError(
            f"{source}: the installed gguf package cannot dequantise tensor type(s) {listed}; "
            f"re-quantise the model to a type it reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, K-quants)"
        )
    if unknown:
        shown = ", ".join(unknown[:8]) + (" …" if len(unknown) > 8 else "")
        raise GGUFError(f"{source}: tensors with no HF name in a {hf['model_type']} model: {shown}")
    return out


def _convert(path: pathlib.Path, out: pathlib.Path) -> None:
    gguf, reader = _reader(path)
    hf = hf_config_from_gguf(reader, path.name)
    cfg = ModelConfig.from_hf_config(hf)
    tensors = hf_tensors_from_gguf(gguf, reader, hf, path.name)
    (out / "config.json").write_text(json.dumps(cfg.to_hf_config("float32"), indent=2))
    gen = {"bos_token_id": hf["bos_token_id"], "eos_token_id": hf["eos_token_id"]}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    write_safetensors(tensors, out)
    if "tokenizer.ggml.model" in reader.fields:
        _save_tokenizer(path, out)
    st = path.stat()
    source = {"gguf": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "converter_version": CONVERTER_VERSION, "architecture": hf["model_type"],
              "tensor_types": dict(collections.Counter(t.tensor_type.name for t in reader.tensors))}
    (out / "source.json").write_text(json.dumps(source, indent=2))


def _save_tokenizer(path: pathlib.Path, out: pathlib.Path) -> None:
    """The tokenizer (with its chat template) as transformers converts it from the GGUF file."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # noqa: BLE001 — torch missing, unknown tokenizer model, ...
        raise GGUFError(
            f"{path.name}: transformers could not convert the GGUF tokenizer ({type(e).__name__}: {e}); "
            "its GGUF reader needs torch and gguf installed"
        ) from None
    tok.save_pretrained(str(out))
