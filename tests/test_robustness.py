"""Robustness: a killed or interrupted training run resumes, damaged or foreign run files and odd
input data give one line and the right exit code, and a refused command changes nothing."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import (
    assert_one_line_error,
    brain_slice,
    make_adni,
    make_folder,
    make_oasis,
    run_cli,
)
from PIL import Image
from tiny import (
    CPU,
    CPU_DEVICE,
    NARROW,
    PRIOR_2X8,
    SMALL_CODEBOOK,
    VQVAE_32,
    blobs,
    interrupt_at,
    make_stage,
    snapshot,
    train_cfg,
)

import vqgen.loaded
from vqgen import checkpoint, fileio, runlock
from vqgen.api import load_data
from vqgen.data import SPLITS, DataWarning
from vqgen.rundir import RunDir

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power


@pytest.fixture
def run(trained_run: Path) -> Path:
    """The session's tiny run (ADNI layout, a label-conditioned prior), a private copy."""
    return trained_run


# -- SIGKILL and SIGINT on a real training process ----------------------------------------------


def start_training(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """`python -m vqgen train-vqvae` on a small OASIS layout (15 steps an epoch, 3 epochs)."""
    data = make_oasis(tmp_path, {"train": 6, "validate": 1, "test": 1}, slices=10, size=32)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vqgen", "train-vqvae", "--data", str(data), "--run", str(run)]
    cmd += [*VQVAE_32, "--batch-size", "4", "--epochs", "3", *CPU, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the test machine is shared and small
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    return proc, run


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll until `path` exists; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before {path.name} appeared")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.005)


def assert_run_files_load(run: Path) -> None:
    """Every checkpoint file parses, the last weights pair with their JSON and train state, and
    the only other files are atomic_write's hidden `.<name>.*.tmp` leftovers."""
    for path in run.glob("*.safetensors"):
        fileio.load_tensors(path)
    for path in run.glob("*.json"):
        fileio.read_json(path)
    for line in (run / "metrics-vqvae.jsonl").read_text().splitlines():
        json.loads(line)
    last = checkpoint.read_meta(RunDir(run), "vqvae", last=True)
    state = fileio.load_tensor_meta(run / "train_state-vqvae.safetensors")
    assert last["weights_sha256"] == fileio.sha256(run / "vqvae-last.safetensors")
    assert last["step"] == state["step"]
    checkpoint.load_vqvae(RunDir(run), last=True)
    checkpoint.load_vqvae(RunDir(run))
    for path in run.glob(".*"):  # a temporary file never takes a name a loader would read
        if path.name != runlock.LOCK_NAME:
            assert path.suffix == ".tmp" and path.name.startswith("."), path


@pytest.mark.slow
def test_sigkill_mid_training_leaves_loadable_checkpoints_and_resume_continues(capsys, tmp_path):
    proc, run = start_training(tmp_path)
    wait_for(run / "train_state-vqvae.safetensors", proc)  # the end of epoch 1: all files saved
    os.kill(proc.pid, signal.SIGKILL)  # no handler, no cleanup: as a power cut or the OOM killer
    assert proc.wait(timeout=60) == -signal.SIGKILL

    assert_run_files_load(run)
    saved = checkpoint.read_meta(RunDir(run), "vqvae", last=True)
    assert saved["step"] == 15 * saved["epoch"] and saved["epoch"] >= 1
    before = [json.loads(line) for line in (run / "metrics-vqvae.jsonl").read_text().splitlines()]
    validated = [r for r in before if "val_ssim" in r and r["step"] <= saved["step"]]

    code, _, err = run_cli(capsys, "train-vqvae", "--run", run, "--resume", *CPU)
    assert code == 0, err
    # the killed process could not release its lock: the kernel did, and the resume says so
    assert "took over the lock of `vqgen train-vqvae` (pid" in err
    resumed = checkpoint.read_meta(RunDir(run), "vqvae", last=True)
    assert resumed["step"] == 45 > saved["step"]  # the stored schedule: 3 epochs of 15 steps
    assert resumed["epoch"] == 3
    after = [json.loads(line) for line in (run / "metrics-vqvae.jsonl").read_text().splitlines()]
    assert after[: len(before)] == before  # the log is appended to, nothing lost
    val_steps = [r["step"] for r in after if "val_ssim" in r]
    assert val_steps == [15, 30, 45]  # one validation per epoch, each once
    assert [r for r in after if "val_ssim" in r][: len(validated)] == validated
    assert_run_files_load(run)


@pytest.mark.slow
def test_sigint_to_a_training_process_saves_and_exits_130(tmp_path):
    proc, run = start_training(tmp_path)
    wait_for(run / "train_state-vqvae.safetensors", proc)
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=120) == 130
    err = (tmp_path / "stderr.txt").read_text()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "--resume" in errors[0] and "vqvae-last.safetensors" in errors[0]
    assert_run_files_load(run)
    step = checkpoint.read_meta(RunDir(run), "vqvae", last=True)["step"]
    assert f"interrupted at step {step}:" in errors[0]
    assert 15 <= step < 45


@pytest.mark.slow
def test_resume_after_a_kill_logs_each_step_once_in_parseable_lines(tmp_path):
    """A SIGKILL mid-epoch leaves log lines of steps after the last checkpoint (and may tear the
    last one): --resume drops them quietly. A damaged line elsewhere is dropped with a warning
    that says where. After the resume every line parses and no step is logged twice."""
    from vqgen.errors import Interrupted
    from vqgen.train import fit

    train_set, val_set = blobs(20), blobs(8, seed=1)  # 5 steps an epoch, one log line a step
    with pytest.raises(Interrupted):
        fit(
            make_stage(tmp_path, train_set, val_set, interrupt_at(7)),
            train_cfg(),
            RunDir(tmp_path),
            CPU_DEVICE,
        )
    log = tmp_path / "metrics-vqvae.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with log.open("a") as f:  # what the kill would have left had it come two steps later
        f.write(json.dumps({"step": 8, "epoch": 1, "loss": 0.5, "mse": 0.5}) + "\n")
        f.write('{"step": 9, "epoch": 1, "lo')
    with pytest.warns(UserWarning, match=r"dropped 1 line\(s\) that are not JSON, first line 2"):
        fit(
            make_stage(tmp_path, train_set, val_set),
            train_cfg(),
            RunDir(tmp_path),
            CPU_DEVICE,
            resume=True,
        )
    records = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 16))


