"""The command line: exit codes and one-line errors, and the four verbs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import assert_one_line_error, make_adni, make_oasis, run_cli
from tiny import CPU, PRIOR_3X16, VQVAE_32

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power


def test_missing_dataset_path_is_a_usage_error(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "data", missing)
    assert_one_line_error(code, err, 2, str(missing))


def test_size_not_divisible_by_downsampling(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "train-vqvae", "--run", tmp_path, "--size", "100", "--downsample", "8"
    )
    assert_one_line_error(code, err, 2, "--size 100", "--downsample 8")


def test_unknown_quantizer(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train-vqvae", "--run", tmp_path, "--quantizer", "magic")
    assert_one_line_error(code, err, 2, "--quantizer")


def test_sampling_from_a_missing_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "sample", "--run", tmp_path / "nope")
    assert_one_line_error(code, err, 2, str(tmp_path / "nope"), "does not exist")


def test_sampling_from_a_run_without_models(capsys, tmp_path):
    code, _, err = run_cli(capsys, "sample", "--run", tmp_path)
    assert_one_line_error(code, err, 2, "vqvae", "train-vqvae")


def test_evaluate_rejects_unknown_split(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--run", tmp_path, "--split", "holdout")
    assert_one_line_error(code, err, 2, "--split", "holdout")


def test_evaluate_rejects_a_negative_temperature(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--run", tmp_path, "--temperature", "-0.5")
    assert_one_line_error(code, err, 2, "--temperature", "-0.5")


def test_python_m_vqgen_is_the_same_program(capsys):
    """`python -m vqgen` answers as the CLI does (asked for its version: without torch, at once;
    its error contract is the slow test below)."""
    proc = subprocess.run(
        [sys.executable, "-m", "vqgen", "--version"], capture_output=True, text=True, timeout=120
    )
    code, out, _ = run_cli(capsys, "--version")
    assert proc.returncode == code == 0, proc.stderr
    assert proc.stdout == out and out.startswith("vqgen ")


@pytest.mark.slow
def test_console_entry_point_prints_one_line_and_exits_2(tmp_path):
    """`python -m vqgen` is the same program, with the same error contract."""
    proc = subprocess.run(
        [sys.executable, "-m", "vqgen", "data", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "missing") in proc.stderr


def test_help_and_version_answer_without_loading_torch():
    """`vqgen --help` is instant: the verbs import torch only when they run."""
    code = (
        "import sys\n"
        "from vqgen.cli import main\n"
        "for args in (['--help'], ['sample', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = python_says(code)
    assert "--top-k" in out  # sample --help lists it
    assert "vqgen 0.1.0" in out


@pytest.mark.slow
def test_sample_and_evaluate_import_no_training_code():
    code = (
        "import sys\n"
        "import vqgen.sample, vqgen.evaluate\n"
        "loaded = [m for m in ('vqgen.train', 'vqgen.train_vqvae', 'vqgen.train_prior', "
        "'vqgen.checkpointer') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    python_says(code)


def python_says(code: str) -> str:
    """Run `code` in a fresh interpreter; it must succeed. Returns what it printed."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


TINY_VQVAE = [*VQVAE_32, "--batch-size", "8", *CPU]
TINY_PRIOR = [*PRIOR_3X16, "--batch-size", "8", *CPU]


