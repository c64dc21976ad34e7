"""The `sample` verb: draw code grids from the prior, decode them, write PNG slices.

    result = sample(Path("run"), SampleConfig(n=16, temperature=1.0, seed=0))

The algorithm that draws the codes is vqgen.sampling.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vqgen import checkpoint, plots
from vqgen.conditioning import for_sampling
from vqgen.config import SampleConfig
from vqgen.inference import draw, make_output_dir, resolve_device, write_png
from vqgen.rundir import RunDir

SAMPLE_GLOB = "sample_[0-9][0-9][0-9][0-9].png"  # what `sample` writes, and all it removes
GRID_NAME = "grid.png"


@dataclass
class SampleResult:
    images: Tensor  # (n,1,S,S) in [0,1], on the CPU
    codes: Tensor  # (n,h,w)
    paths: list[Path]
    grid: Path
    seconds: float


def sample(
    run_dir: Path, cfg: SampleConfig, out_dir: Path | None = None, device: str = "auto"
) -> SampleResult:
    """Sample `cfg.n` new slices from a trained run; PNGs go to `out_dir` (default run/samples),
    replacing the samples an earlier `sample` left there (and only those)."""
    run = RunDir(run_dir).check_exists()
    with run.lock("sample"):
        return _sample(run, cfg, out_dir or run.samples, resolve_device(device))


def _sample(run: RunDir, cfg: SampleConfig, out_dir: Path, dev: torch.device) -> SampleResult:
    vqvae, _ = checkpoint.load_vqvae(run, dev)
    prior, prior_meta = checkpoint.load_prior(run, dev, vqvae_cfg=vqvae.cfg)
    cond = for_sampling(prior.cfg, prior_meta, cfg)
    make_output_dir(out_dir, "--out")  # before sampling, which may take minutes
    start = time.perf_counter()
    images, codes = draw(vqvae, prior, cond, cfg, dev)
    seconds = time.perf_counter() - start
    earlier = sorted(out_dir.glob(SAMPLE_GLOB)) + sorted(out_dir.glob(GRID_NAME))
    for path in earlier:
        path.unlink()
    if earlier:
        warnings.warn(f"removed {len(earlier)} earlier sample file(s) from {out_dir}", stacklevel=2)
    paths = [out_dir / f"sample_{i:04d}.png" for i in range(cfg.n)]
    for image, path in zip(images, paths, strict=True):
        write_png(image, path)
    grid = plots.save_grid(images, out_dir / GRID_NAME, nrow=min(8, cfg.n))
    return SampleResult(images, codes, paths, grid, seconds)