def test_ctrl_c_while_sampling_exits_130_without_traceback_or_partial_files(
    capsys, run, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vqgen.loaded.LoadedRun, "draw", interrupted)  # where sample draws
    before = snapshot(run)
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 130, "sample interrupted")
    assert snapshot(run) == before  # no half-written samples


@pytest.mark.parametrize(
    ("module", "function", "args"),
    [
        ("vqgen.loaded", "load_data", ["evaluate", "--n-samples", "2", *CPU]),
        ("vqgen.data.describe", "load_data", ["data"]),
    ],
    ids=["evaluate", "data"],
)
def test_ctrl_c_outside_training_is_one_line_and_exit_130(
    capsys, run, monkeypatch, module, function, args
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), function, interrupted)
    where = ["--run", run] if args[0] == "evaluate" else ["mni152"]
    code, _, err = run_cli(capsys, *args, *where)
    assert_one_line_error(code, err, 130, f"{args[0]} interrupted")


# -- damaged or foreign run files ---------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("verb", ["sample", "evaluate"])
@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("vqvae.safetensors", truncate),
        ("vqvae.safetensors", garbage),
        ("vqvae.safetensors", empty),
        ("prior.safetensors", truncate),
        ("prior.safetensors", garbage),
    ],
)
def test_damaged_weights_are_one_line_and_change_nothing(capsys, run, verb, name, damage):
    damage(run / name)
    before = snapshot(run)
    options = ["--n", "2"] if verb == "sample" else ["--n-samples", "2"]
    code, _, err = run_cli(capsys, verb, "--run", run, *options, *CPU)
    assert_one_line_error(code, err, 1, str(run / name), "not a readable safetensors file")
    assert snapshot(run) == before


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


