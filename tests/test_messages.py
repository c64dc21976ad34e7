"""What a user reads: each warning once, advice that works, paths described as they are, a word
where a command would otherwise be silent, and help that says what each option does."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import assert_one_line_error, make_folder, make_oasis, run_cli
from PIL import Image
from tiny import CPU, PRIOR_2X8, VQVAE_32_DEFAULT_CODEBOOK


def test_a_data_warning_is_shown_once(tmp_path, capsys) -> None:
    root = make_folder(tmp_path, n=12)
    (root / "a" / "zero.jpg").write_bytes(b"")
    oasis = make_oasis(tmp_path, {"train": 2, "validate": 1, "test": 1}, slices=2, size=32)
    train, test = oasis / "keras_png_slices_train", oasis / "keras_png_slices_test"
    shutil.copy(train / "case_001_slice_0.nii.png", test / "case_001_slice_5.nii.png")
    for source, needle in ((root, "skipped 1 unreadable"), (oasis, "OASIS train and test")):
        code, _, err = run_cli(capsys, "data", source)
        assert code == 0, err
        assert err.count("warning:") == 1 and needle in err, err


# -- long silences ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("quick_c2st")
def test_evaluate_and_encoding_say_when_they_start_and_finish(trained_run: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--run", trained_run, "--n-samples", "2", *CPU)
    assert code == 0, err
    assert "evaluate: scoring" in err and "evaluate: scored in" in err
    # into a log (not a terminal), a line as each phase ends, with its time
    for phase in ("drawing 2 samples", "the samples' nearest real slices", "the feature net"):
        assert re.search(rf"evaluate: {phase} \(\d+\.\d s\)", err), err
    shutil.rmtree(trained_run / "codes")
    args = ["--run", trained_run, "--overwrite", "--max-steps", "1", "--layers", "2", *CPU]
    code, _, err = run_cli(capsys, "train-prior", *args, "--channels", "8", "--augment", "1")
    assert code == 0, err
    for needle in ("encoding the train split", "encoded the validate split", "--augment: encoded"):
        assert needle in err, err


def test_a_large_augment_warns_of_its_size() -> None:
    from vqgen.train_prior import announce_copies

    with pytest.warns(UserWarning, match=r"--augment 1000: 1152000 more code grids, 2\.4 GB"):
        announce_copies(1000, 1152, 32 * 32)


# -- advice that works -----------------------------------------------------------------------------

TINY = [*VQVAE_32_DEFAULT_CODEBOOK, "--batch-size", "4", "--max-steps", "2", *CPU]


def test_the_demo_on_a_trained_run_advises_only_what_it_has(trained_run, capsys) -> None:
    code, _, err = run_cli(capsys, "demo", "--run", trained_run, *CPU)
    line = assert_one_line_error(code, err, 2, str(trained_run), "--overwrite")
    assert "--resume" not in line


def test_a_missing_train_state_advises_overwrite(trained_run, capsys) -> None:
    (trained_run / "train_state-vqvae.safetensors").unlink()
    code, _, err = run_cli(capsys, "train-vqvae", "--run", trained_run, "--resume", *CPU)
    line = assert_one_line_error(code, err, 2, "train_state-vqvae.safetensors", "--overwrite")
    assert "without --resume" not in line


def test_a_vqvae_stopped_before_it_validated_is_told_to_resume(trained_run, capsys) -> None:
    for name in ("vqvae.json", "vqvae.safetensors"):
        (trained_run / name).unlink()
    code, _, err = run_cli(capsys, "sample", "--run", trained_run, *CPU)
    line = assert_one_line_error(code, err, 2, "vqvae.json missing", "--resume")
    assert "first" not in line.split(";")[-1]  # not "run `vqgen train-vqvae` first"


@pytest.mark.slow
def test_a_run_killed_before_its_first_save_starts_again(tmp_path, tiny_mni152, capsys) -> None:
    """All it holds is the log of the steps before the kill: --resume says there is nothing to
    continue, and a fresh start, as advised, is not refused."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics-vqvae.jsonl").write_text('{"step": 10, "epoch": 0, "loss": 0.5}\n')
    code, _, err = run_cli(capsys, "train-vqvae", "--run", run, "--resume", *CPU)
    assert_one_line_error(code, err, 2, "no vqvae checkpoint to continue", "without --resume")
    code, _, err = run_cli(capsys, "train-vqvae", "--run", run, *TINY)
    assert code == 0, err


# -- paths described as they are -------------------------------------------------------------------


def test_preview_paths_are_described_as_they_are(tmp_path, capsys, tiny_mni152) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_cli(capsys, "data", "mni152", "--preview", afile / "x.png")
    assert_one_line_error(code, err, 2, str(afile), "is a file, not a folder")


def test_a_read_only_preview_names_the_preview(read_only, tmp_path, capsys, tiny_mni152) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    preview = read_only(empty) / "x.png"
    code, _, err = run_cli(capsys, "data", "mni152", "--preview", preview)
    line = assert_one_line_error(code, err, 2, f"--preview {preview}", "read-only")
    assert ".tmp" not in line


