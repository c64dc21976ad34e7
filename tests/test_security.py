"""Loading a run never executes code from a file, and never reads or writes outside the run.

Static checks parse every module of the package (and the root cli.py) for the ways Python runs
code from data: pickle and its relatives, torch.load without weights_only=True, np.load with
allow_pickle=True, eval/exec. Behavioural checks plant hostile values in a run's JSON and
symlinks in its folder.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
import shutil
import typing
from pathlib import Path

import pytest
from fixtures import run_cli

from vqgen import checkpoint
from vqgen.config import (
    DataConfig,
    PriorConfig,
    TrainConfig,
    VQVAEConfig,
    load_config,
)
from vqgen.errors import VqgenError
from vqgen.models.vqvae import VQVAE
from vqgen.rundir import RunDir

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power

REPO = Path(__file__).resolve().parents[1]
SOURCES = [*sorted((REPO / "vqgen").rglob("*.py")), REPO / "cli.py"]
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve"}
CODE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def _name(node: ast.expr) -> str:
    """'torch.load' for the expression torch.load, '' for anything more complex."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _name(node.value)):
        return f"{base}.{node.attr}"
    return ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def unsafe_calls(source: str) -> list[str]:
    """Every way `source` could run code from a file: one description per finding."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            )
            for module in modules:
                if (module or "").split(".")[0] in PICKLING_MODULES:
                    found.append(f"{where}: imports {module}")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in CODE_BUILTINS:
            found.append(f"{where}: calls {name}()")
        if name.endswith("torch.load") and not _keyword_is(node, "weights_only", True):
            found.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and _keyword_is(node, "allow_pickle", True):
            found.append(f"{where}: np.load with allow_pickle=True")
        if name in ("torch.save", "os.system") or _keyword_is(node, "shell", True):
            found.append(f"{where}: {name or 'a call'} writes pickles or runs a shell")
    return found


def test_the_package_never_runs_code_from_a_file() -> None:
    assert len(SOURCES) > 20 and REPO / "vqgen" / "checkpoint.py" in SOURCES
    findings = [
        f"{path.relative_to(REPO)} {finding}"
        for path in SOURCES
        for finding in unsafe_calls(path.read_text())
    ]
    assert findings == []


# -- paths in a run's JSON ----------------------------------------------------------------------
#
# The loaders take from a run's JSON only the config sections (model, data, train), the
# prior's label names and the VQ-VAE hash; weights are always found by fixed names inside the
# run folder, and the "weights" entry beside them is a record for people, never read back.
# The one path among the config fields is DataConfig.source: where the slices live, data input
# by design (evaluate and train-prior read the dataset from there, as train-vqvae did). Every
# other string field holds one of a few fixed choices and is checked against them.

PATH_LIKE = "../../../../etc/passwd"
STRING_FIELDS = {
    (DataConfig, "source"),  # the dataset, read by design
    (DataConfig, "kind"),
    (VQVAEConfig, "quantizer"),
    (PriorConfig, "kind"),
    (PriorConfig, "condition"),
    (TrainConfig, "device"),
    (TrainConfig, "optimizer"),
}


def keys_read(source: str) -> set[str]:
    """The constant keys `source` reads from dicts: x["key"] and x.get("key", ...)."""
    keys = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = node.args[0] if node.func.attr == "get" and node.args else None
        else:
            continue
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.add(key.value)
    return keys


def test_no_file_name_is_read_back_from_json() -> None:
    """No key that names a file, a folder or the weights is read anywhere in the package."""
    assert {"model", "data", "label_names", "vqvae_sha256"} <= keys_read(
        (REPO / "vqgen" / "checkpoint.py").read_text()
        + (REPO / "vqgen" / "inference.py").read_text()
        + (REPO / "vqgen" / "train_prior.py").read_text()
    )  # the scan does see what the loaders read
    keys = set().union(*(keys_read(path.read_text()) for path in SOURCES))
    suspicious = {k for k in keys if re.search(r"path|file|dir|folder|^weights$|^root$", k)}
    # "paths": the data cache's list of source slices, kept as labels and never opened
    assert suspicious == {"paths"}


def test_the_only_path_among_stored_config_fields_is_the_dataset_source() -> None:
    strings = {
        (cls, f.name)
        for cls in (DataConfig, VQVAEConfig, PriorConfig, TrainConfig)
        for f in dataclasses.fields(cls)
        if typing.get_type_hints(cls)[f.name] is str
    }
    assert strings == STRING_FIELDS  # a new string field must be added here and checked below


@pytest.mark.parametrize(
    ("cls", "field"), sorted(STRING_FIELDS - {(DataConfig, "source")}, key=str)
)
def test_a_path_in_a_fixed_choice_field_is_refused(cls, field) -> None:
    example = TrainConfig(epochs=1) if cls is TrainConfig else cls()
    values = {**dataclasses.asdict(example), field: PATH_LIKE}
    with pytest.raises(VqgenError) as err:
        config = load_config(cls, values, "run.json")
        if cls is DataConfig:  # the kind is checked where the data is found
            from vqgen.data import load_data

            load_data(config, "train", 32)
        if cls is TrainConfig:
            from vqgen.device import resolve_device

            resolve_device(config.device)
    assert PATH_LIKE in str(err.value) or field.replace("_", "-") in str(err.value)


def digest_tree(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Relative path -> SHA-256 (or the link target) of everything under `folder`."""
    tree = {}
    for path in sorted(folder.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_symlink():
            tree[str(path.relative_to(folder))] = f"-> {path.readlink()}"
        elif path.is_file():
            tree[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


@pytest.fixture
def world(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(run, outside): a copy of the session's run, and beside it a folder with a file it must
    not touch."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret: do not read\n")
    return trained_run, outside


def sample(capsys, run: Path) -> tuple[int, str]:
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", "2", "--device", "cpu")
    return code, err


def test_weights_named_in_the_json_are_never_opened(capsys, world) -> None:
    """Point the 'weights' records at a file outside and at garbage: the command still uses
    the run's own files, gives the same samples, and changes nothing outside."""
    run, outside = world
    assert sample(capsys, run)[0] == 0
    clean = (run / "samples" / "sample_0000.png").read_bytes()
    shutil.rmtree(run / "samples")
    for name, target in (("vqvae", outside / "secret.txt"), ("prior", "../../outside/../x/y")):
        path = run / f"{name}.json"
        meta = json.loads(path.read_text())
        meta["weights"] = str(target)
        path.write_text(json.dumps(meta))
    before = digest_tree(outside)
    code, err = sample(capsys, run)
    assert code == 0, err
    assert (run / "samples" / "sample_0000.png").read_bytes() == clean
    assert digest_tree(outside) == before


def test_a_hostile_data_section_writes_nothing_anywhere(capsys, world, vqgen_cache) -> None:
    """A data size that is a path (it would name the cache file) is refused before any file
    is made, in the run, beside it or in the cache."""
    run, _ = world
    path = run / "vqvae.json"
    meta = json.loads(path.read_text())
    meta["data"]["size"] = "32/../../../outside/owned"
    path.write_text(json.dumps(meta))
    base = run.parent
    before = digest_tree(base)
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--n-samples", "2", "--device", "cpu")
    assert code == 1 and err.count("\n") == 1 and "'size'" in err, err
    assert digest_tree(base) == before
    assert not vqgen_cache.exists() or not any(vqgen_cache.iterdir())


# -- symlinks in a run folder -------------------------------------------------------------------
#
# Reading through a symlink is allowed: it is how one VQ-VAE is shared by several runs, and a
# link to anything that is not a checkpoint is a one-line error that shows none of its content.
# Writing never follows a link: files are written to a temporary name and renamed over the
# link, so the run gets its own file and the link's target is left as it was.


@pytest.mark.slow
def test_a_symlinked_checkpoint_is_read_but_never_written_through(capsys, world) -> None:
    run, outside = world
    shared = outside / "shared-vqvae.safetensors"
    shutil.move(run / "vqvae.safetensors", shared)
    (run / "vqvae.safetensors").symlink_to(shared)
    (run / "report.json").symlink_to(outside / "secret.txt")
    (run / "samples").mkdir()
    (run / "samples" / "grid.png").symlink_to(outside / "secret.txt")
    before = digest_tree(outside)

    code, err = sample(capsys, run)  # reads the shared VQ-VAE through the link
    assert code == 0, err
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--n-samples", "2", "--device", "cpu")
    assert code == 0, err
    model, meta = checkpoint.load_vqvae(RunDir(run))
    checkpoint.save_model(
        RunDir(run), "vqvae", model, meta, last=False
    )  # what training would write

    assert digest_tree(outside) == before  # the targets are untouched
    for name in ("vqvae.safetensors", "report.json", "samples/grid.png"):
        assert not (run / name).is_symlink() and (run / name).is_file(), name
    assert json.loads((run / "report.json").read_text())["split"] == "test"


@pytest.mark.parametrize("name", ["vqvae.safetensors", "prior.safetensors"])
def test_a_symlink_to_a_file_that_is_no_checkpoint_is_refused_without_showing_it(
    capsys, world, name: str
) -> None:
    run, outside = world
    (run / name).unlink()
    (run / name).symlink_to(outside / "secret.txt")
    before = digest_tree(run.parent)
    code, err = sample(capsys, run)
    assert code == 1 and err.count("\n") == 1, err
    assert f"{run / name} is not a readable safetensors file" in err
    assert "top secret" not in err and "Traceback" not in err
    assert digest_tree(run.parent) == before


def test_loading_a_checkpoint_never_unpickles(tmp_path: Path, monkeypatch) -> None:
    """Even with pickle's loaders disabled, a run saves and loads: safetensors and JSON only."""
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used to load a checkpoint")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    cfg = VQVAEConfig(size=16, hidden=8, res_blocks=1, codebook_size=4, code_dim=2)
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", VQVAE(cfg), {"model": dataclasses.asdict(cfg)}, False
    )
    model, _ = checkpoint.load_vqvae(RunDir(tmp_path))
    assert model.cfg == cfg
