"""Nothing lost after an unclean end: an --overwrite cut short by SIGKILL or a full disk, an
evaluate interrupted or pointed at files it did not write."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fixtures import assert_one_line_error, make_oasis, run_cli
from tiny import CPU, snapshot

from vqgen import checkpoint, overwrite
from vqgen.errors import OutputError
from vqgen.rundir import RunDir

pytestmark = pytest.mark.usefixtures("quick_c2st")


def models_of(run: Path) -> dict[str, str]:
    """Digests of what training made: weights, their JSON, train states and code grids."""
    return {k: v for k, v in snapshot(run).items() if not k.startswith(("figures", "samples"))}


# -- an --overwrite cut short -----------------------------------------------------------------


def cut_short(run: Path, stage: str) -> None:
    """What SIGKILL leaves after `train-<stage> --overwrite` set the old files aside and
    before the new training saved: a process enters the guard and dies inside it, with no
    cleanup of any kind (os._exit)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            guard = overwrite.replacing(RunDir(run), stage, resume=False, overwrite=True)
            guard.__enter__()  # held by name: a collected guard would run its cleanup
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


def test_a_killed_overwrite_is_undone_by_the_next_command(trained_run, capsys) -> None:
    before = models_of(trained_run)
    cut_short(trained_run, "vqvae")
    assert not (trained_run / "vqvae.json").exists() and (trained_run / ".replaced").is_dir()
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    assert code == 0, err
    assert "an --overwrite stopped before its first save; put back" in err and "prior.json" in err
    assert models_of(trained_run) == before  # every file as it was, byte for byte
    assert not (trained_run / ".replaced").exists()


def test_a_plain_training_after_a_killed_overwrite_still_needs_overwrite(trained_run, capsys):
    cut_short(trained_run, "vqvae")
    code, _, err = run_cli(capsys, "train-vqvae", "--run", trained_run, "--max-steps", "1", *CPU)
    assert code == 2 and "already holds a vqvae" in err and "put back" in err, err
    assert (trained_run / "prior.json").is_file()


def test_an_overwrite_killed_after_its_first_save_is_finished(trained_run, capsys) -> None:
    cut_short(trained_run, "prior")
    state = trained_run / ".replaced" / "train_state-prior.safetensors"
    shutil.copy(state, trained_run / "train_state-prior.safetensors")  # a new save, new inode
    shutil.copy(trained_run / ".replaced" / "prior.json", trained_run / "prior.json")
    shutil.copy(trained_run / ".replaced" / "prior.safetensors", trained_run / "prior.safetensors")
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, "--n", "2", *CPU)
    assert code == 0, err
    assert "finished an interrupted --overwrite: removed" in err
    assert not (trained_run / ".replaced").exists()


def test_the_demos_own_overwrite_is_not_taken_for_an_interrupted_one(trained_run) -> None:
    """`vqgen demo --overwrite` sets the old run aside, then trains inside that guard with the
    verbs' own: theirs must leave the demo's live .replaced alone (a second `make demo`
    failed so: the inner verb put the old run back, the demo's cleanup then found nothing)."""
    before, run = models_of(trained_run), RunDir(trained_run)
    demo = overwrite.replacing(run, "vqvae", resume=False, overwrite=True, resumable=False)
    with demo, overwrite.replacing(run, "vqvae", resume=False, overwrite=True):
        assert (trained_run / ".replaced" / "vqvae.json").is_file()
        assert not (trained_run / "vqvae.json").exists()
    assert models_of(trained_run) == before  # nothing saved: all put back, byte for byte
    assert not (trained_run / ".replaced").exists()


def test_a_full_disk_during_overwrite_keeps_the_old_run(trained_run, capsys, monkeypatch):
    before = models_of(trained_run)

    def disk_full(*args, **kwargs):
        raise OutputError("cannot write train_state-vqvae.safetensors: the disk is full")

    monkeypatch.setattr(checkpoint, "save_train_state", disk_full)
    args = ["--run", trained_run, "--overwrite", "--max-steps", "2", *CPU]
    code, _, err = run_cli(capsys, "train-vqvae", *args)
    assert code == 1 and "the disk is full" in err.strip().splitlines()[-1], err
    assert "Traceback" not in err
    assert models_of(trained_run) == before