@pytest.mark.slow
def test_four_verbs_end_to_end(capsys, tmp_path):
    """train-vqvae -> train-prior -> sample -> evaluate through the CLI on an OASIS layout."""
    oasis_root = make_oasis(tmp_path, {"train": 4, "validate": 2, "test": 2}, slices=6, size=64)
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train-vqvae", "--data", oasis_root, "--run", run, "--epochs", "2", *TINY_VQVAE
    )
    assert code == 0, err
    assert "validate SSIM" in out
    code, out, err = run_cli(capsys, "train-prior", "--run", run, "--epochs", "2", *TINY_PRIOR)
    assert code == 0, err
    assert "bits/code" in out
    assert (run / "codes" / "train.safetensors").is_file()
    code, out, err = run_cli(capsys, "sample", "--run", run, "--n", "4", "--device", "cpu")
    assert code == 0, err
    assert len(list((run / "samples").glob("sample_*.png"))) == 4
    assert (run / "samples" / "grid.png").is_file()
    code, out, err = run_cli(
        capsys, "evaluate", "--run", run, "--n-samples", "8", "--device", "cpu"
    )
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    assert report["split"] == "test"
    assert report["images"] > 0
    assert {"reconstruction", "prior", "samples", "realism"} <= set(report)
    realism = report["realism"]  # each set beside the floor: real train slices
    sections = {"samples", "reconstructions", "floor", "reference", "outline"}
    assert set(realism) == sections  # no MS-SSIM at 32 px
    assert realism["outline"]["samples"]["n"] == realism["outline"]["floor"]["n"] == 8
    assert realism["reference"]["evaluation_subjects"] == 0  # a real dataset: the split alone
    for name in ("samples", "reconstructions", "floor"):
        for scale in ("full", "half"):
            assert 0 <= realism[name]["c2st"][scale]["accuracy"] <= 1
        assert {"kid", "fid", "precision", "recall", "sharpness"} <= set(realism[name])
    assert realism["reconstructions"]["c2st"]["paired"]
    assert "C2ST full scale" in out and "## Realism" in (run / "report.md").read_text()
    assert (run / "report.md").is_file()
    for figure in (
        "vqvae_curves",
        "vqvae_reconstructions",
        "prior_curves",
        "eval_reconstructions",
        "eval_ssim_hist",
        "eval_samples_nearest",
        "eval_spectrum",
        "eval_outline_worst",
    ):
        assert (run / "figures" / f"{figure}.png").is_file(), figure
    check_top_k_reaches_sample_and_evaluate(capsys, run)

    # a label the prior was not trained with is refused in one line
    code, _, err = run_cli(capsys, "sample", "--run", run, "--label", "AD")
    assert_one_line_error(code, err, 2, "--label AD")


def check_top_k_reaches_sample_and_evaluate(capsys, run: Path) -> None:
    """--top-k reaches the sampler of both verbs: with k = 1 the draw is the argmax, whatever
    the seed; evaluate says how it drew its samples."""
    grids = []
    for seed in ("1", "2"):
        args = ["--n", "2", "--top-k", "1", "--seed", seed, "--out", run / f"k1-{seed}"]
        code, _, err = run_cli(capsys, "sample", "--run", run, *args, "--device", "cpu")
        assert code == 0, err
        grids.append((run / f"k1-{seed}" / "grid.png").read_bytes())
    assert grids[0] == grids[1]

    drawn = []
    for seed in ("1", "2"):
        out = run / f"eval-k1-{seed}" / "report.json"
        args = ["--n-samples", "8", "--temperature", "0.5", "--top-k", "1", "--seed", seed]
        code, stdout, err = run_cli(
            capsys, "evaluate", "--run", run, *args, "--out", out, "--device", "cpu"
        )
        assert code == 0, err
        samples = json.loads(out.read_text())["samples"]
        assert (samples["temperature"], samples["top_k"]) == (0.5, 1)
        drawn.append((samples["nearest_real_ssim"], samples["diversity_pairwise_ssim"]))
        assert "at temperature 0.5, top-k 1" in out.with_suffix(".md").read_text()
    assert drawn[0] == drawn[1]
    assert "at temperature 0.5, top-k 1" in stdout


@pytest.mark.slow
def test_max_steps_alone_sets_the_length_of_the_run(capsys, tmp_path, tiny_mni152):
    """--max-steps without --epochs trains that many steps, however many epochs it takes."""
    run = tmp_path / "run"
    args = ["--data", "mni152", "--run", run, "--max-steps", "7", *VQVAE_32]
    code, out, err = run_cli(capsys, "train-vqvae", *args, "--batch-size", "4", "--device", "cpu")
    assert code == 0, err
    meta = json.loads((run / "vqvae-last.json").read_text())
    assert meta["step"] == 7 and meta["train"]["epochs"] is None  # 12 slices: 3 steps an epoch
    assert "7 steps" in out


def test_data_reports_adni_counts_labels_and_a_patient_split(capsys, tmp_path):
    root = make_adni(tmp_path, {"train": 10, "test": 2}, slices=2)
    preview = tmp_path / "preview.png"
    code, out, err = run_cli(capsys, "data", root, "--size", "32", "--preview", preview)
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    cells = {split: [c.strip() for c in row.split("│")[2:6]] for split, row in rows.items()}
    # 20 train patients of 2 slices: a seeded 10% of the patients (1 per class) validate
    assert cells["train"][:2] == ["36", "18"]
    assert cells["validate"][:2] == ["4", "2"]
    assert cells["test"][:3] == ["8", "4", "NC 4, AD 4"]
    assert "adni" in out
    assert preview.is_file() and preview.stat().st_size > 1000


