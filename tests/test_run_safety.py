"""A run is never lost or mixed up: one writer per run directory, no silent replacement, no
non-finite checkpoint, one-line errors on unusable paths, resumable budget-stopped runs, and
output that reads well in a log file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures import assert_one_line_error, make_folder, make_nifti, run_cli
from tiny import (
    CPU,
    CPU_DEVICE,
    PRIOR_2X8,
    VQVAE_32_DEFAULT_CODEBOOK,
    blobs,
    interrupt_at,
    make_stage,
    snapshot,
    train_cfg,
    vqvae_step,
)

from vqgen import checkpoint, fileio
from vqgen.api import load_data
from vqgen.data import DataWarning
from vqgen.errors import DataError, Interrupted, TrainingError
from vqgen.rundir import RunDir
from vqgen.train import fit

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power

TINY = [*VQVAE_32_DEFAULT_CODEBOOK, "--batch-size", "4", *CPU]
TINY_PRIOR = [*PRIOR_2X8, "--batch-size", "4", *CPU]


@pytest.fixture
def trained(trained_run: Path, tiny_mni152) -> Path:
    """A finished tiny run (a copy of the session's); the shrunken mni152 for training anew."""
    return trained_run


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process that holds the run's lock until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from vqgen import rundir
        with rundir.RunDir(Path({str(run)!r})).lock("train-vqvae"):
            print("held", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# 1. two writers on one run directory -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["train-vqvae", "--resume", *CPU],
        ["train-prior", "--overwrite", *CPU],
        ["sample", "--n", "2", *CPU],
        ["evaluate", "--n-samples", "2", *CPU],
        ["demo", "--overwrite", *CPU],
    ],
    ids=lambda args: args[0],
)
def test_a_second_writer_is_refused_naming_the_holder(trained: Path, capsys, args) -> None:
    holder = hold_lock(trained)
    try:
        before = snapshot(trained)
        code, _, err = run_cli(capsys, args[0], "--run", trained, *args[1:])
        line = assert_one_line_error(code, err, 1, str(trained), "in use by `vqgen train-vqvae`")
        assert f"pid {holder.pid}" in line
        assert snapshot(trained) == before  # the first writer's files are intact
    finally:
        holder.kill()
        holder.wait()
    # once the holder is gone, the lock is free again (and its death is said)
    code, _, err = run_cli(capsys, "sample", "--run", trained, "--n", "2", *CPU)
    assert code == 0, err
    assert "took over the lock" in err


def test_the_lock_never_follows_a_link(trained: Path, tmp_path, capsys) -> None:
    """A .vqgen.lock that is a symbolic link is refused in one line: its target is neither
    truncated nor shown as the holder."""
    target = tmp_path / "precious.txt"
    target.write_text("my notes\n")
    (trained / ".vqgen.lock").unlink(missing_ok=True)
    (trained / ".vqgen.lock").symlink_to(target)
    before = {**snapshot(tmp_path / "run"), "target": fileio.sha256(target)}
    code, _, err = run_cli(capsys, "sample", "--run", trained, "--n", "2", *CPU)
    assert_one_line_error(code, err, 2, ".vqgen.lock", "symbolic link", "remove it")
    assert "my notes" not in err
    assert {**snapshot(tmp_path / "run"), "target": fileio.sha256(target)} == before
    (trained / ".vqgen.lock").unlink()
    (trained / ".vqgen.lock").mkdir()
    code, _, err = run_cli(capsys, "sample", "--run", trained, "--n", "2", *CPU)
    assert_one_line_error(code, err, 2, ".vqgen.lock", "is a folder", "remove it")


def test_a_failed_command_leaves_no_run_folder_behind(tmp_path, capsys) -> None:
    few = make_folder(tmp_path, n=2)
    run = tmp_path / "new-run"
    code, _, err = run_cli(capsys, "train-vqvae", "--run", run, "--data", few, *TINY)
    assert code == 2, err
    assert not run.exists()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    for verb in ("train-vqvae", "sample"):
        code, _, err = run_cli(capsys, verb, "--run", link, *CPU)
        assert_one_line_error(code, err, 2, str(link), "a link to", "does not exist")


# 2. a diverging run keeps only finite checkpoints ------------------------------------------------


