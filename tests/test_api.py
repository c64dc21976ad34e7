"""The Python API as a user calls it: `vqgen.load_run(...)` and `vqgen.load_data(...)`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import run_cli
from PIL import Image
from tiny import CPU

import vqgen
from vqgen.errors import UsageError


@pytest.fixture(params=["one_level", "two_levels"])
def any_run(request: pytest.FixtureRequest) -> vqgen.Run:
    """The session's one-level run (with a label prior), or the two-level run, loaded."""
    if request.param == "one_level":
        return vqgen.load_run(request.getfixturevalue("trained_run"), device="cpu")
    return vqgen.load_run(request.getfixturevalue("two_level_template"), device="cpu")


def test_encode_decode_and_reconstruct_agree(any_run: vqgen.Run):
    x = any_run.data("test").images[:3]
    codes = any_run.encode(x)
    grids = any_run.vqvae.cfg.grids
    assert len(codes) == any_run.levels == len(grids)
    assert [c.shape for c in codes] == [(3, g, g) for g in grids]
    assert all(c.dtype == torch.long for c in codes)
    y = any_run.decode(codes)
    assert y.shape == x.shape == (3, 1, 32, 32) and y.device.type == "cpu"
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, any_run.reconstruct(x))


def test_a_one_level_run_decodes_a_single_tensor(trained_run: Path):
    run = vqgen.load_run(str(trained_run), device="cpu")
    codes = run.encode(run.data("test").images[:2])
    assert torch.equal(run.decode(codes[0]), run.decode(codes))


def test_sample_matches_the_cli(capsys, trained_run: Path):
    run = vqgen.load_run(trained_run, device="cpu")
    images = run.sample(4, temperature=0.8, seed=3)
    assert images.shape == (4, 1, 32, 32) and images.min() >= 0 and images.max() <= 1
    args = ["--run", trained_run, "--n", "4", "--temperature", "0.8", "--seed", "3", *CPU]
    code, _, err = run_cli(capsys, "sample", *args)
    assert code == 0, err
    for i, image in enumerate(images):
        png = np.asarray(Image.open(trained_run / "samples" / f"sample_{i:04d}.png"))
        assert np.array_equal(png, (image[0].numpy() * 255).round().astype(np.uint8))
    assert torch.equal(run.sample(4, temperature=0.8, seed=3), images)  # seeded, repeatable


def test_sample_takes_the_cli_conditions(trained_run: Path):
    run = vqgen.load_run(trained_run, device="cpu")
    assert "prior='label'" in repr(run)
    assert run.sample(2, label="AD", seed=1).shape == (2, 1, 32, 32)
    with pytest.raises(UsageError, match="--label XX is unknown"):
        run.sample(2, label="XX")
    with pytest.raises(UsageError, match="--slice"):
        run.sample(2, slice=0.5)
    with pytest.raises(UsageError, match="--n must be"):
        run.sample(0)


def test_a_run_without_a_prior_refuses_to_sample(two_level_template: Path):
    run = vqgen.load_run(two_level_template, device="cpu")
    assert run.prior is None and "prior=None" in repr(run)
    with pytest.raises(UsageError) as err:
        run.sample(2)
    assert "\n" not in str(err.value) and "vqgen train-prior" in str(err.value)


@pytest.mark.parametrize(
    "images, needle",
    [
        (torch.rand(2, 32, 32), "(N, 1, 32, 32)"),
        (torch.rand(2, 1, 16, 16), "(N, 1, 32, 32)"),
        (torch.rand(0, 1, 32, 32), "(N, 1, 32, 32)"),
        (torch.rand(2, 1, 32, 32) * 255, "[0, 1]"),
        (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "dtype"),
        (np.zeros((2, 1, 32, 32), np.float32), "torch.Tensor"),
    ],
)
def test_bad_images_are_one_line_usage_errors(trained_run: Path, images, needle: str):
    run = vqgen.load_run(trained_run, device="cpu")
    for method in (run.encode, run.reconstruct):
        with pytest.raises(UsageError) as err:
            method(images)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_codes_are_one_line_usage_errors(two_level_template: Path):
    run = vqgen.load_run(two_level_template, device="cpu")
    top, bottom = run.encode(run.data("test").images[:2])
    bad = {
        "a list of 2 grid(s)": bottom,
        "(N, 4, 4), (N, 16, 16)": [bottom, top],
        "integers": [top.float(), bottom],
        "[0, 16)": [top, bottom + 16],
        "same number N": [top, bottom[:1]],
    }
    for needle, codes in bad.items():
        with pytest.raises(UsageError) as err:
            run.decode(codes)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_load_run_names_a_missing_run(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        vqgen.load_run(tmp_path / "nowhere")


def test_load_data_reads_a_dataset(adni_dir: Path):
    train = vqgen.load_data(adni_dir, "train", size=32)
    assert train.images.shape[1:] == (1, 32, 32) and train.images.dtype == torch.float32
    assert train.images.min() >= 0 and train.images.max() <= 1
    assert len(train.labels) == len(train.subjects) == len(train)
    with pytest.raises(UsageError, match="split"):
        vqgen.load_data(adni_dir, "nope", size=32)


@pytest.mark.slow
def test_import_vqgen_stays_light():
    """`vqgen --help` imports the package: the API (and torch) load on first use only."""
    code = "import sys, vqgen; assert 'torch' not in sys.modules; assert vqgen.load_run"
    root = Path(vqgen.__file__).parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


@pytest.mark.slow
@pytest.mark.usefixtures("quick_c2st")
def test_evaluate_writes_and_returns_the_report(trained_run: Path):
    run = vqgen.load_run(trained_run, device="cpu")
    report = run.evaluate("test", n_samples=4, seed=1)
    assert report["split"] == "test" and "samples" in report
    assert (trained_run / "report.json").is_file() and (trained_run / "report.md").is_file()