def test_data_reports_oasis_counts(capsys, tmp_path):
    root = make_oasis(tmp_path, {"train": 3, "validate": 2, "test": 1}, slices=4, size=64)
    code, out, err = run_cli(capsys, "data", root, "--size", "32")
    assert code == 0, err
    rows = [
        [c.strip() for c in line.split("│")[1:4]]
        for line in out.splitlines()
        if line.count("│") > 5
    ]
    assert rows == [["train", "12", "3"], ["validate", "8", "2"], ["test", "4", "1"]]


@pytest.mark.slow
def test_a_label_prior_is_scored_for_realism_label_by_label(capsys, tmp_path):
    root = make_adni(tmp_path, {"train": 5, "test": 2}, slices=8)
    run = tmp_path / "run"
    args = ["--run", run, "--epochs", "1"]
    assert run_cli(capsys, "train-vqvae", "--data", root, *args, *TINY_VQVAE)[0] == 0
    assert run_cli(capsys, "train-prior", "--condition", "label", *args, *TINY_PRIOR)[0] == 0
    code, out, err = run_cli(
        capsys, "evaluate", "--run", run, "--n-samples", "16", "--device", "cpu"
    )
    assert code == 0, err
    per_label = json.loads((run / "report.json").read_text())["realism"]["per_label"]
    assert set(per_label) == {"NC", "AD"}  # 16 test slices of 2 patients each, 8 samples each
    for section in per_label.values():
        assert 0 <= section["samples"]["c2st"]["full"]["accuracy"] <= 1
        assert {"kid", "sharpness"} <= set(section["floor"])
    assert "### Label AD" in (run / "report.md").read_text()
    assert "label AD, C2ST" in out


@pytest.mark.slow
def test_samples_go_across_the_levels_the_slice_prior_was_trained_on(capsys, tmp_path, tiny_mni152):
    """mni152 slices lie between 0.15 and 0.9 of the brain's height: asked for a level below
    its train split's, a prior draws black slices, so sampling keeps to the trained range."""
    from vqgen import checkpoint, conditioning
    from vqgen.config import DataConfig, SampleConfig
    from vqgen.data import load_data
    from vqgen.rundir import RunDir

    run = tmp_path / "run"
    args = ["--run", run, "--max-steps", "3"]
    vqvae = ["--data", "mni152", *VQVAE_32, "--batch-size", "4", *CPU]
    assert run_cli(capsys, "train-vqvae", *args, *vqvae)[0] == 0
    assert run_cli(capsys, "train-prior", *args, "--condition", "slice", *TINY_PRIOR)[0] == 0
    positions = load_data(DataConfig(source="mni152"), "train", 32).positions
    prior, meta = checkpoint.load_prior(RunDir(run))
    low, high = meta["slice_range"]
    assert (low, high) == pytest.approx((float(positions.min()), float(positions.max())))
    assert low > 0.1  # the former fixed range started below the data
    cond = conditioning.for_sampling(prior.cfg, meta, SampleConfig(n=9))
    assert float(cond.min()) == pytest.approx(low) and float(cond.max()) == pytest.approx(high)


@pytest.mark.slow
def test_train_prior_keeps_the_moving_average_it_is_given_and_refuses_a_decay_of_one(
    capsys, trained_run: Path
):
    """The average is what prior.safetensors holds; the VQ-VAE (an EMA codebook) takes none."""
    import torch

    from vqgen import fileio
    from vqgen.config import DataConfig, TrainConfig, VQVAEConfig
    from vqgen.errors import UsageError
    from vqgen.train_vqvae import train_vqvae

    args = ["--run", trained_run, "--overwrite", "--max-steps", "2", "--layers", "2", *CPU]
    code, _, err = run_cli(capsys, "train-prior", *args, "--channels", "8", "--ema", "0.9")
    assert code == 0, err
    assert json.loads((trained_run / "prior.json").read_text())["train"]["ema"] == 0.9
    saved = fileio.load_tensors(trained_run / "prior-last.safetensors")
    state = fileio.load_tensors(trained_run / "train_state-prior.safetensors")
    assert any(not torch.equal(saved[k], state[f"model.weights.{k}"]) for k in saved)  # averaged
    code, _, err = run_cli(capsys, "train-prior", *args, "--ema", "1")
    assert_one_line_error(code, err, 2, "--ema must lie in [0, 1), got 1")
    with pytest.raises(UsageError, match=r"ema: .* for the prior"):
        train_vqvae(DataConfig(), VQVAEConfig(), TrainConfig(max_steps=1, ema=0.9), trained_run)
