"""`vqgen demo`: the whole pipeline on a shrunken mni152, inside its wall-clock budget."""

from __future__ import annotations

import pytest

from vqgen import demo
from vqgen.config import GUIDANCE
from vqgen.errors import UsageError

pytestmark = pytest.mark.usefixtures("quick_c2st")  # what evaluate writes, not its power


@pytest.mark.slow
def test_demo_runs_every_stage_and_times_each_phase(tmp_path, tiny_mni152, monkeypatch):
    monkeypatch.setattr(demo, "REPORT_RESERVE_S", 1.0)
    monkeypatch.setattr(demo, "SETUP_S", 1.0)
    monkeypatch.setattr(demo, "COPY_S", 0.0)
    monkeypatch.setattr(demo, "MIN_TRAINING_S", 6.0)
    monkeypatch.setattr(demo, "EVAL_SAMPLES", 4)
    monkeypatch.setattr(demo, "DEMO_SAMPLES", 2)
    result = demo.run_demo(tmp_path / "demo", minutes=0.15, device="cpu")

    phases = ["data", "feature net", "vqvae", "prior", "sample", "evaluate"]
    assert list(result.seconds) == phases
    assert all(s >= 0 for s in result.seconds.values())
    assert set(result.steps) == {"vqvae", "prior"} and min(result.steps.values()) > 0
    verdict = result.verdict()  # too few prior steps: how many minutes would give enough
    assert f"prior {result.steps['prior']:,}" in verdict and "--minutes" in verdict
    assert result.report["split"] == "test"
    assert result.report["samples"]["guidance"] == GUIDANCE > 1  # a guided prior's default
    assert {"reconstruction", "prior", "samples", "realism"} <= set(result.report)
    assert result.samples.is_file() and result.report_path.is_file()
    for stage in ("vqvae", "prior"):
        assert (tmp_path / "demo" / f"{stage}.safetensors").is_file()


def test_a_budget_too_small_to_train_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"--minutes 0\.5"):
        demo.run_demo(tmp_path / "demo", minutes=0.5, device="cpu")
    assert not (tmp_path / "demo").exists()


def test_a_longer_demo_gives_its_prior_more_fresh_subjects_and_then_dropout():
    five, thirty = demo.demo_prior(5), demo.demo_prior(30)
    assert five.augment >= 2 and five.dropout == 0
    assert thirty.augment > five.augment and thirty.dropout > 0
    assert demo.setup_seconds(thirty) > demo.setup_seconds(five)
