"""Hugging Face directories in and out: `load_hf`, `save_hf`, `to_hf_state_dict` (GGUF files
in through `openrs_jax.weights.gguf`).

Import reads one tensor at a time from the safetensors files (memory-mapped) and places it
straight into its sharding with `jax.make_array_from_callback`, so no device ever holds the
whole model. Export gathers each parameter to the host and writes a directory that
`transformers.AutoModelForCausalLM.from_pretrained` and vLLM load as is.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from openrs_jax import _compat
from openrs_jax import sharding as shd
from openrs_jax.model import CausalLM, ModelConfig, abstract_model
from openrs_jax.weights import keys

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3

_TORCH_DTYPE_NAMES = {"bfloat16": "bfloat16", "float32": "float32", "float16": "float16"}


class WeightsError(ValueError):
    """A checkpoint directory that cannot be loaded (missing file, wrong architecture,
    missing or mis-shaped tensors). The message names the file and tensor."""


def _path_str(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def hf_dir(path: str | os.PathLike) -> pathlib.Path:
    """`path` itself, or for a .gguf file its dequantised HF directory (converted once and
    cached: `openrs_jax.weights.gguf`)."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".gguf" and path.is_file():
        from openrs_jax.weights.gguf import gguf_to_hf_dir  # imports this module

        return gguf_to_hf_dir(path)
    return path


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
    path = hf_dir(path)
    if not path.is_dir():
        raise WeightsError(f"{path} is not a directory (expected an HF model directory with config.json)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise WeightsError(f"{cfg_file} not found: an HF model directory needs config.json")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{cfg_file} is not valid JSON: {e}") from None


def load_model_config(path: str | os.PathLike, **overrides: Any) -> ModelConfig:
    """ModelConfig from an HF directory's config.json, or a GGUF file's metadata (raises on
    another architecture)."""
    path = hf_dir(path)
    hf = read_hf_config(path)
    try:
        return ModelConfig.from_hf_config(hf, **overrides)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{pathlib.Path(path) / 'config.json'}: {e}") from None


def _tensor_files(path: pathlib.Path) -> dict[str, pathlib.Path]:
    """HF tensor name → safetensors file, from the index or by scanning the files."""
    index = path / SAFE_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not weight_map:
            raise WeightsError(f"{index} has no weight_map")
        out = {}
        for name, fname in weight_map.items():
            f = path / fname
            if not f.is_file():
                raise WeightsError(f"{index} lists {fname} for {name}, but {f} does not exist")
            out[name] = f
        return out
    files = sorted(path.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in path.glob("*.bin"))
        hint = f" (found {bins}: re-save with safe_serialization=True)" if bins else ""
        raise WeightsError(f"no *.safetensors files in {path}{hint}")
    out = {}
    for f in files:
        with safe_open(str(f), framework="np") as fh:
            for name in fh.keys():
                out[name] = f
    return out


