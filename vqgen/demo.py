"""The `demo` verb: train-vqvae -> train-prior -> sample -> evaluate on the embedded MNI152
default, the whole pipeline inside a wall-clock budget in minutes.

Data preparation comes first; a fixed reserve is kept for sampling and the report; the time
in between is split between the two training stages, each of which fits its learning-rate
schedule to its share (TrainConfig.max_minutes).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vqgen import bounds, config
from vqgen.config import (
    DataConfig,
    EvalConfig,
    PriorConfig,
    SampleConfig,
    TrainConfig,
    VQLossConfig,
    VQVAEConfig,
)
from vqgen.data import SPLITS, load_data, load_reference
from vqgen.device import resolve_device
from vqgen.errors import UsageError
from vqgen.evaluate import evaluate
from vqgen.evaluate_realism import feature_net
from vqgen.loaded import LoadedRun
from vqgen.overwrite import replacing
from vqgen.rundir import RunDir
from vqgen.sample import sample
from vqgen.train_prior import train_prior
from vqgen.train_vqvae import train_vqvae

# 64 px slices, 2x downsampling, 128 codes of 8 dimensions and a prior told the slice's level.
# Each choice and the figure that made it is a row of docs/decisions.md: a 32x32 grid keeps
# grey/white contrast that a 16x16 grid averages away (demo-size); 8-dimensional codes are
# sharper in the same minutes (code-dim); an L1 term sharpens a little (l1-weight); fresh virtual
# subjects lower the prior's validate NLL (augment); dilated layers see 16 rows up instead of 8
# (demo-dilation); samples come from a moving average of the prior's weights (ema) trained at
# train-prior's rate (prior-lr); the prior learns without the slice's level a tenth of the time,
# so that its samples are drawn with classifier-free guidance at 1.5 (guidance).
SIZE = 64
DEMO_VQVAE = VQVAEConfig(size=SIZE, downsample=2, codebook_size=128, code_dim=8)
DEMO_LOSS = VQLossConfig(l1_weight=1.0)
DEMO_PRIOR = PriorConfig(channels=32, layers=8, dilation=4, condition="slice", cond_dropout=0.1)
MINUTES_PER_COPY = 2.5  # the prior gets one more train split of fresh subjects per this much
DROPOUT_FROM_MINUTES = 15.0  # from here the prior trains long enough to overfit without it
DROPOUT_PACE = 0.89  # a prior step with dropout takes 1 / 0.89 of one without (demo-dropout)
# the VQ-VAE's share of the training time, the prior gets the rest: under bf16 the VQ-VAE reaches
# brain SSIM 0.98 in 30%, and the samples gain from the prior's steps (docs/decisions.md,
# vqvae-share)
VQVAE_SHARE = 0.3
# the fixed phases' reserves, as measured on a 2-core CPU (docs/decisions.md, report-reserve)
REPORT_RESERVE_S = 37.0  # sampling and the test report with its realism metrics (27-35 s)
VQVAE_BATCH = PRIOR_BATCH = 16
SETUP_S = 2.5  # train-prior's start: loading the VQ-VAE and encoding the splits (1.6-2.0 s)
COPY_S = 3.0  # and for each copy, making its 48 fresh subjects and encoding them (2.6 s)
MIN_TRAINING_S = 30.0  # a smaller budget is refused
MIN_STAGE_MINUTES = 0.1  # each stage trains at least this long, even past the budget
DEMO_SAMPLES = 16
# prior steps from which the demo's samples met every target on the test split, with two
# seeds (docs/decisions.md, demo-steps)
PRIOR_STEPS_WANTED = 5000
MAX_SUGGESTED_MINUTES = 24 * 60  # a pace slower than this would need is told as a day
EVAL_SAMPLES = config.EVAL_SAMPLES


def demo_prior(minutes: float) -> PriorConfig:
    """The demo's prior for a budget of `minutes`: the longer it trains, the more fresh virtual
    subjects it sees (2 train splits' worth at 5 minutes, 12 at 30), and dropout once it would
    otherwise overfit (docs/decisions.md, minutes-per-copy and demo-dropout)."""
    copies = max(2, round(minutes / MINUTES_PER_COPY))
    dropout = 0.1 if minutes >= DROPOUT_FROM_MINUTES else 0.0
    return replace(DEMO_PRIOR, augment=copies, dropout=dropout)


def setup_seconds(prior: PriorConfig) -> float:
    """train-prior's time before its first step: the splits' codes and the fresh subjects'."""
    return SETUP_S + COPY_S * prior.augment


def training_minutes(left: float, minutes: float) -> tuple[float, float]:
    """The VQ-VAE's and the prior's training minutes out of the `left` minutes of a demo of
    `minutes` once its data and feature net are made (the report's reserve already set aside):
    train-prior's setup set aside too, VQVAE_SHARE of the rest to the VQ-VAE."""
    rest = left - setup_seconds(demo_prior(minutes)) / 60
    return VQVAE_SHARE * rest, (1 - VQVAE_SHARE) * rest


def predicted_prior_minutes(minutes: float, fixed_s: float) -> float:
    """The prior's training minutes in a demo of `minutes` whose data and feature net take
    `fixed_s` seconds, split as `_pipeline` splits them (`training_minutes`)."""
    return training_minutes(minutes - (REPORT_RESERVE_S + fixed_s) / 60, minutes)[1]


def prior_pace(minutes: float) -> float:
    """A demo prior's steps per second at `minutes`, relative to one without dropout."""
    return DROPOUT_PACE if demo_prior(minutes).dropout else 1.0


@dataclass
class DemoResult:
    report: dict[str, Any]
    samples: Path
    report_path: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase
    steps: dict[str, int] = field(default_factory=dict)  # optimiser steps of each stage
    minutes: float = 5.0  # the budget

    def verdict(self) -> str:
        """The steps each stage took, and whether the prior's were enough for the samples to
        meet the demo's targets, or how many minutes this machine needs for that: whether a
        poor result is the machine's or the model's."""
        vqvae, prior = self.steps.get("vqvae", 0), self.steps.get("prior", 0)
        line = f"steps: VQ-VAE {vqvae:,}, prior {prior:,}"
        if prior >= PRIOR_STEPS_WANTED:
            return f"{line}: enough for samples that meet the demo's targets"
        wanted = self.minutes_for(PRIOR_STEPS_WANTED)
        return (
            f"{line}: the samples meet the demo's targets from about {PRIOR_STEPS_WANTED:,} "
            f"prior steps, which this machine gives with --minutes {wanted}; fewer leave them "
            "mottled (docs/decisions.md, demo-steps)"
        )

    def minutes_for(self, steps: int) -> int:
        """The whole minutes of a demo whose prior takes `steps` steps at this run's pace: more
        minutes also go to the VQ-VAE's share, fresh subjects and, from DROPOUT_FROM_MINUTES,
        dropout's slower steps."""
        fixed_s = self.seconds.get("data", 0.0) + self.seconds.get("feature net", 0.0)
        setup_s = setup_seconds(demo_prior(self.minutes))
        trained_s = max(self.seconds.get("prior", 0.0) - setup_s, 1.0)
        # this run's prior steps per minute of training, as a prior without dropout takes them
        pace = self.steps.get("prior", 0) / (trained_s / 60) / prior_pace(self.minutes)
        minutes = max(math.ceil(self.minutes), 1)
        while (
            minutes < MAX_SUGGESTED_MINUTES
            and pace * prior_pace(minutes) * predicted_prior_minutes(minutes, fixed_s) < steps
        ):
            minutes += 1
        return minutes


def run_demo(
    run_dir: Path,
    minutes: float = 5.0,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
) -> DemoResult:
    """Run the whole pipeline on `mni152` within `minutes`, holding the run's lock; returns the
    test-split report. A run directory that holds models needs `overwrite`."""
    bounds.positive("--minutes", minutes)
    least = REPORT_RESERVE_S + setup_seconds(demo_prior(minutes)) + MIN_TRAINING_S
    if not minutes * 60 >= least:
        needed = math.ceil(least / 6) / 10  # minutes, rounded up to a tenth
        raise UsageError(
            f"--minutes {minutes} leaves no time to train; the demo needs at least {needed}"
        )
    bounds.seed_value("--seed", seed)
    run = RunDir(run_dir)
    with run.lock("demo"), replacing(run, "vqvae", False, overwrite, resumable=False):
        return _pipeline(run_dir, minutes, device, seed)  # its verbs take the lock again


def _pipeline(run_dir: Path, minutes: float, device: str, seed: int) -> DemoResult:
    start = time.perf_counter()
    deadline = start + 60 * minutes - REPORT_RESERVE_S
    seconds: dict[str, float] = {}
    steps: dict[str, int] = {}

    def lap(phase: str) -> None:
        seconds[phase] = time.perf_counter() - start - sum(seconds.values())

    def minutes_left() -> float:
        return (deadline - time.perf_counter()) / 60

    data = DataConfig(source="mni152")
    splits = {split: load_data(data, split, SIZE) for split in SPLITS}  # made once, then cached
    load_reference(data, splits["test"])  # the report's real slices, cached too
    lap("data")
    feature_net(splits["train"], resolve_device(device))  # the report's, cached: once a machine
    lap("feature net")

    def stage_training(defaults: TrainConfig, batch_size: int, minutes: float) -> TrainConfig:
        """The stage's own defaults (optimiser, rate, moving average) at the demo's batch, seed
        and device, with time the only limit."""
        return replace(
            defaults,
            epochs=None,
            max_minutes=minutes,
            batch_size=batch_size,
            device=device,
            seed=seed,
        )

    # a slow data phase (a busy machine, a cold cache) must not leave a stage no time at all
    prior = demo_prior(minutes)
    setup_minutes = setup_seconds(prior) / 60
    vqvae_minutes = max(training_minutes(minutes_left(), minutes)[0], MIN_STAGE_MINUTES)
    vqvae_train = stage_training(config.VQVAE_TRAINING, VQVAE_BATCH, vqvae_minutes)
    steps["vqvae"] = train_vqvae(data, DEMO_VQVAE, vqvae_train, run_dir, loss=DEMO_LOSS).steps
    lap("vqvae")
    prior_minutes = max(minutes_left() - setup_minutes, MIN_STAGE_MINUTES)
    prior_train = stage_training(config.PRIOR_TRAINING, PRIOR_BATCH, prior_minutes)
    steps["prior"] = train_prior(run_dir, prior, prior_train).steps
    lap("prior")
    run = LoadedRun.load(run_dir, device)
    sampled = sample(run, SampleConfig(n=DEMO_SAMPLES, seed=seed))
    lap("sample")
    sampling = config.eval_sampling(EVAL_SAMPLES, seed=seed)
    report = evaluate(run, EvalConfig(split="test", sampling=sampling))
    lap("evaluate")
    return DemoResult(report, sampled.grid, RunDir(run_dir).report, seconds, steps, minutes)
