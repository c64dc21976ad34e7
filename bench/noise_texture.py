"""Does a noise model give decoded slices back the scanner noise that the decoder removes?

A trained run's reconstructions of the validate split, as they are and with Gaussian noise
added inside the brain, each slice's noise level drawn from the train split's residuals (per
train slice, the standard deviation of real - reconstruction over the brain), times 1, 0.5 and
0.25: the residual holds the decoder's errors as well as the scanner's noise. Each set is
scored with the report's C2ST (paired, full and half scale) and sharpness ratio, on the
validate split:

    .venv/bin/python bench/noise_texture.py RUN [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vqgen
from vqgen import metrics, realism


def noise_levels(run: vqgen.Run, limit: int = 512) -> torch.Tensor:
    """The std of (real - reconstruction) over the brain of up to `limit` train slices."""
    train = run.data("train").images[:limit]
    residual = train - run.reconstruct(train)
    brain = metrics.foreground_mask(train)
    sigmas = [r[m].std() for r, m in zip(residual, brain, strict=True) if m.sum() > 16]
    return torch.stack(sigmas)


def with_noise(images: torch.Tensor, sigmas: torch.Tensor, seed: int) -> torch.Tensor:
    """`images` with N(0, s^2) noise over their brain, s drawn from `sigmas` per slice, then
    clipped and rounded to 8 bits as the real slices are."""
    gen = torch.Generator().manual_seed(seed)
    pick = sigmas[torch.randint(len(sigmas), (len(images),), generator=gen)]
    noise = torch.randn(images.shape, generator=gen) * pick[:, None, None, None]
    noisy = images + noise * metrics.foreground_mask(images)
    return (noisy.clamp(0, 1) * 255).round() / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    run = vqgen.load_run(args.run, device="cpu")
    val = run.data("validate")
    recon = run.reconstruct(val.images)
    sigmas = noise_levels(run)
    print(
        f"noise std over the brain, train split: median {sigmas.median():.4f}, "
        f"10-90% {sigmas.quantile(0.1):.4f}-{sigmas.quantile(0.9):.4f}"
    )
    print("| reconstructions (validate) | C2ST full | C2ST half | sharpness (real 1) |")
    print("| --- | ---: | ---: | ---: |")
    sets = {"as decoded": recon}
    for factor in (1.0, 0.5, 0.25):
        sets[f"noise at {factor:g} x the residual's std"] = with_noise(
            recon, factor * sigmas, args.seed
        )
    for name, images in sets.items():
        c2st = [
            realism.c2st(val.images, val.subjects, images, None, args.seed, paired=True, scale=s)
            for s in (1, 2)
        ]
        sharp = realism.sharpness_ratio(images, val.images)
        print(
            f"| {name} | {c2st[0].accuracy:.2f} | {c2st[1].accuracy:.2f} | {sharp:.2f} |",
            flush=True,
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