# (file, change, words the error line must hold); every one exits 1 naming the file
FOREIGN_JSON = {
    "unknown key": ("vqvae.json", lambda m: m["model"].update(colour="red"), ["'colour'"]),
    "missing section": ("vqvae.json", lambda m: m.pop("model"), ["'model' is missing"]),
    "section not an object": ("vqvae.json", lambda m: m.update(model=[32]), ["not an object"]),
    "string for int": ("vqvae.json", lambda m: m["model"].update(size="32"), ["'size'", "int"]),
    "float for int": ("vqvae.json", lambda m: m["model"].update(hidden=16.5), ["'hidden'"]),
    "null for int": ("vqvae.json", lambda m: m["model"].update(code_dim=None), ["'code_dim'"]),
    "bool for int": ("vqvae.json", lambda m: m["model"].update(res_blocks=True), ["res_blocks"]),
    "value out of range": (
        "vqvae.json",
        lambda m: m["model"].update(downsample=5),
        ["'model'", "--downsample must be 2, 4 or 8"],
    ),
    "other format version": (
        "vqvae.json",
        lambda m: m.update(format="vqgen-run/2"),
        ["not a vqgen checkpoint of format vqgen-run/1"],
    ),
    "prior in place of vqvae": ("vqvae.json", lambda m: m.update(stage="prior"), ["'prior'"]),
    "prior string for int": ("prior.json", lambda m: m["model"].update(layers="2"), ["'layers'"]),
    "prior codebook size": (
        "prior.json",
        lambda m: m["model"].update(codebook_size=32),
        ["32 codes", "VQ-VAE has 16 codes", "train-prior"],
    ),
    "prior grid": (
        "prior.json",
        lambda m: m["model"].update(grid=4),
        ["4x4 grid", "8x8 grid", "train-prior"],
    ),
    "prior without vqvae hash": ("prior.json", lambda m: m.pop("vqvae_sha256"), ["vqvae_sha256"]),
    "prior of another vqvae": (
        "prior.json",
        lambda m: m.update(vqvae_sha256="0" * 64),
        ["another VQ-VAE", "train-prior"],
    ),
    "label prior without labels": (
        "prior.json",
        lambda m: (m["model"].update(num_labels=0), m.update(label_names=[])),
        ["'model'", "num_labels"],
    ),
    "data size other than model size": (
        "vqvae.json",
        lambda m: m["data"].update(size=64),
        ["'data' size 64", "'model' size 32"],
    ),
    "label names not a list": ("prior.json", lambda m: m.update(label_names="AD"), ["label_names"]),
    "label names too few": ("prior.json", lambda m: m.update(label_names=["AD"]), ["label_names"]),
}


@pytest.mark.parametrize("case", FOREIGN_JSON)
def test_edited_or_foreign_json_is_one_line_naming_file_and_key(capsys, run, case):
    name, change, needles = FOREIGN_JSON[case]
    edit_json(run / name, change)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 1, str(run / name), *needles)
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda m: m.pop("data"), ["'data' is missing"]),
        (lambda m: m["data"].update(source=7), ["'data'", "'source'"]),
        (lambda m: m["data"].update(strict="no"), ["'data'", "'strict'"]),
    ],
)
def test_evaluate_refuses_a_bad_data_section(capsys, run, change, needles):
    edit_json(run / "vqvae.json", change)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--n-samples", "2", *CPU)
    assert_one_line_error(code, err, 1, str(run / "vqvae.json"), *needles)
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.parametrize("levels", ["x", [0.9], [0.9, 0.1], [True, 1]])
def test_a_bad_slice_range_is_one_line(capsys, tmp_path, tiny_mni152, levels):
    run = tmp_path / "run"
    args = ["--run", run, "--max-steps", "1", "--batch-size", "4", *CPU]
    assert run_cli(capsys, "train-vqvae", *args, *VQVAE_32)[0] == 0
    prior = [*PRIOR_2X8, "--condition", "slice"]
    assert run_cli(capsys, "train-prior", *args, *prior)[0] == 0
    edit_json(run / "prior.json", lambda m: m.update(slice_range=levels))
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 1, str(run / "prior.json"), "'slice_range'")


@pytest.mark.slow
def test_evaluate_on_a_split_of_one_slice_is_one_line(capsys, tmp_path):
    """A folder of 10 images, which `data` accepts, has a test split of 1 slice."""
    data = make_folder(tmp_path, n=10)
    run = tmp_path / "run"
    args = ["--run", run, "--max-steps", "1", "--batch-size", "4", *CPU]
    assert run_cli(capsys, "train-vqvae", "--data", data, *args, *VQVAE_32)[0] == 0
    assert run_cli(capsys, "train-prior", *args, *PRIOR_2X8)[0] == 0
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--n-samples", "2", *CPU)
    assert_one_line_error(code, err, 2, "test split", "holds 1 slice", "--split")


# -- runs with missing pieces ---------------------------------------------------------------------


def drop_prior(run: Path) -> None:
    for path in run.glob("prior*"):
        path.unlink()


