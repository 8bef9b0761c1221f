"""Orbax checkpoints of a training run: everything needed to resume (layer L4).

Layout of a run directory:

    <run_dir>/config.yaml          the resolved RunConfig (written once at the start)
    <run_dir>/checkpoints/<step>/  params, opt_state (sharded arrays), meta (JSON: step,
                                   data cursor, RNG seed, weight version, non-finite count)

    <run_dir>/checkpoints/<step>/openrs_checksums.json   sha256 and size of every file of the step
    <run_dir>/hf/step-<step>/      with `checkpoint.save_hf`: the step as an HF directory
                                   (transformers / vLLM / lighteval load it as is), rotated
                                   with the Orbax steps (`write_hf_snapshot`)

Saves are asynchronous (training continues while the arrays are written) and atomic
(Orbax writes into a temporary directory and renames it on commit), so a crash or a full
disk never leaves a half-written step that `latest_step` would pick. The reference model is
not saved: it is the run's initial policy, rebuilt deterministically from the config.

Checksums. Once Orbax has finalised a step (all arrays written, before the commit rename, in
its background thread), the sha256 of every file of the step goes into
`openrs_checksums.json` inside it, so the manifest commits with the step. Where that hook
cannot find the step's temporary directory (another Orbax atomicity scheme), the manifest is
written into the committed step at the next `save`, `wait` or `close`. `restore_latest_intact`
verifies a step against its manifest before restoring it and falls back to the newest intact
step, saying which step was damaged and why; a step saved before checksums existed (no
manifest) is restored unverified, with a note.

Several processes (`openrs_jax.distributed`; the run directory on a filesystem every host
sees): each process writes the shards of the arrays its devices hold, and Orbax commits a step
once all have written. Process 0 writes the manifest (in Orbax's commit hook, which runs on
process 0 after every process's shards exist) and verifies steps on restore; its verdict is
broadcast, and a step that fails to restore on any process counts as damaged on all, so every
process restores the same step, into any process count or mesh (the abstract targets decide
the layout).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
from typing import Any, Callable, Iterable

import jax
import orbax.checkpoint as ocp
from flax import nnx

from openrs_jax import distributed as dist
from openrs_jax import sharding as shd

CHECKPOINT_SUBDIR = "checkpoints"
MANIFEST = "openrs_checksums.json"
_ORBAX_TMP_SUFFIX = getattr(getattr(ocp, "utils", None), "TMP_DIR_SUFFIX", ".orbax-checkpoint-tmp")
_HASH_CHUNK = 8 << 20
# Orbax stamps the commit time into this file as it commits, after our hook ran; it holds no
# arrays, so it is left out of the manifest.
_UNHASHED_FILES = ("_CHECKPOINT_METADATA",)


class CheckpointError(RuntimeError):
    """Saving or restoring failed; the message names the step and directory."""


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):  # hashlib releases the GIL on large chunks
            digest.update(chunk)
    return digest.hexdigest()


def _step_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    skip = {step_dir / MANIFEST, step_dir / f".{MANIFEST}.tmp", *(step_dir / n for n in _UNHASHED_FILES)}
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and not p.is_symlink() and p not in skip)


def _hash_all(paths: list[pathlib.Path]) -> list[str]:
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_sha256, paths))


def write_manifest(step_dir: str | os.PathLike) -> None:
    """Writes `<step_dir>/openrs_checksums.json`: {"algorithm": "sha256", "files": {relative
    path: {"size", "sha256"}}} for every file of the step (atomically: temp file + rename)."""
    step_dir = pathlib.Path(step_dir)
    files = _step_files(step_dir)
    digests = _hash_all(files)
    entries = {
        p.relative_to(step_dir).as_posix(): {"size": p.stat().st_size, "sha256": d} for p, d in zip(files, digests)
    }
    tmp = step_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"algorithm": "sha256", "files": entries}, indent=1))
    os.replace(tmp, step_dir / MANIFEST)


def verify_step(step_dir: str | os.PathLike) -> str | None:
    """Checks a step against its manifest: None when intact, else the first problem in a
    few words ("params/…/d/ab12: content differs from its checksum"). Raises
    FileNotFoundError when the step has no manifest (saved before checksums)."""
    step_dir = pathlib.Path(step_dir)
    try:
        manifest = json.loads((step_dir / MANIFEST).read_text())
        entries = manifest["files"]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its checksum manifest is unreadable ({type(e).__name__}: {e})"
    paths, expected = [], []
    for name, entry in sorted(entries.items()):
        path = step_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{name} has {path.stat().st_size} bytes, {entry['size']} were written"
        paths.append(path)
        expected.append(entry["sha256"])
    for path, want, got in zip(paths, expected, _hash_all(paths)):
        if got != want:
            return f"{path.relative_to(step_dir).as_posix()}: content differs from its checksum (sha256)"
    return None


def _first_line(exc: BaseException, limit: int = 400) -> str:
    """A restore error in one line: Orbax wraps TensorStore's error (which says what is
    wrong, e.g. "Data corruption detected") in a message that dumps the array spec over
    dozens of lines, so the innermost cause is quoted, first line only."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclasses.dataclass