def load_hf(
    path: str | os.PathLike,
    dtype: Any = jnp.bfloat16,
    mesh: jax.sharding.Mesh | None = None,
    rules: Mapping[str, Any] | None = None,
    param_dtype: Any = None,
    **config_overrides: Any,
) -> CausalLM:
    """Loads an HF Qwen2, Llama or Qwen3 directory (chosen by its config.json's `model_type`)
    into the NNX model. A .gguf file is dequantised once into a cached HF directory first
    (`openrs_jax.weights.gguf`).

    dtype: compute dtype, and parameter dtype unless `param_dtype` is given (float32 for
      parity checks; bfloat16 compute with float32 master weights for training).
    mesh/rules: place every parameter straight into its NamedSharding (default rules:
      `sharding.TRAIN_RULES`); without a mesh the model lives on the default device.
    config_overrides: further `ModelConfig` fields (attention_impl, remat, ...).
    """
    path = hf_dir(path)
    compute = jnp.dtype(dtype).name
    name = jnp.dtype(param_dtype or dtype).name
    cfg = load_model_config(path, dtype=compute, param_dtype=name, **config_overrides)
    files = _tensor_files(path)
    rules = dict(shd.TRAIN_RULES if rules is None else rules)

    graphdef, abs_state = nnx.split(abstract_model(cfg))
    np_dtype = np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)
    expected_hf: set[str] = set()
    handles: dict[pathlib.Path, Any] = {}
    loaded = []
    try:
        for path_t, var in _compat.flat_state(abs_state):
            nnx_name = _path_str(path_t)
            hf_name, transform = keys.nnx_to_hf_name(nnx_name)
            expected_hf.add(hf_name)
            if hf_name not in files:
                raise WeightsError(f"tensor {hf_name} (for {nnx_name}) is missing from the checkpoint in {path}")
            f = files[hf_name]
            if f not in handles:
                handles[f] = safe_open(str(f), framework="np")
            arr = keys.to_nnx(handles[f].get_tensor(hf_name), transform)
            abstract = _compat.variable_value(var)
            if tuple(arr.shape) != tuple(abstract.shape):
                hf_shape = tuple(keys.to_hf(np.empty(abstract.shape, np.int8), transform).shape)
                raise WeightsError(
                    f"tensor {hf_name} in {f.name} has shape {tuple(keys.to_hf(arr, transform).shape)}, "
                    f"expected {hf_shape} for config {path / 'config.json'}"
                )
            arr = arr.astype(np_dtype, copy=False)
            if mesh is None:
                value = jax.device_put(arr)
            else:
                axes = _compat.variable_metadata(var).get("axes")
                sharding = shd.param_sharding(nnx_name, arr.shape, axes, mesh, rules)
                value = jax.make_array_from_callback(arr.shape, sharding, lambda idx, a=arr: a[idx])
            loaded.append((path_t, var.replace(value)))
    finally:
        handles.clear()

    unexpected = sorted(
        n
        for n in files
        if n not in expected_hf
        and not keys.is_ignorable(n)
        and not (cfg.tie_word_embeddings and n == "lm_head.weight")
    )
    if unexpected:
        shown = ", ".join(unexpected[:8]) + (" …" if len(unexpected) > 8 else "")
        raise WeightsError(
            f"unexpected tensors in {path} for a {cfg.num_layers}-layer {cfg.architecture} model "
            f"(qkv_bias={cfg.qkv_bias}, o_bias={cfg.o_bias}, qk_norm={cfg.qk_norm}): {shown}"
        )

    model = nnx.merge(graphdef, _compat.from_flat_state(loaded))
    if mesh is not None:
        model.set_sharding(mesh, rules)
    return model


def to_hf_state_dict(model: CausalLM, dtype: Any = None) -> dict[str, np.ndarray]:
    """HF tensor name → host numpy array (bf16 as ml_dtypes.bfloat16), gathered from shards."""
    out = {}
    for path_t, var in _compat.flat_state(nnx.state(model, nnx.Param)):
        hf_name, transform = keys.nnx_to_hf_name(_path_str(path_t))
        arr = np.asarray(jax.device_get(_compat.variable_value(var)))
        if dtype is not None:
            arr = arr.astype(jnp.dtype(dtype))
        out[hf_name] = keys.to_hf(arr, transform)
    return out


def generation_config(cfg: ModelConfig) -> dict[str, Any]:
    """The generation_config.json of a model without a source one to copy (trained from a
    preset): its BOS and EOS ids, transformers' defaults for the rest (greedy). An export of a
    model that started from an HF directory copies that directory's file instead
    (`save_hf(generation_config=...)`, `resolve.source_generation_config`)."""
    return {"bos_token_id": cfg.bos_token_id,
            "eos_token_id": list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id}


def write_safetensors(
    tensors: Mapping[str, np.ndarray], out_dir: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[str]:
    """Writes HF-named tensors as one model.safetensors, or shards + index when larger than
    `max_shard_bytes`. Returns the file names written."""
    out_dir = pathlib.Path(out_dir)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        arr = tensors[name]
        if shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    meta = {"format": "pt"}  # transformers expects PyTorch-format metadata
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / SAFE_SINGLE), metadata=meta)
        return [SAFE_SINGLE]
    names, weight_map = [], {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / fname), metadata=meta)
        names.append(fname)
        weight_map.update({k: fname for k in shard})
    total = sum(a.nbytes for a in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / SAFE_INDEX).write_text(json.dumps(index, indent=2))
    return names + [SAFE_INDEX]