# -- evaluate's outputs ---------------------------------------------------------------------


def test_evaluate_never_writes_over_a_run_file(trained_run, capsys) -> None:
    before = snapshot(trained_run)
    for target in ("vqvae.json", "prior.json", "prior-last.json"):
        args = ["--run", trained_run, "--n-samples", "2", "--out", trained_run / target]
        code, _, err = run_cli(capsys, "evaluate", *args, *CPU)
        assert_one_line_error(code, err, 2, target, "not a report that `vqgen evaluate` wrote")
    assert snapshot(trained_run) == before


@pytest.mark.parametrize("theirs", ["notes.json", "notes.md", "notes-figures/plan.png"])
def test_evaluate_never_writes_over_files_of_yours(trained_run, tmp_path, capsys, theirs):
    (tmp_path / theirs).parent.mkdir(exist_ok=True)
    (tmp_path / theirs).write_text("mine")
    args = ["--run", trained_run, "--n-samples", "2", "--out", tmp_path / "notes.json", *CPU]
    code, _, err = run_cli(capsys, "evaluate", *args)
    assert_one_line_error(code, err, 2, Path(theirs).name, "choose another --out")
    assert (tmp_path / theirs).read_text() == "mine"


@pytest.mark.slow
def test_evaluate_replaces_its_own_report_elsewhere(trained_run, tmp_path, capsys) -> None:
    args = ["--run", trained_run, "--n-samples", "2", "--out", tmp_path / "notes.json", *CPU]
    assert run_cli(capsys, "evaluate", *args)[0] == 0
    code, _, err = run_cli(capsys, "evaluate", *args, "--seed", "1")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "notes-figures").iterdir())[0].startswith("eval_")


@pytest.mark.slow
def test_an_interrupted_evaluate_leaves_the_last_report_and_its_figures(
    trained_run, capsys, monkeypatch
) -> None:
    from vqgen import evaluate_realism

    assert run_cli(capsys, "evaluate", "--run", trained_run, "--n-samples", "2", *CPU)[0] == 0
    before = snapshot(trained_run)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_realism, "realism_report", interrupted)
    monkeypatch.setattr("vqgen.evaluate.realism_report", interrupted)
    args = ["--run", trained_run, "--split", "train", "--n-samples", "2", *CPU]
    code, _, err = run_cli(capsys, "evaluate", *args)
    assert code == 130, err
    assert snapshot(trained_run) == before  # report.json still the test split's, figures too
    assert json.loads((trained_run / "report.json").read_text())["split"] == "test"
    assert not list(trained_run.glob(".figures.new-*"))


# -- data that moved, and a folder of several datasets --


def test_moved_data_of_another_layout_is_refused(trained_run, tmp_path, capsys) -> None:
    oasis = make_oasis(tmp_path, size=32)
    args = ["--run", trained_run, "--data", oasis, "--n-samples", "2", *CPU]
    code, _, err = run_cli(capsys, "evaluate", *args)
    assert_one_line_error(code, err, 2, "holds oasis data", "trained on adni data", "vqvae.json")


def test_a_folder_of_two_datasets_is_refused_naming_them(tmp_path, capsys) -> None:
    make_oasis(tmp_path / "a", size=32)
    make_oasis(tmp_path / "b", size=32)
    for parent in (tmp_path / "a", tmp_path / "b"):  # both trees side by side in one folder
        shutil.move(parent / "keras_png_slices_data", tmp_path / f"oasis-{parent.name}")
    code, _, err = run_cli(capsys, "data", tmp_path, "--size", "32")
    assert_one_line_error(code, err, 2, "holds several datasets", "oasis-a", "oasis-b")