class Restored:
    """What `restore_latest_intact` restored: the step, its state, and notes for the user
    (damaged newer steps skipped, an unverified step) to print."""

    step: int
    params: nnx.State
    opt_state: Any
    meta: dict
    notes: list[str]


class RunCheckpointer:
    """Keep-N, async, atomic Orbax checkpoints under `<run_dir>/checkpoints`."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        keep: int | None = None,
        async_save: bool = True,
        protect: Callable[[], Iterable[int]] | None = None,
    ):
        """keep: the newest `keep` checkpoints survive rotation (None: all), plus the steps
        `protect()` names (the best validation step)."""
        self.directory = pathlib.Path(run_dir).absolute() / CHECKPOINT_SUBDIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.protect = protect
        self.async_save = async_save
        self._saving: int | None = None  # the step whose save is in flight
        self._unhashed: set[int] = set()  # committed by us, manifest still to write
        # Rotation is ours, not Orbax's max_to_keep: it must spare protected steps.
        async_options = ocp.AsyncOptions(post_finalization_callback=self._on_finalized) if async_save else None
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save, create=True, async_options=async_options
        )
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def _on_finalized(self) -> None:
        """Orbax's hook after a step's arrays are final, before its commit rename (in Orbax's
        background thread): the manifest goes into the temporary directory and commits with it."""
        step = self._saving
        if step is None or jax.process_index() != 0:
            return
        candidates = [p for p in self.directory.glob(f"{step}{_ORBAX_TMP_SUFFIX}*") if p.is_dir()]
        if len(candidates) == 1:
            write_manifest(candidates[0])
        else:  # not the atomic-rename layout we know: hash the committed step later
            self._unhashed.add(step)

    def _write_pending_manifests(self) -> None:
        """Manifests of steps committed without one (sync saves, the fallback above)."""
        if jax.process_index() != 0:
            self._unhashed.clear()
            return
        for step in sorted(self._unhashed):
            step_dir = self.directory / str(step)
            if step_dir.is_dir() and not (step_dir / MANIFEST).exists():
                write_manifest(step_dir)
            self._unhashed.discard(step)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, params: nnx.State, opt_state: Any, meta: dict[str, Any]) -> None:
        """Starts an async save of `step`. Raises CheckpointError (the previous checkpoints
        stay intact) if the save cannot be started or an earlier async save failed."""
        # Orbax waits for the previous save inside save() anyway; waiting here first keeps
        # `_saving` pointing at the step whose finalisation hook runs next.
        self.wait()
        self._saving = step
        try:
            self._mngr.save(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
                    opt_state=ocp.args.StandardSave(opt_state),
                    meta=ocp.args.JsonSave(meta),
                ),
            )
        except Exception as e:  # reported with context, never swallowed
            raise CheckpointError(
                f"saving checkpoint step {step} in {self.directory} failed: {type(e).__name__}: {e}. "
                f"Last complete checkpoint: {self.latest_step()}"
            ) from e
        if not self.async_save:  # committed already: hash it now
            self._unhashed.add(step)
            self.wait()
        self._rotate()

    def _rotate(self) -> None:
        """Deletes committed checkpoints beyond the newest `keep`, sparing protected steps."""
        if self.keep is None:
            return
        steps = sorted(self.all_steps())
        spared = set(steps[-self.keep :]) | set(self.protect() if self.protect else ())
        for step in steps:
            if step not in spared:
                self._mngr.delete(step)

    def wait(self) -> None:
        """Blocks until pending async saves are committed; raises CheckpointError on failure."""
        try:
            self._mngr.wait_until_finished()
            self._write_pending_manifests()
        except Exception as e:
            raise CheckpointError(
                f"writing a checkpoint in {self.directory} failed: {type(e).__name__}: {e}. "
                f"Last complete checkpoint: {self.latest_step()}"
            ) from e

    def restore(self, step: int, abstract_params: nnx.State, abstract_opt_state: Any | None) -> tuple[nnx.State, Any, dict]:
        """Restores `step` into the given abstract targets (ShapeDtypeStructs with shardings),
        so every array lands directly in its shard."""
        args = {
            "params": ocp.args.StandardRestore(nnx.to_pure_dict(abstract_params)),
            "meta": ocp.args.JsonRestore(),
        }
        if abstract_opt_state is not None:
            args["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
        try:
            restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:
            # One line: TensorStore errors run to dozens; the cause stays chained (OPENRS_DEBUG=1).
            raise CheckpointError(
                f"restoring checkpoint step {step} from {self.directory} failed: {_first_line(e)}"
            ) from e
        params = abstract_params
        nnx.replace_by_pure_dict(params, restored["params"])
        return params, restored.get("opt_state") if abstract_opt_state is not None else None, restored["meta"]

    def verify(self, step: int) -> str | None:
        """None when `step` matches its checksums; else what is wrong. Raises
        FileNotFoundError for a step without a manifest."""
        return verify_step(self.directory / str(step))

    def _verdict(self, step: int) -> tuple[str | None, bool]:
        """(what is wrong with `step` or None, whether it has a manifest)."""
        try:
            return self.verify(step), True
        except FileNotFoundError:
            return None, False

    def restore_latest_intact(
        self, abstract_params: nnx.State, abstract_opt_state: Any | None, *, steps: Iterable[int] | None = None
    ) -> Restored | None:
        """Restores the newest step (of `steps`, default all) that verifies and restores
        cleanly; None when there is no checkpoint. Each newer step skipped as damaged (a
        checksum mismatch, a missing file, or a restore error) adds a one-line note naming it
        and the step used instead. Raises CheckpointError naming every step and what is wrong
        with it when none is intact."""
        candidates = sorted(self.all_steps() if steps is None else steps, reverse=True)
        if not candidates:
            return None
        damaged: list[tuple[int, str]] = []  # newest first
        notes: list[str] = []
        for step in candidates:
            # Process 0 reads and hashes; every process takes its verdict.
            problem, verified = dist.broadcast_object("checkpoint-verify",
                                                      self._verdict(step) if dist.is_primary() else None)
            got = None
            if problem is None:
                try:
                    got = self.restore(step, abstract_params, abstract_opt_state)
                    failed = None
                except CheckpointError as e:
                    failed = _first_line(e.__cause__ or e)
                problem = dist.first_set("checkpoint-restore", failed)
            if problem is not None:
                damaged.append((step, problem))
                continue
            assert got is not None  # no problem anywhere: this process restored the step
            params, opt_state, meta = got
            if not verified:
                notes.append(f"checkpoint step {step} has no checksums (saved before they existed, or the run "
                             "stopped as it was saved); restored without verification")
            if damaged:
                skipped = "; ".join(f"step {s}: {why}" for s, why in damaged)
                notes.insert(0, f"checkpoint {'steps' if len(damaged) > 1 else 'step'} "
                                f"{', '.join(str(s) for s, _ in damaged)} in {self.directory} "
                                f"{'are' if len(damaged) > 1 else 'is'} damaged ({skipped}); "
                                f"the older step {step} is intact and was restored")
            return Restored(step, params, opt_state, meta, notes)
        raise CheckpointError(
            f"no intact checkpoint in {self.directory}: "
            + "; ".join(f"step {s}: {why}" for s, why in damaged)
        )

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._mngr.close()


def abstract_with_shardings(tree: Any) -> Any:
    """ShapeDtypeStructs carrying each array's sharding (restore targets)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _warn(message: str) -> None:
    print(f"[openrs] warning: {message}", file=sys.stderr, flush=True)