@pytest.mark.slow
def test_divergence_leaves_only_finite_tensors_and_a_true_message(tmp_path, tiny_mni152, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train-vqvae", "--run", run, "--lr", "30", "--max-steps", "30", *TINY
    )
    settings, err = err.split("\n", 1)  # the first line says what it trains with
    assert settings.startswith("vqvae: batch 4, lr 30, ")
    line = assert_one_line_error(code, err, 1, "became", "try a lower --lr")
    saved = sorted(run.glob("*.safetensors"))
    assert ("nothing was saved" in line) == (not saved)
    for path in saved:
        for key, tensor in fileio.load_tensors(path).items():
            if tensor.is_floating_point():
                assert tensor.isfinite().all(), f"{path.name}: {key}"


@pytest.mark.slow
def test_non_finite_weights_are_never_saved(tmp_path) -> None:
    """Weights that turn NaN while the loss stays finite stop the run at the next save, and the
    resume point is the last good one."""
    calls = {"n": 0}

    def poison_weights(model, batch, step):
        loss = vqvae_step(model, batch, step)
        calls["n"] += 1
        if calls["n"] == 10:  # the last step of epoch 2 (5-step epochs), after its loss
            model.decoder.net[-1].weight.data.fill_(float("nan"))
        return loss

    stage = make_stage(tmp_path, blobs(20), blobs(8, seed=1), poison_weights)
    expected = r"vqvae weights became non-finite at step 10; the last good checkpoint \(step 5\)"
    with pytest.raises(TrainingError, match=expected):
        fit(stage, train_cfg(), RunDir(tmp_path), CPU_DEVICE)
    state = fileio.load_tensors(tmp_path / "train_state-vqvae.safetensors")
    assert all(t.isfinite().all() for t in state.values() if t.is_floating_point())
    assert fileio.load_tensor_meta(tmp_path / "train_state-vqvae.safetensors")["step"] == 5


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_options_are_refused(capsys, tmp_path, value) -> None:
    code, _, err = run_cli(capsys, "train-vqvae", "--run", tmp_path / "r", "--lr", value)
    assert_one_line_error(code, err, 2, "--lr", "finite")


# 3. no silent replacement ------------------------------------------------------------------------


@pytest.mark.slow
def test_training_into_a_finished_run_needs_resume_or_overwrite(trained: Path, capsys) -> None:
    before = snapshot(trained)
    for verb, extra in (("train-vqvae", TINY), ("train-prior", TINY_PRIOR)):
        code, _, err = run_cli(capsys, verb, "--run", trained, "--max-steps", "2", *extra)
        assert_one_line_error(code, err, 2, str(trained), "--resume", "--overwrite")
    assert snapshot(trained) == before
    code, _, err = run_cli(
        capsys, "train-vqvae", "--run", trained, "--max-steps", "2", "--overwrite", *TINY
    )
    assert code == 0, err
    assert "--overwrite: removed" in err and "prior.json" in err
    assert not (trained / "prior.json").exists()  # it was trained on the old VQ-VAE's codes
    assert checkpoint.read_meta(RunDir(trained), "vqvae")["step"] == 2


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        pytest.param(  # diverges at once: it trains
            ["train-vqvae", "--lr", "30", "--max-steps", "5", *TINY], 1, marks=pytest.mark.slow
        ),
        (["train-vqvae", "--data", "FEW", "--max-steps", "5", *TINY], 2),  # too few images
    ],
    ids=["diverges", "too-few-images"],
)
def test_an_overwrite_that_fails_before_saving_keeps_everything(
    trained: Path, tmp_path, capsys, args, exit_code
) -> None:
    """--overwrite sets the old models aside until the new training saves: a command that
    fails first leaves the run as it was (the VQ-VAE, the prior, the code grids)."""
    few = make_folder(tmp_path, n=2)
    args = [str(few) if a == "FEW" else a for a in args]
    before = snapshot(trained)
    code, _, err = run_cli(capsys, *args[:1], "--run", trained, "--overwrite", *args[1:])
    assert code == exit_code, err
    assert "Traceback" not in err
    assert snapshot(trained) == before
    assert not (trained / ".replaced").exists()


@pytest.mark.slow
def test_a_prior_overwrite_refused_by_the_data_keeps_the_prior(tmp_path, tiny_mni152, capsys):
    """`train-prior --overwrite --condition label` on mni152, which has no labels, is refused
    after the prior was set aside: the prior comes back."""
    run = tmp_path / "run"
    assert run_cli(capsys, "train-vqvae", "--run", run, "--max-steps", "2", *TINY)[0] == 0
    assert run_cli(capsys, "train-prior", "--run", run, "--max-steps", "2", *TINY_PRIOR)[0] == 0
    before = snapshot(run)
    args = ["--run", run, "--overwrite", "--condition", "label", "--max-steps", "2", *TINY_PRIOR]
    code, _, err = run_cli(capsys, "train-prior", *args)
    assert_one_line_error(code, err, 2, "--condition label")
    assert snapshot(run) == before


