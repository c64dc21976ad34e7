"""The `demo` verb: train-vqvae -> train-prior -> sample -> evaluate on the embedded MNI152
default, inside a compute budget in minutes.

The budget is split between the stages; each training stage fits its learning-rate schedule to
its share (TrainConfig.max_minutes). Data generation and evaluation come on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vqgen.config import DataConfig, PriorConfig, TrainConfig, VQVAEConfig
from vqgen.errors import UsageError
from vqgen.evaluate import evaluate
from vqgen.generate import generate
from vqgen.stage1 import train_vqvae
from vqgen.stage2 import train_prior

VQVAE_SHARE, PRIOR_SHARE = 0.5, 0.4  # of the budget; the rest is sampling and evaluation
# A smaller prior than train-prior's default: in two CPU minutes it takes more steps and gets
# further (bench/RESULTS.md: 4.18 vs 5.75 bits/code, nearest-real SSIM 0.42 vs 0.17).
DEMO_PRIOR = PriorConfig(channels=32, layers=8)
DEMO_SAMPLES = 16
EVAL_SAMPLES = 48


@dataclass
class DemoResult:
    report: dict[str, Any]
    samples: Path
    report_path: Path


def run_demo(
    run_dir: Path, minutes: float = 5.0, device: str = "auto", seed: int = 0
) -> DemoResult:
    """Run the whole pipeline on `mni152`; returns the test-split report."""
    if minutes <= 0:
        raise UsageError(f"--minutes must be positive, got {minutes}")
    train = dict(device=device, seed=seed, epochs=1000)
    train_vqvae(
        DataConfig(source="mni152", size=128),
        VQVAEConfig(size=128),
        TrainConfig(**train, batch_size=16, lr=2e-3, max_minutes=VQVAE_SHARE * minutes),
        run_dir,
    )
    train_prior(
        run_dir,
        DEMO_PRIOR,
        TrainConfig(**train, batch_size=16, lr=2e-3, max_minutes=PRIOR_SHARE * minutes),
    )
    sampled = generate(run_dir, n=DEMO_SAMPLES, seed=seed, device=device)
    report = evaluate(run_dir, "test", EVAL_SAMPLES, device=device, seed=seed)
    return DemoResult(report, sampled.grid, run_dir / "report.json")