def load_model_from_run(
    run_dir: str | os.PathLike, step: int | None = None, *, mesh=None, dtype=None, warn: Callable[[str], None] = _warn
):
    """(model, tokenizer, step) from a training run directory: the parameters of `step`
    (default: the newest intact step; `warn` hears about damaged newer ones) in a model built
    from the run's own config.yaml. A damaged `step` raises CheckpointError."""
    from openrs_jax.config import load_config
    from openrs_jax.data import load_tokenizer
    from openrs_jax.model import abstract_model
    from openrs_jax.weights.resolve import model_config_for

    run_dir = pathlib.Path(run_dir)
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} not found: {run_dir} is not a training run directory")
    cfg = load_config(cfg_file)
    model_cfg = model_config_for(cfg)
    if dtype is not None:
        model_cfg = model_cfg.replace(dtype=jax.numpy.dtype(dtype).name)
    ckpt = RunCheckpointer(run_dir, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoints in {ckpt.directory}")
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {ckpt.directory}; saved steps: {sorted(steps)}")
        graphdef, abstract = nnx.split(abstract_model(model_cfg))
        if mesh is not None:
            shardings = shd.state_shardings(abstract, mesh, shd.TRAIN_RULES)
        else:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # this process's own
            shardings = jax.tree.map(lambda _: device, abstract)
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        try:
            restored = ckpt.restore_latest_intact(abstract, None, steps=None if step is None else [step])
        except CheckpointError as e:
            if step is None:
                raise
            others = sorted(s for s in steps if s != step)
            raise CheckpointError(f"{e}; other saved steps: {others or 'none'}") from None
        if restored is None:  # all_steps() was not empty a moment ago
            raise CheckpointError(f"no checkpoints in {ckpt.directory}")
        for note in restored.notes:
            warn(note)
        params, step = restored.params, restored.step
    finally:
        ckpt.close()
    model = nnx.merge(graphdef, params)
    if mesh is not None:
        model.set_sharding(mesh, shd.TRAIN_RULES)
    tokenizer = load_tokenizer(cfg.model.tokenizer_path)
    return model, tokenizer, step


# ---------------------------------------------------------------------------- HF snapshots
HF_SUBDIR = "hf"


def hf_snapshot_dir(run_dir: str | os.PathLike, step: int) -> pathlib.Path:
    """Where `checkpoint.save_hf` writes step `step`: <run_dir>/hf/step-<step>."""
    return pathlib.Path(run_dir) / HF_SUBDIR / f"step-{int(step)}"


def hf_snapshot_steps(run_dir: str | os.PathLike) -> list[int]:
    """The steps that have an HF snapshot, sorted."""
    root = pathlib.Path(run_dir) / HF_SUBDIR
    steps = []
    for d in root.glob("step-*") if root.is_dir() else ():
        suffix = d.name[len("step-"):]
        if d.is_dir() and suffix.isdigit():
            steps.append(int(suffix))
    return sorted(steps)


def write_hf_snapshot(run_dir: str | os.PathLike, step: int, model, tokenizer, *, dtype=None,
                      generation_config: dict | None = None, model_card: str | None = None,
                      keep: Iterable[int] | None = None) -> pathlib.Path:
    """Writes the weights of `step` as an HF directory (`weights.save_hf`: config, safetensors,
    tokenizer, the source's generation config, a model card) at `hf_snapshot_dir`, then
    removes the snapshots of steps not in `keep` (None keeps all): they follow the Orbax
    checkpoints' rotation. A snapshot of the same step written earlier is replaced."""
    from openrs_jax.weights import save_hf

    out = save_hf(model, hf_snapshot_dir(run_dir, step), tokenizer=tokenizer, dtype=dtype,
                  generation_config=generation_config, model_card=model_card)
    if keep is not None:
        keep = set(keep) | {int(step)}
        for old in hf_snapshot_steps(run_dir):
            if old not in keep:
                shutil.rmtree(hf_snapshot_dir(run_dir, old), ignore_errors=True)
    return out