def interrupted_vqvae_with_prior(run: Path, capsys) -> None:
    """A VQ-VAE stopped by Ctrl-C half way (its train state says 2 of 4 steps) with a prior
    trained on its codes: `--resume` would go on training it."""
    assert run_cli(capsys, "train-vqvae", "--run", run, "--max-steps", "4", *TINY)[0] == 0
    assert run_cli(capsys, "train-prior", "--run", run, "--max-steps", "2", *TINY_PRIOR)[0] == 0
    state = run / "train_state-vqvae.safetensors"
    meta = fileio.load_tensor_meta(state)
    meta.update(step=2, skip=2, total=4)  # where a Ctrl-C at step 2 leaves it
    fileio.save_tensors(state, fileio.load_tensors(state), meta)
    for name in ("vqvae.json", "vqvae-last.json"):
        fileio.write_json(run / name, {**json.loads((run / name).read_text()), "step": 2})


@pytest.mark.slow
def test_resuming_a_vqvae_under_its_prior_is_refused_or_needs_overwrite(
    tmp_path, tiny_mni152, capsys
) -> None:
    """`train-vqvae --resume` would change the VQ-VAE a prior was trained on: refused in one
    line that says what --overwrite removes, with every file as it was; with --overwrite the
    prior and codes go once the VQ-VAE has saved."""
    run = tmp_path / "run"
    interrupted_vqvae_with_prior(run, capsys)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "train-vqvae", "--run", run, "--resume", *CPU)
    assert_one_line_error(code, err, 2, str(run), "prior.json", "--overwrite")
    assert snapshot(run) == before
    code, _, err = run_cli(capsys, "train-vqvae", "--run", run, "--resume", "--overwrite", *CPU)
    assert code == 0, err
    assert "--overwrite: removed" in err and "prior.json" in err
    assert not (run / "prior.json").exists() and not (run / "codes").exists()
    assert checkpoint.read_meta(RunDir(run), "vqvae", last=True)["step"] == 4


def test_resuming_a_finished_vqvae_under_its_prior_changes_nothing(trained: Path, capsys):
    before = snapshot(trained)
    args = ["--resume", "--overwrite", *CPU]
    code, _, err = run_cli(capsys, "train-vqvae", "--run", trained, *args)
    assert code == 0, err
    assert "already complete" in err and "removed" not in err
    assert {k: v for k, v in snapshot(trained).items() if k != ".vqgen.lock"} == {
        k: v for k, v in before.items() if k != ".vqgen.lock"
    }


def test_a_refused_prior_resume_does_no_work_first(trained: Path, capsys) -> None:
    """A prior of another VQ-VAE is refused before the data is encoded again into codes/, with
    advice that works."""
    shutil.rmtree(trained / "codes")
    meta = json.loads((trained / "prior-last.json").read_text())
    fileio.write_json(trained / "prior-last.json", {**meta, "vqvae_sha256": "0" * 64})
    before = snapshot(trained)
    code, _, err = run_cli(capsys, "train-prior", "--run", trained, "--resume", *CPU)
    assert_one_line_error(code, err, 1, "another VQ-VAE", "--overwrite")
    assert snapshot(trained) == before and not (trained / "codes").exists()
    fileio.write_json(trained / "prior.json", {**meta, "vqvae_sha256": "0" * 64})
    code, _, err = run_cli(capsys, "sample", "--run", trained, *CPU)
    assert_one_line_error(code, err, 1, "another VQ-VAE", "train-prior --overwrite")


# 4. unusable paths: one line, nothing created ----------------------------------------------------


def test_run_paths_in_the_way_are_one_line(tmp_path, capsys) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    code, _, err = run_cli(capsys, "train-vqvae", "--run", afile, *TINY)
    assert_one_line_error(code, err, 2, str(afile), "is a file")
    code, _, err = run_cli(capsys, "train-vqvae", "--run", afile / "run", *TINY)
    assert_one_line_error(code, err, 2, str(afile / "run"), "a file is in the way")


@pytest.fixture
def read_only_run(trained: Path, read_only) -> Path:
    """The trained run behind a read-only bind mount."""
    return read_only(trained)


