"""Where the samples' holes come from: the codes a run's prior draws where its samples' brain
masks have holes, and where those codes lie in real slices (the test split is not read).

A hole is background (the outline measure's threshold) enclosed by brain. For each code the
validate slices' own code grids say how often it lies outside the brain; a hole made of codes
that real slices use only outside the brain was drawn by the prior, not made by the decoder.

    .venv/bin/python bench/hole_codes.py RUN [--n 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqgen.api import load_run
from vqgen.config import SampleConfig
from vqgen.realism import outline


def masks(images: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each slice's (brain, holes) masks, (H, W) bool, as the outline measure counts them."""
    area = outline.min_area(images.shape[-1])
    return [outline.parts(mask, area) for mask in outline.brain_mask(images)]


def cells(mask: np.ndarray, factor: int, share: float) -> np.ndarray:
    """(H, W) bool -> (H/factor, W/factor) bool: the code cells `share` or more covered."""
    covered = F.avg_pool2d(torch.from_numpy(mask).float()[None, None], factor)[0, 0]
    return covered.numpy() > share


def with_holes(found: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The share of slices with at least one hole."""
    return float(np.mean([holes.any() for _, holes in found]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=128, help="samples drawn (seed 0)")
    args = parser.parse_args()
    run = load_run(args.run)
    images = run.data("validate").images
    codes = run.encode(images)[-1]  # the finest level: its codes are the decoder's detail
    factor, K = images.shape[-1] // codes.shape[-1], run.vqvae.cfg.codebook_size
    inside, total = np.zeros(K), np.zeros(K)
    real = masks(images)
    for (brain, holes), grid in zip(real, codes.numpy(), strict=True):
        np.add.at(total, grid.ravel(), 1)
        np.add.at(inside, grid[cells(brain | holes, factor, 0.5)], 1)
    outside = 1 - inside / np.maximum(total, 1)  # per code: its share of cells outside the brain

    cfg = SampleConfig(n=args.n, seed=0)
    samples, sample_codes = run.draw(cfg, run.condition(cfg))
    drawn = masks(samples)
    in_holes = np.concatenate(
        [
            grid[cells(holes, factor, 0.25)]
            for (_, holes), grid in zip(drawn, sample_codes[-1].numpy(), strict=True)
        ]
    )
    print(f"slices with a hole: real validate {with_holes(real):.2f}, ", end="")
    print(f"reconstructions {with_holes(masks(run.reconstruct(images))):.2f}, ", end="")
    print(f"samples {with_holes(drawn):.2f} (n {args.n}, seed 0)")
    print(
        f"codes in the samples' holes: {len(in_holes)} cells; in real slices these codes lie "
        f"outside the brain {outside[in_holes].mean():.2f} of the time (median "
        f"{np.median(outside[in_holes]):.2f}); never in real slices: "
        f"{(total[in_holes] == 0).mean():.2f}"
    )


if __name__ == "__main__":
    main()
