"""Runs written by older vqgen versions keep working: load, sample and evaluate.

tests/data/run-format-1 is a tiny run (16 px mni152, 8 codes, a slice-conditioned prior) made
with the first run format; every later version must read it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power

FORMAT_1 = Path(__file__).parent / "data" / "run-format-1"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "old-run"
    shutil.copytree(FORMAT_1, run)
    return run


@pytest.mark.slow
def test_a_format_1_run_samples_and_evaluates(old_run: Path, tiny_mni152, capsys) -> None:
    code, _, err = run_cli(capsys, "sample", "--run", old_run, "--n", "3", "--device", "cpu")
    assert code == 0, err
    assert len(list((old_run / "samples").glob("sample_*.png"))) == 3
    code, _, err = run_cli(
        capsys, "evaluate", "--run", old_run, "--n-samples", "4", "--device", "cpu"
    )
    assert code == 0, err
    report = json.loads((old_run / "report.json").read_text())
    assert report["prior"]["condition"] == "slice"
    assert report["samples"]["n"] == 4


def test_a_field_missing_from_an_older_run_takes_its_default(old_run: Path, capsys) -> None:
    meta = json.loads((old_run / "vqvae.json").read_text())
    del meta["model"]["dead_code_threshold"]  # as if the field had been added after this run
    (old_run / "vqvae.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "sample", "--run", old_run, "--n", "2", "--device", "cpu")
    assert code == 0, err


def test_an_unknown_key_still_refuses_in_one_line(old_run: Path, capsys) -> None:
    meta = json.loads((old_run / "prior.json").read_text())
    meta["model"]["heads"] = 4
    (old_run / "prior.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "sample", "--run", old_run, "--device", "cpu")
    assert_one_line_error(code, err, 1, "prior.json", "unknown key 'heads'")


def test_a_wrong_type_still_refuses_in_one_line(old_run: Path, capsys) -> None:
    meta = json.loads((old_run / "vqvae.json").read_text())
    meta["model"]["hidden"] = "eight"
    (old_run / "vqvae.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "sample", "--run", old_run, "--device", "cpu")
    assert_one_line_error(code, err, 1, "vqvae.json", "hidden")


def test_an_older_run_keeps_the_training_it_had_when_defaults_change(old_run: Path) -> None:
    """The L1 term, the prior's dropout, --augment and --dilation came on by default after this
    run was made: reading it back (as --resume does) must give the settings it was trained
    with, and the network its weights fit."""
    from vqgen import checkpoint

    vqvae_meta = json.loads((old_run / "vqvae.json").read_text())
    _, loss = checkpoint.vqvae_configs(vqvae_meta, old_run / "vqvae.json")
    prior_meta = json.loads((old_run / "prior.json").read_text())
    prior, _ = checkpoint.prior_configs(prior_meta, old_run / "prior.json")
    assert (loss.l1_weight, prior.dropout, prior.augment, prior.dilation) == (0.0, 0.0, 0, 1)
    assert prior.cond_dropout == 0.0  # a later setting whose default is off
