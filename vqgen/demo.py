"""The `demo` verb: train-vqvae -> train-prior -> sample -> evaluate on the embedded MNI152
default, the whole pipeline inside a wall-clock budget in minutes.

Data preparation comes first; a fixed reserve is kept for sampling and the report; the time
in between is split between the two training stages, each of which fits its learning-rate
schedule to its share (TrainConfig.max_minutes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqgen import config, rundir
from vqgen.config import DataConfig, PriorConfig, SampleConfig, TrainConfig, VQVAEConfig
from vqgen.data import SPLITS, load_data
from vqgen.errors import UsageError
from vqgen.evaluate import evaluate, feature_net
from vqgen.inference import resolve_device
from vqgen.sample import sample
from vqgen.train_prior import train_prior
from vqgen.train_vqvae import train_vqvae

# 64 px slices, 64 codes and a prior told the slice's level: a 16x16 grid of few codes is what
# a prior learns in two CPU minutes; at 128 px (32x32 grids of 512 codes) the samples stay
# shapeless blobs (bench/RESULTS.md, "Demo settings"). An L1 term beside the MSE sharpens the
# reconstructions a little; 96 fresh virtual subjects lower the prior's validate NLL; the
# adversarial loss and dropout do not pay for themselves in this budget ("Sharper slices").
SIZE = 64
DEMO_VQVAE = VQVAEConfig(size=SIZE, codebook_size=64, l1_weight=1.0)
DEMO_PRIOR = PriorConfig(channels=32, layers=8, condition="slice", augment=2)
VQVAE_SHARE = 0.45  # of the training time; the prior gets the rest
REPORT_RESERVE_S = 35.0  # sampling and the test-split report with its realism metrics (~26 s)
SETUP_S = 10.0  # train-prior's start: loading the VQ-VAE, fresh subjects, encoding to codes
MIN_TRAINING_S = 30.0  # a smaller budget is refused
MIN_STAGE_MINUTES = 0.1  # each stage trains at least this long, even past the budget
DEMO_SAMPLES = 16
EVAL_SAMPLES = config.EVAL_SAMPLES


@dataclass
class DemoResult:
    report: dict[str, Any]
    samples: Path
    report_path: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase


def run_demo(
    run_dir: Path,
    minutes: float = 5.0,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
) -> DemoResult:
    """Run the whole pipeline on `mni152` within `minutes`, holding the run's lock; returns the
    test-split report. A run directory that holds models needs `overwrite`."""
    least = REPORT_RESERVE_S + SETUP_S + MIN_TRAINING_S
    if not minutes * 60 >= least:
        raise UsageError(
            f"--minutes {minutes} leaves no time to train; the demo needs at least {least / 60:.1f}"
        )
    with rundir.lock(run_dir, "demo"):  # the verbs below take it again, as its holder
        rundir.guard_stage(run_dir, "vqvae", resume=False, overwrite=overwrite)
        return _pipeline(run_dir, minutes, device, seed)


def _pipeline(run_dir: Path, minutes: float, device: str, seed: int) -> DemoResult:
    start = time.perf_counter()
    deadline = start + 60 * minutes - REPORT_RESERVE_S
    seconds: dict[str, float] = {}

    def lap(phase: str) -> None:
        seconds[phase] = time.perf_counter() - start - sum(seconds.values())

    def minutes_left() -> float:
        return (deadline - time.perf_counter()) / 60

    data = DataConfig(source="mni152", size=SIZE)
    for split in SPLITS:
        load_data(data, split)  # generated once, then read from the cache
    feature_net(load_data(data, "train"), resolve_device(device))  # for the report; cached
    lap("data")
    train = dict(device=device, seed=seed, batch_size=16, lr=2e-3)  # time is the only limit
    # a slow data phase (a busy machine, a cold cache) must not leave a stage no time at all
    vqvae_minutes = max(VQVAE_SHARE * (minutes_left() - SETUP_S / 60), MIN_STAGE_MINUTES)
    train_vqvae(data, DEMO_VQVAE, TrainConfig(**train, max_minutes=vqvae_minutes), run_dir)
    lap("vqvae")
    prior_minutes = max(minutes_left() - SETUP_S / 60, MIN_STAGE_MINUTES)
    train_prior(run_dir, DEMO_PRIOR, TrainConfig(**train, max_minutes=prior_minutes))
    lap("prior")
    sampled = sample(run_dir, SampleConfig(n=DEMO_SAMPLES, seed=seed), device=device)
    lap("sample")
    report = evaluate(run_dir, "test", EVAL_SAMPLES, device=device, seed=seed)
    lap("evaluate")
    return DemoResult(report, sampled.grid, run_dir / "report.json", seconds)