@pytest.mark.parametrize(
    "args",
    [
        ["train-vqvae", "--resume", *CPU],
        ["train-prior", "--overwrite", *CPU],
        ["sample", *CPU],
        ["evaluate", *CPU],
        ["demo", "--overwrite", *CPU],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_read_only_run_is_one_line(read_only_run: Path, capsys, args) -> None:
    code, _, err = run_cli(capsys, args[0], "--run", read_only_run, *args[1:])
    assert_one_line_error(code, err, 2, str(read_only_run), "read-only")


def test_a_read_only_run_is_sampled_into_a_folder_elsewhere(read_only_run, tmp_path, capsys):
    args = ["--out", tmp_path / "mine", "--n", "2", *CPU]
    code, _, err = run_cli(capsys, "sample", "--run", read_only_run, *args)
    assert code == 0, err
    assert (tmp_path / "mine" / "grid.png").is_file()


def test_preview_paths_are_checked_and_no_folder_is_made(tmp_path, capsys, tiny_mni152) -> None:
    code, _, err = run_cli(capsys, "data", "mni152", "--preview", tmp_path)
    assert_one_line_error(code, err, 2, "--preview", "is a folder")
    missing = tmp_path / "no" / "such" / "x.png"
    code, _, err = run_cli(capsys, "data", "mni152", "--preview", missing)
    assert_one_line_error(code, err, 2, "--preview", "does not exist")
    assert not (tmp_path / "no").exists()


# 5. budget-stopped runs resume to their plan -----------------------------------------------------


@pytest.mark.slow
def test_a_budget_stopped_run_resumes_to_its_planned_steps(tmp_path) -> None:
    train_set, val_set = blobs(20), blobs(8, seed=1)  # 5 steps an epoch, 3 epochs: 15 steps
    stage = make_stage(tmp_path, train_set, val_set)
    first = fit(
        stage, train_cfg(max_minutes=1e-6), RunDir(tmp_path), CPU_DEVICE
    )  # out of time at once
    assert first.step < 15
    resumed = fit(
        make_stage(tmp_path, train_set, val_set), train_cfg(), RunDir(tmp_path), CPU_DEVICE, True
    )
    assert resumed.step == 15
    with pytest.warns(UserWarning, match="already complete"):
        again = fit(
            make_stage(tmp_path, train_set, val_set),
            train_cfg(),
            RunDir(tmp_path),
            CPU_DEVICE,
            True,
        )
    assert again.step == 15


@pytest.mark.slow
def test_a_time_limited_run_resumes_to_the_steps_its_budget_fitted(tmp_path, monkeypatch) -> None:
    """A run limited by --max-minutes alone continues to the plan its first budget fitted."""
    from vqgen import schedule

    monkeypatch.setattr(
        schedule.TimeBudget, "fitted_total", lambda self, step: 12 if step == 4 else None
    )
    cfg = train_cfg(epochs=None, max_minutes=10.0)
    stage = make_stage(tmp_path, blobs(20), blobs(8, seed=1), interrupt_at(9))
    with pytest.raises(Interrupted):
        fit(stage, cfg, RunDir(tmp_path), CPU_DEVICE)
    resumed = fit(
        make_stage(tmp_path, blobs(20), blobs(8, seed=1)), cfg, RunDir(tmp_path), CPU_DEVICE, True
    )
    assert resumed.step == 12


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "max-minutes"])
def test_plain_resume_continues_a_time_limited_run(tmp_path, monkeypatch, stop) -> None:
    """`--resume` alone (the CLI's default settings: no --max-minutes) continues a run limited
    by --max-minutes alone to the steps its budget fitted, as docs/cli.md says."""
    from vqgen import schedule
    from vqgen.config import VQVAE_TRAINING, with_options

    monkeypatch.setattr(
        schedule.TimeBudget, "fitted_total", lambda self, step: 12 if step == 4 else None
    )
    if stop == "max-minutes":  # the budget runs out at step 7 (of the 12 it fitted)
        calls = iter(range(100))
        monkeypatch.setattr(schedule.TimeBudget, "spent", lambda self: next(calls) >= 6)
    step = interrupt_at(9) if stop == "ctrl-c" else vqvae_step
    stage = make_stage(tmp_path, blobs(20), blobs(8, seed=1), step)
    cfg = train_cfg(epochs=None, max_minutes=10.0)
    with contextlib.suppress(Interrupted):
        assert fit(stage, cfg, RunDir(tmp_path), CPU_DEVICE).step == 7
    monkeypatch.undo()  # the resumed run has time enough
    plain = replace(train_cfg(), **vars(with_options(VQVAE_TRAINING, device="cpu")))
    resumed = fit(
        make_stage(tmp_path, blobs(20), blobs(8, seed=1)), plain, RunDir(tmp_path), CPU_DEVICE, True
    )
    assert resumed.step == 12