def test_a_kind_without_data_asks_for_data(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train-vqvae", "--kind", "adni", "--run", tmp_path / "r", *CPU)
    line = assert_one_line_error(code, err, 2, "--kind adni needs --data")
    assert str(tmp_path) not in line


def test_an_empty_run_is_refused(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for verb in ("train-vqvae", "sample", "evaluate"):
        code, _, err = run_cli(capsys, verb, "--run", "", *CPU)
        assert_one_line_error(code, err, 2, "--run is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("quick_c2st")
def test_a_moved_run_is_evaluated_with_data(trained_run, tmp_path, capsys) -> None:
    """The data path comes from vqvae.json: the error says so, and --data points elsewhere."""
    meta = json.loads((trained_run / "vqvae.json").read_text())
    moved = tmp_path / "moved" / "AD_NC"
    shutil.copytree(meta["data"]["source"], moved)
    meta["data"]["source"] = str(tmp_path / "gone")
    (trained_run / "vqvae.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "evaluate", "--run", trained_run, "--n-samples", "2", *CPU)
    assert_one_line_error(code, err, 2, str(tmp_path / "gone"), "vqvae.json", "--data")
    args = ["--data", moved, "--n-samples", "2", *CPU]
    code, _, err = run_cli(capsys, "evaluate", "--run", trained_run, *args)
    assert code == 0, err
    assert json.loads((trained_run / "report.json").read_text())["data"] == str(moved)


# -- a word where a command was silent -------------------------------------------------------------


@pytest.mark.slow
def test_sampling_options_that_do_nothing_or_leave_the_prior_warn(tmp_path, tiny_mni152, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train-vqvae", "--run", run, *TINY, "--codebook-size", "16")[0] == 0
    prior = [*PRIOR_2X8, "--condition", "slice"]
    assert run_cli(capsys, "train-prior", "--run", run, *prior, "--max-steps", "1", *CPU)[0] == 0
    for option, needle in (("--slice", "outside the levels"), ("--top-k", "changes nothing")):
        value = "0" if option == "--slice" else "16"
        out = ["--out", tmp_path / option.strip("-"), "--n", "2", *CPU]
        code, _, err = run_cli(capsys, "sample", "--run", run, option, value, *out)
        assert code == 0, err
        assert err.count("warning:") == 1 and needle in err, err


def test_data_of_black_slices_warns(tmp_path, capsys) -> None:
    folder = tmp_path / "black"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / f"s{i}.png")
    code, _, err = run_cli(capsys, "data", folder)
    assert code == 0, err
    assert err.count("warning:") == 3 and "train split" in err and "is black" in err


# -- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb", ["train-vqvae", "train-prior", "sample", "evaluate", "demo", "data"]
)
def test_help_shows_flags_without_a_type(verb: str, capsys) -> None:
    """A flag takes no value (`--resume true` is an error): --help must not show it one."""
    code, out, _ = run_cli(capsys, verb, "--help")
    assert code == 0
    typed = [line for line in out.splitlines() if "<bool>" in line]
    assert all("--help" in line for line in typed), typed


@pytest.mark.parametrize("verb", ["sample", "evaluate"])
def test_seed_of_sampling_verbs_says_what_it_seeds(verb: str, capsys) -> None:
    code, out, _ = run_cli(capsys, verb, "--help")
    seed = out[out.index("--seed") :].split("\n")[0]
    assert code == 0 and "samples" in seed and "weights" not in seed


def test_running_out_of_memory_is_one_line(capsys, monkeypatch) -> None:
    import vqgen.data.describe

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 74.5 GiB for an array")

    monkeypatch.setattr(vqgen.data.describe, "load_data", too_big)
    code, _, err = run_cli(capsys, "data", "mni152")
    assert_one_line_error(code, err, 1, "out of memory", "--size")


def test_undefined_figures_show_as_a_dash_not_nan() -> None:
    """All-black slices have no brain (brain SSIM undefined) and exact reconstructions (PSNR
    undefined): the report says '-' where report.json holds null or NaN."""
    from rich.console import Console

    from vqgen.report_text import render_markdown, report_table

    summary = {"mean": 1.0, "std": 0.0, "min": 1.0, "p5": 1.0, "frac_ge_0.6": 1.0}
    report = {
        "run": "r",
        "split": "test",
        "data": "black",
        "kind": "folder",
        "images": 2,
        "reconstruction": {
            "ssim": summary,
            "brain_ssim_mean": float("nan"),
            "psnr_mean": None,
            "mse_mean": 0.0,
            "codebook": {"fraction_used": 0.1, "perplexity": 1.0},
        },
        "realism": {"skipped": "too few slices"},
    }
    console = Console(width=100, record=True)
    console.print(report_table(report))
    for text in (render_markdown(report), console.export_text()):
        assert "nan" not in text.lower() and "None" not in text
