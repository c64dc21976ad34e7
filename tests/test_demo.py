"""`vqgen demo`: the whole pipeline on a shrunken mni152, inside its wall-clock budget."""

from __future__ import annotations

import math
from pathlib import Path

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


FIVE_MINUTES = dict(  # a 5-minute demo on a 2-core CPU: its phases' seconds and its steps
    seconds={"data": 3.0, "feature net": 19.0, "vqvae": 68.0, "prior": 157.0, "evaluate": 41.0},
    steps={"vqvae": 906, "prior": 891},
)


def test_the_budget_splits_into_the_prior_the_vqvae_the_setup_and_the_reserve():
    for minutes in (5, 14, 15, 30):
        prior = demo.predicted_prior_minutes(minutes, 22.0)
        vqvae = prior * demo.VQVAE_SHARE / (1 - demo.VQVAE_SHARE)  # the share _pipeline gives
        setup = demo.setup_seconds(demo.demo_prior(minutes)) / 60
        assert prior + vqvae + setup + (demo.REPORT_RESERVE_S + 22.0) / 60 == pytest.approx(minutes)


def test_the_minutes_told_give_the_prior_the_steps_wanted_and_a_minute_less_does_not():
    """More minutes go to the VQ-VAE's share and the fresh subjects too, and from 15 minutes
    the prior's steps are slower (dropout): the prior's own pace alone would tell too few."""
    result = demo.DemoResult({}, Path("grid.png"), Path("report.md"), minutes=5.0, **FIVE_MINUTES)
    trained = FIVE_MINUTES["seconds"]["prior"] - demo.setup_seconds(demo.demo_prior(5))
    pace = 891 / (trained / 60)  # steps per minute of training, without dropout

    def steps(minutes: int) -> float:
        return pace * demo.prior_pace(minutes) * demo.predicted_prior_minutes(minutes, 22.0)

    wanted = result.minutes_for(demo.PRIOR_STEPS_WANTED)
    assert steps(wanted) >= demo.PRIOR_STEPS_WANTED > steps(wanted - 1)
    assert demo.prior_pace(wanted) < 1  # past 15 minutes: dropout
    prior_alone = 5 + (demo.PRIOR_STEPS_WANTED - 891) / (891 / (157 / 60))  # its own pace
    assert wanted > math.ceil(prior_alone)
    assert f"--minutes {wanted};" in result.verdict()


def test_a_pace_too_slow_for_a_day_is_told_as_a_day():
    slow = {**FIVE_MINUTES, "steps": {"vqvae": 906, "prior": 1}}
    result = demo.DemoResult({}, Path("grid.png"), Path("report.md"), minutes=5.0, **slow)
    assert result.minutes_for(demo.PRIOR_STEPS_WANTED) == demo.MAX_SUGGESTED_MINUTES