def test_sample_without_a_prior_says_to_train_one(capsys, run):
    drop_prior(run)
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", "2", *CPU)
    assert_one_line_error(code, err, 2, str(run), "prior", "vqgen train-prior")
    assert not (run / "samples").exists()


@pytest.mark.slow
def test_evaluate_without_a_prior_reports_reconstruction_only(capsys, run):
    """It says why the prior and sample sections are missing, and writes the rest."""
    drop_prior(run)
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--n-samples", "2", *CPU)
    assert code == 0, err
    assert "warning:" in err and "no prior" in err and "vqgen train-prior" in err
    report = json.loads((run / "report.json").read_text())
    assert {"reconstruction", "prior", "samples"} & set(report) == {"reconstruction"}
    assert report["split"] == "test" and report["images"] == 8  # 2 patients x 2 classes x 2
    assert 0 <= report["reconstruction"]["ssim"]["mean"] <= 1
    markdown = (run / "report.md").read_text()
    assert "## Reconstruction" in markdown and "## Prior" not in markdown
    assert "prior NLL" not in out
    assert (run / "figures" / "eval_reconstructions.png").is_file()
    assert not (run / "figures" / "eval_samples_nearest.png").exists()
    assert not (run / "figures" / "eval_outline_worst.png").exists()  # it draws samples


def test_evaluate_after_the_data_moved_names_the_path(capsys, run):
    source = json.loads((run / "vqvae.json").read_text())["data"]["source"]
    edit_json(run / "vqvae.json", lambda m: m["data"].update(source=source + "-moved"))
    code, _, err = run_cli(capsys, "evaluate", "--run", run, "--n-samples", "2", *CPU)
    assert_one_line_error(code, err, 2, source + "-moved", "does not exist")
    assert not (run / "report.json").exists()


def test_unknown_label_for_a_label_prior_lists_the_known_ones(capsys, run):
    code, _, err = run_cli(capsys, "sample", "--run", run, "--label", "MCI", "--n", "2", *CPU)
    assert_one_line_error(code, err, 2, "--label MCI", "NC, AD")
    assert not (run / "samples").exists()
    code, _, err = run_cli(capsys, "sample", "--run", run, "--label", "AD", "--n", "2", *CPU)
    assert code == 0, err
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        ".vqgen-samples.json",  # the digests of what it wrote, for the next `sample`
        "grid.png",
        "sample_0000.png",
        "sample_0001.png",
    ]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["train-vqvae", "--size", "30", *NARROW, *SMALL_CODEBOOK],
            ["--size 30", "--downsample 4"],
        ),
        (["train-vqvae", "--data", "/nowhere/at/all"], ["/nowhere/at/all", "does not exist"]),
        (["train-prior", "--condition", "colour"], ["--condition"]),
        (["sample", "--temperature", "inf"], ["--temperature", "inf"]),
        (["sample", "--n", "0"], ["--n must be", "at least 1"]),
        (["sample", "--out", "{run}/vqvae.json"], ["--out", "is a file", "give a folder"]),
        (["evaluate", "--out", "{run}/vqvae.json/r.json"], ["--out", "cannot create"]),
        (["evaluate", "--n-samples", "1"], ["--n-samples"]),
        (["train-vqvae", "--overwrite", "--size", "100000"], ["--size", "2048", "100000"]),
        (["train-vqvae", "--overwrite", "--data-seed", "-1"], ["--data-seed", "-1"]),
        (["train-prior", "--overwrite", "--seed", "99999999999999999999"], ["--seed"]),
        (["sample", "--seed", "-1"], ["--seed", "-1"]),
        (["evaluate", "--seed", "99999999999999999999"], ["--seed"]),
    ],
)
def test_refused_commands_leave_an_existing_run_untouched(capsys, run, args, needles):
    """A mistyped command on a trained run is refused before it writes anything."""
    before = snapshot(run)
    args = [a.replace("{run}", str(run)) for a in args]
    code, _, err = run_cli(capsys, *args[:1], "--run", run, *args[1:], *CPU)
    assert_one_line_error(code, err, 2, *needles)
    assert snapshot(run) == before


# -- odd input data -------------------------------------------------------------------------------

SIZE = 32