_default_generation_config = generation_config  # save_hf's parameter of that name shadows it

EXPORT_MARKER = ".openrs_export.json"  # written by save_hf: what it wrote into the directory


def _exported_files(out_dir: pathlib.Path) -> set[str] | None:
    """The names save_hf wrote into `out_dir` (from its marker), or None without a marker."""
    try:
        names = json.loads((out_dir / EXPORT_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # Plain names only: a marker never makes us touch anything outside `out_dir`.
    return {n for n in names if isinstance(n, str) and n not in ("", ".", "..") and pathlib.Path(n).name == n}


def foreign_entries(out_dir: str | os.PathLike) -> list[str]:
    """Names in `out_dir` that no earlier save_hf wrote (none for a new or empty directory)."""
    out_dir = pathlib.Path(out_dir)
    if not out_dir.is_dir():
        return []
    ours = (_exported_files(out_dir) or set()) | {EXPORT_MARKER}
    return sorted(p.name for p in out_dir.iterdir() if p.name not in ours)


def _write_marker(directory: pathlib.Path) -> None:
    files = sorted(p.name for p in directory.iterdir() if p.name != EXPORT_MARKER)
    (directory / EXPORT_MARKER).write_text(json.dumps({"written_by": "openrs_jax.weights.save_hf", "files": files}))


def save_hf(
    model: CausalLM,
    out_dir: str | os.PathLike,
    tokenizer: Any = None,
    dtype: Any = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    *,
    overwrite: bool = False,
    generation_config: Mapping[str, Any] | None = None,
    model_card: str | None = None,
) -> pathlib.Path:
    """Writes an HF directory (config.json, generation_config.json, safetensors [+ index],
    tokenizer files when given, README.md when `model_card` is given) and a marker file
    (`EXPORT_MARKER`) listing those files. `generation_config`: the source model's (copied as
    is); None writes `generation_config(model.config)`. The directory gets the usual
    permissions (umask), not the private ones of a temporary directory.

    The directory is assembled beside `out_dir` and renamed into place, so a crash never
    leaves a half-written model. An existing `out_dir` is replaced only when it is empty or
    holds nothing but files of an earlier save_hf (its marker says which). Any other
    non-empty directory raises FileExistsError, unless `overwrite`: then our files are moved
    into it one by one (same names replaced, the files of an earlier export removed) and
    nothing else in it is touched."""
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    foreign = foreign_entries(out_dir)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{out_dir} is not empty and was not written by an export ({len(foreign)} entries of others: "
            f"{shown}); choose another output directory, or overwrite to write into it (files of the same "
            "names are replaced, nothing else is deleted)"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_state_dict(model, dtype=dtype)
    dtype_name = _TORCH_DTYPE_NAMES.get(str(next(iter(tensors.values())).dtype), "float32")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the export is renamed into place as is
    try:
        gen = dict(generation_config) if generation_config is not None else _default_generation_config(model.config)
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf_config(dtype_name), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        write_safetensors(tensors, tmp, max_shard_bytes)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if model_card is not None:
            (tmp / "README.md").write_text(model_card, encoding="utf-8")
        _write_marker(tmp)
        if foreign:  # overwrite: merge into a directory that holds files of others
            for name in (_exported_files(out_dir) or set()) - {p.name for p in tmp.iterdir()}:
                if (out_dir / name).is_file():  # a stale shard of our earlier export
                    (out_dir / name).unlink()
            for entry in sorted(tmp.iterdir(), key=lambda p: p.name == EXPORT_MARKER):  # marker last
                os.replace(entry, out_dir / entry.name)
            tmp.rmdir()
        elif out_dir.exists():  # empty, or only our earlier export: replace it whole
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
