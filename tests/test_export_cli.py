"""`python -m openrs_jax.export`: refuses directories it did not write unless --overwrite, never
deletes the run directory or anything it did not write; errors are one line."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from run_utils import make_run_dir

from openrs_jax import export
from openrs_jax.weights.hf import EXPORT_MARKER

REPO = pathlib.Path(__file__).resolve().parents[1]


def tree(path: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    make_run_dir(run, steps=(1,))
    return run


def test_export_writes_a_marker_and_replaces_its_own_earlier_export(run_dir, tmp_path, capsys):
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", str(run_dir), "--out", str(out)]) == 0
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(marker["files"])
    assert set(marker["files"]) == {p.name for p in out.iterdir()} - {EXPORT_MARKER}
    # An export directory is ours: exporting again replaces it, no --overwrite needed.
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    marker["files"].append("model-00001-of-00002.safetensors")
    (out / EXPORT_MARKER).write_text(json.dumps(marker))
    assert export.main(["--checkpoint", str(run_dir), "--out", str(out)]) == 0
    assert not (out / "model-00001-of-00002.safetensors").exists()
    assert "exported step 1" in capsys.readouterr().out


def test_a_directory_of_other_files_is_refused_then_merged_with_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "config.json").write_text("{}")
    before = tree(out)
    assert export.main(["--checkpoint", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {out} is not empty and was not written by export (it holds config.json, "
                          "notes.txt); pass --overwrite")
    assert "\n" not in err and tree(out) == before
    assert export.main(["--checkpoint", str(run_dir), "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "my notes"  # kept
    assert (out / "config.json").read_text() != "{}"  # same name: replaced
    assert (out / "model.safetensors").is_file()
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert "notes.txt" not in marker["files"] and "config.json" in marker["files"]
    # Still not all ours: the next export needs --overwrite again.
    assert export.main(["--checkpoint", str(run_dir), "--out", str(out)]) == 2


@pytest.mark.parametrize("where", ["run", "parent", "checkpoints"])
def test_the_run_directory_is_never_an_export_target(run_dir, where, capsys):
    out = {"run": run_dir, "parent": run_dir.parent, "checkpoints": run_dir / "checkpoints" / "hf"}[where]
    before = tree(run_dir)
    assert export.main(["--checkpoint", str(run_dir), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "choose" in err and "Traceback" not in err
    assert tree(run_dir) == before


def test_save_hf_refuses_and_overwrites_the_same_way(run_dir, tmp_path):
    from openrs_jax.checkpoint import load_model_from_run
    from openrs_jax.weights import save_hf

    model, _, _ = load_model_from_run(run_dir)
    out = tmp_path / "user"
    out.mkdir()
    (out / "keep.bin").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"not empty and was not written by an export \(1 entries of others: keep.bin\)"):
        save_hf(model, out)
    save_hf(model, out, overwrite=True)
    assert (out / "keep.bin").read_bytes() == b"x" and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".user")]  # no temp left
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        save_hf(model, tmp_path / "afile", overwrite=True)


def test_cli_error_is_one_line_with_exit_code_2(run_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "data.csv").write_text("a,b")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENRS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "openrs_jax.export", "--checkpoint", str(run_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --out")
    proc = subprocess.run([sys.executable, "-m", "openrs_jax.export", "--checkpoint", str(tmp_path / "nothing"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: CheckpointError: {tmp_path / 'nothing' / 'config.yaml'} not found: " \
                                  f"{tmp_path / 'nothing'} is not a training run directory"


def test_export_copies_the_source_generation_config_writes_a_card_and_normal_permissions(tmp_path, capsys):
    """A run that started from an HF directory exports that directory's generation config (not a
    fixed one); the export has a model card naming the step, its metrics and the recipe; the
    directory gets the umask's permissions (mkdtemp's 0700 used to leak through)."""
    import stat

    import yaml
    from flax import nnx

    from openrs_jax.config import load_config
    from openrs_jax.data import build_quickstart_tokenizer
    from openrs_jax.model import Qwen2
    from openrs_jax.weights import save_hf

    source = tmp_path / "source"
    generation = {"bos_token_id": 1, "eos_token_id": 0, "do_sample": True, "temperature": 0.6, "top_p": 0.95}
    save_hf(Qwen2(load_config("quickstart").model.preset_config(), rngs=nnx.Rngs(0)), source,
            tokenizer=build_quickstart_tokenizer(), generation_config=generation)
    run = tmp_path / "run"
    make_run_dir(run, steps=(3,))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["name_or_path"] = str(source)  # same shapes as the quickstart preset
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "reward": 0.625, "kl": 0.01}) + "\n")
    out = tmp_path / "hf"
    assert export.main(["--checkpoint", str(run), "--out", str(out)]) == 0
    assert json.loads((out / "generation_config.json").read_text()) == generation
    card = (out / "README.md").read_text()
    assert card.startswith(f"---\nbase_model: {source}\nlibrary_name: transformers\n")
    assert "# quickstart, step 3" in card and "| reward | 0.625 |" in card and "run_name: quickstart" in card
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    # From a preset there is no source: bos/eos only (transformers' defaults otherwise).
    out2 = tmp_path / "hf2"
    run2 = tmp_path / "run2"
    make_run_dir(run2, steps=(1,))
    assert export.main(["--checkpoint", str(run2), "--out", str(out2)]) == 0
    assert json.loads((out2 / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 0}
