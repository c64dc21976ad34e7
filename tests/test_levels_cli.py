"""Two code levels and guidance as a user reaches them: every verb, exact resume, one-line
refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures import assert_one_line_error, run_cli
from tiny import CPU, PRIOR_3X16, interrupt_at

from vqgen import fileio, train_prior
from vqgen.config import PriorConfig, SampleConfig, TrainConfig
from vqgen.errors import Interrupted
from vqgen.loaded import LoadedRun
from vqgen.sample import sample

pytestmark = [
    pytest.mark.slow,  # every test trains a prior
    pytest.mark.usefixtures("quick_c2st"),  # what evaluate writes, not its power
]

GUIDED_PRIOR = [*PRIOR_3X16, "--condition", "slice", "--cond-dropout", "0.3"]


def test_two_levels_and_guidance_through_every_verb(capsys, two_level_template: Path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_level_template, run)
    vqvae = json.loads((run / "vqvae.json").read_text())["model"]
    assert (vqvae["levels"], vqvae["top_downsample"]) == (2, 4)
    # AdamW: in 4 steps it moves the condition's weights enough for guidance to change a draw
    # of 2 grids; Muon, which moves each matrix by its learning rate in spectral norm, does not
    prior_args = ["--run", run, "--max-steps", "4", "--batch-size", "8", "--optimizer", "adamw"]
    code, _, err = run_cli(capsys, "train-prior", *prior_args, *CPU, *GUIDED_PRIOR)
    assert code == 0, err
    codes = fileio.load_tensors(run / "codes" / "train.safetensors")
    assert codes["codes_top"].shape[1:] == (4, 4) and codes["codes"].shape[1:] == (16, 16)
    meta = json.loads((run / "prior.json").read_text())
    assert (meta["model"]["grid"], meta["model"]["top_grid"], meta["top_model"]["grid"]) == (
        16,
        4,
        4,
    )
    code, out, err = run_cli(capsys, "sample", "--run", run, "--n", "3", "--guidance", "2", *CPU)
    assert code == 0, err
    assert "3 samples at guidance 2 in" in out
    assert len(list((run / "samples").glob("sample_*.png"))) == 3
    loaded = LoadedRun.load(run, "cpu")
    untold, *told = (
        sample(loaded, SampleConfig(n=2, guidance=g), tmp_path / f"samples-{g}").codes
        for g in (None, 1.5, 1.0)
    )
    same = [all(map(torch.equal, untold, codes)) for codes in told]
    assert same == [True, False]  # a prior trained with --cond-dropout draws at 1.5 untold
    evaluate = ["--run", run, "--n-samples", "8", "--guidance", "2", *CPU]
    code, _, err = run_cli(capsys, "evaluate", *evaluate)
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    levels = report["prior"]["level_nll_bits"]
    assert set(levels) == {"top", "bottom"} and all(b > 0 for b in levels.values())
    top_codes, bottom_codes = 16, 256  # per slice: the total is their weighted mean
    total = (levels["top"] * top_codes + levels["bottom"] * bottom_codes) / (272)
    assert report["prior"]["nll_bits"] == pytest.approx(total)
    assert report["samples"]["guidance"] == 2
    assert "guidance 2" in (run / "report.md").read_text()
    assert 0 < report["reconstruction"]["codebook_top"]["fraction_used"] <= 1


def test_guidance_without_cond_dropout_is_one_line(capsys, two_level_template: Path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_level_template, run)
    args = ["--run", run, "--max-steps", "2", "--batch-size", "8", *CPU, *PRIOR_3X16]
    code, _, err = run_cli(capsys, "train-prior", *args, "--condition", "slice")
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", "--run", run, "--n", "2", "--guidance", "3", *CPU)
    assert_one_line_error(code, err, 2, "--cond-dropout")
    code, _, err = run_cli(capsys, "train-vqvae", "--run", tmp_path / "x", "--levels", "3", *CPU)
    assert_one_line_error(code, err, 2, "--levels must be 1 or 2")


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_two_level_prior_resumes_exactly(
    two_level_template: Path, tmp_path, monkeypatch, optimizer
):
    """Ctrl-C in the middle of a two-level prior with condition dropout, then --resume: the
    same weights as an uninterrupted run, bit for bit (both networks, the dropped rows, each
    optimiser's state)."""
    prior = PriorConfig(channels=16, layers=2, condition="slice", cond_dropout=0.5)
    train = TrainConfig(
        max_steps=6, batch_size=4, device="cpu", warmup_steps=2, log_every=1, optimizer=optimizer
    )
    runs = {name: tmp_path / name for name in ("whole", "resumed")}
    for run in runs.values():
        shutil.copytree(two_level_template, run)
    train_prior.train_prior(runs["whole"], prior, train)
    with monkeypatch.context() as patch:
        patch.setattr(train_prior, "prior_step", interrupt_at(4, loss=train_prior.prior_step))
        with pytest.raises(Interrupted):
            train_prior.train_prior(runs["resumed"], prior, train)
    train_prior.train_prior(runs["resumed"], prior, train, resume=True)
    a, b = (fileio.load_tensors(run / "prior-last.safetensors") for run in runs.values())
    assert any(key.startswith("top.") for key in a) and any(k.startswith("bottom.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