def test_resume_names_the_options_it_ignores(trained: Path, capsys) -> None:
    args = ["--resume", "--size", "64", "--max-steps", "99", "--device", "cpu"]
    code, _, err = run_cli(capsys, "train-vqvae", "--run", trained, *args)
    assert code == 0, err
    assert "ignoring --size, --max-steps" in err
    assert "already complete" in err
    assert "--device" not in err.split("ignoring")[1].split("\n")[0]


# 6. samples replace only their own earlier files -------------------------------------------------


def test_sample_replaces_its_own_earlier_files_only(trained: Path, capsys) -> None:
    out = trained / "samples"
    assert run_cli(capsys, "sample", "--run", trained, "--n", "6", "--seed", "1", *CPU)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "sample", "--run", trained, "--n", "2", "--seed", "2", *CPU)
    assert code == 0, err
    assert "removed 7 earlier sample file(s)" in err  # 6 samples and the grid
    names = sorted(p.name for p in out.iterdir())
    manifest = ".vqgen-samples.json"  # what it wrote, for the next `sample` to replace
    assert names == [manifest, "grid.png", "notes.txt", "sample_0000.png", "sample_0001.png"]


def test_sample_into_a_folder_of_the_users_never_deletes_their_files(
    trained: Path, tmp_path, capsys
) -> None:
    """In an --out folder, `sample` removes only what its manifest says it wrote there, and
    refuses to write over a file of the user's."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "sample_0099.png").write_bytes(b"my own slice")
    args = ["sample", "--run", trained, "--out", out, *CPU]
    assert run_cli(capsys, *args, "--n", "3")[0] == 0
    code, _, err = run_cli(capsys, *args, "--n", "2")
    assert code == 0, err
    assert "removed 4 earlier sample file(s)" in err  # its 3 samples and its grid
    names = sorted(p.name for p in out.iterdir())
    ours = ["grid.png", "sample_0000.png", "sample_0001.png"]
    assert names == [".vqgen-samples.json", *ours, "sample_0099.png"]
    assert (out / "sample_0099.png").read_bytes() == b"my own slice"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "grid.png").write_bytes(b"my own grid")
    code, _, err = run_cli(capsys, "sample", "--run", trained, "--out", theirs, *CPU)
    assert_one_line_error(code, err, 2, str(theirs), "grid.png", "did not write")
    assert sorted(p.name for p in theirs.iterdir()) == ["grid.png"]
    assert (theirs / "grid.png").read_bytes() == b"my own grid"


# 7. unreadable files are dropped before the split ------------------------------------------------


def test_an_unreadable_image_never_empties_a_split(tmp_path) -> None:
    root = make_folder(tmp_path, n=12)
    (root / "a" / "zero.jpg").write_bytes(b"")
    for split in ("train", "validate", "test"):
        with pytest.warns(DataWarning, match="skipped 1 unreadable images, first: .*zero.jpg"):
            assert len(load_data(root, split, size=32)) > 0


def test_a_4d_volume_among_good_ones_is_skipped_or_refused_with_strict(tmp_path) -> None:
    root = make_nifti(tmp_path, n=4)
    bad = root / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 6, 3), np.float32), np.eye(4)), bad)
    with pytest.warns(DataWarning, match=f"skipped 1 unusable volumes .*, first: {bad}"):
        assert len(load_data(root, "train", size=32)) > 0
    with pytest.raises(DataError, match=r"fmri\.nii\.gz: unusable volume"):
        load_data(root, "train", size=32, strict=True)


# 8. output for logs and schedulers ---------------------------------------------------------------


@pytest.mark.slow
def test_output_to_a_log_file_is_plain_lines(tmp_path) -> None:
    """With stdout and stderr not a terminal: a plain line every 10 steps and per epoch, never
    wrapped, epochs counted from 1, paths printed as given, and JSON lines without NaN."""
    data = make_folder(tmp_path, n=40)  # 32 train images: 8 steps an epoch at batch 4
    run = tmp_path / "run[bold]"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQGEN_CACHE": str(tmp_path / "cache")}
    args = ["train-vqvae", "--data", data, "--run", run, "--max-steps", "25", *TINY]
    proc = subprocess.run(
        [sys.executable, "-m", "vqgen", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    steps = [line for line in lines if line.startswith("vqvae epoch") and "ETA" in line]
    assert [line.split()[4] for line in steps] == ["10/25", "20/25"], proc.stderr
    assert all("slices/s" in line and " elapsed, ETA " in line for line in steps), proc.stderr
    epochs = [line for line in lines if line.startswith("vqvae epoch") and "val_ssim" in line]
    assert [line.split()[2] for line in epochs] == ["1", "2", "3", "4"]  # the 4th is partial
    assert all(line.endswith(" slices/s") for line in epochs)  # each with its epoch's rate
    assert all(line == line.rstrip() and len(line) > 0 for line in lines)
    assert str(run) in proc.stdout  # the path as given, not read as rich markup
    records = (run / "metrics-vqvae.jsonl").read_text()
    assert "NaN" not in records and "Infinity" not in records


def test_warnings_are_plain_lines(tmp_path, capsys) -> None:
    root = make_folder(tmp_path, n=12)
    (root / "a" / "zero.jpg").write_bytes(b"")
    code, _, err = run_cli(capsys, "data", root)
    assert code == 0, err
    assert err.startswith("warning: skipped 1 unreadable images")
    assert "DataWarning" not in err and ".py:" not in err


def test_json_holds_null_where_a_value_is_not_finite(tmp_path) -> None:
    fileio.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None]}


@pytest.mark.slow
def test_a_closed_output_pipe_does_not_stop_training(tmp_path) -> None:
    """`train-vqvae ... 2>&1 | head -1`: once the reader has gone, training goes on quietly to
    its end and saves, and exits 0 without a traceback."""
    data = make_folder(tmp_path, n=40)  # 32 train images: 8 steps an epoch at batch 4
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQGEN_CACHE": str(tmp_path / "cache")}
    args = ["train-vqvae", "--data", data, "--run", run, "--max-steps", "30", *TINY]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vqgen", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout.readline()  # `head -1`, then the pipe closes
    proc.stdout.close()
    assert proc.wait(timeout=600) == 0
    assert checkpoint.read_meta(RunDir(run), "vqvae", last=True)["step"] == 30


@pytest.mark.slow
def test_sigterm_outside_training_is_one_line(trained: Path, tmp_path) -> None:
    """A scheduler's SIGTERM to `evaluate` stops it as Ctrl-C does: one line, exit 130."""
    code = textwrap.dedent(f"""
        import os, signal
        import vqgen.loaded
        from vqgen.cli import main
        def stop(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
        vqgen.loaded.load_data = stop
        main(["evaluate", "--run", {str(trained)!r}, "--n-samples", "2", "--device", "cpu"])
    """)
    env = {**os.environ, "VQGEN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert_one_line_error(proc.returncode, proc.stderr, 130, "evaluate interrupted")


# 9. a second Ctrl-C ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_ctrl_c_says_what_was_kept(tmp_path) -> None:
    calls = {"n": 0}

    def twice(model, batch, step):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # before the step ends
        return vqvae_step(model, batch, step)

    stage = make_stage(tmp_path, blobs(20), blobs(8, seed=1), twice)
    with pytest.raises(
        Interrupted, match=r"second Ctrl-C at step 6; the last good checkpoint \(step 5\)"
    ):
        fit(stage, train_cfg(), RunDir(tmp_path), CPU_DEVICE)


# 10. evaluate ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_elsewhere_leaves_the_run_as_it_was(trained: Path, tmp_path, capsys) -> None:
    """`evaluate --out elsewhere.json` draws its figures beside that report, not into the run's
    figures/, where they would sit beside the run's own report."""
    before = snapshot(trained)
    out = tmp_path / "elsewhere.json"
    code, stdout, err = run_cli(
        capsys, "evaluate", "--run", trained, "--out", out, "--n-samples", "2", *CPU
    )
    assert code == 0, err
    assert snapshot(trained) == before
    assert (tmp_path / "elsewhere-figures" / "eval_reconstructions.png").is_file()
    assert str(tmp_path / "elsewhere-figures") in stdout


@pytest.mark.slow
def test_evaluate_on_the_train_split_warns_once(trained: Path, capsys) -> None:
    args = ["--split", "train", "--n-samples", "2", *CPU]
    code, _, err = run_cli(capsys, "evaluate", "--run", trained, *args)
    assert code == 0, err
    assert err.count("warning: --split train") == 1
    assert "compares the train split with itself" in err