def grey_square(value: int, height: int, width: int) -> np.ndarray:
    """A black (height, width) uint8 image with a centred block of grey level `value`."""
    image = np.zeros((height, width), np.uint8)
    image[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = value
    return image


# mode -> (how to make the image from an 8-bit grey one, expected level of the block in [0,1])
MODES: dict[str, tuple[Callable[[np.ndarray], Image.Image], float]] = {
    "L": (lambda a: Image.fromarray(a), 200 / 255),
    "RGB": (lambda a: Image.fromarray(a).convert("RGB"), 200 / 255),
    "RGBA": (lambda a: Image.fromarray(a).convert("RGBA"), 200 / 255),
    "LA": (lambda a: Image.fromarray(a).convert("LA"), 200 / 255),
    "P": (lambda a: Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE), 200 / 255),
    "1": (lambda a: Image.fromarray(a).convert("1", dither=Image.Dither.NONE), 1.0),
    # 16-bit: scaled by its own range, so the block is white and the background black
    "I;16": (lambda a: Image.fromarray(a.astype(np.uint16) * 257), 1.0),
}


def test_folder_of_mixed_sizes_and_modes_loads_as_grey_images_of_one_size(tmp_path):
    """Each image: black with a grey block in the middle; whatever its mode, size and aspect,
    it loads as float32 in [0, 1] of the asked size, black around the right grey level."""
    data = tmp_path / "mixed"
    data.mkdir()
    shapes = [(17, 33), (64, 64), (300, 160), (48, 30), (128, 96)]
    expected = {}
    for i, (mode, (make, level)) in enumerate(sorted(MODES.items()) * 2):
        height, width = shapes[i % len(shapes)]
        path = data / f"img_{i:02d}_{mode.replace(';', '')}.png"  # the mode names the file
        make(grey_square(200, height, width)).save(path)
        expected[str(path)] = level
    splits = {split: load_data(data, split, size=SIZE) for split in SPLITS}
    assert sum(len(ds) for ds in splits.values()) == len(expected)  # none skipped
    for ds in splits.values():
        images = ds.images
        assert images.dtype == torch.float32 and images.shape == (len(ds), 1, SIZE, SIZE)
        assert images.min() >= 0 and images.max() <= 1
        for image, path in zip(images, ds.paths, strict=True):
            assert image[0, SIZE // 2, SIZE // 2] == pytest.approx(expected[path], abs=0.02), path
            assert image[0, 0, 0] == 0 and image[0, -1, -1] == 0, path  # background stays black


@pytest.mark.parametrize(("value", "level"), [(65535, 1.0), (0, 0.0), (32768, 0.5)])
def test_a_16_bit_image_of_one_grey_level_keeps_its_level(tmp_path, value, level):
    """No range of its own to scale by: white must not come out black (it did: all zeros)."""
    data = tmp_path / "flat"
    data.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30), value, np.uint16)).save(data / f"flat{i}.png")
    ds = load_data(data, "train", size=SIZE)
    assert ds.images[0, 0, SIZE // 2, SIZE // 2] == pytest.approx(level, abs=0.01)


def add_clutter(folder: Path) -> None:
    """What real data folders hold besides slices."""
    (folder / "README.txt").write_text("scanned 2019\n")
    (folder / "labels.csv").write_text("id,label\n1,AD\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (folder / "._case_001_slice_0.nii.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "thumbs.db").write_bytes(bytes(64))
    (folder / "not_a_file.png").mkdir()


@pytest.mark.parametrize("layout", ["oasis", "adni", "folder"])
def test_non_image_files_in_a_data_folder_are_ignored(tmp_path, layout):
    if layout == "oasis":
        root = make_oasis(tmp_path, slices=2, size=64)
        folders = [root / f"keras_png_slices_{split}" for split in SPLITS]
    elif layout == "adni":
        root = make_adni(tmp_path, slices=2)
        folders = [root / split / label for split in ("train", "test") for label in ("AD", "NC")]
    else:
        root = tmp_path / "pngs"
        root.mkdir()
        for i in range(10):
            Image.fromarray(brain_slice(40, 40, i)).save(root / f"slice{i}.png")
        folders = [root]
    clean = {split: load_data(root, split, size=SIZE) for split in SPLITS}
    for folder in folders:
        add_clutter(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # not even a skipped-file warning
        cluttered = {split: load_data(root, split, size=SIZE) for split in SPLITS}
    for split in SPLITS:
        assert cluttered[split].paths == clean[split].paths
        assert torch.equal(cluttered[split].pixels, clean[split].pixels)
