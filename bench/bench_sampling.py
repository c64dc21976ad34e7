"""Seconds per batch of code grids: fast sampler vs the naive reference, same prior, same run.

    python bench/bench_sampling.py                      # 16x16 and 32x32, batch 16
    python bench/bench_sampling.py --grids 16 --full-naive
    python bench/bench_sampling.py --grids 32 --channels 32 --layers 8 --codebook-size 128 \
        --dilation 4                                    # the demo's prior

The prior has random weights (sampling cost does not depend on them): by default K 512,
channels 64, 10 layers, kernel 3, dilation 8 (train-prior's defaults). The naive sampler runs one
full forward pass per position, so every position costs the same; above --naive-max-grid its
time is the mean of --naive-steps loop iterations times grid^2 instead of a full run (hours on
a 2-core CPU at 32x32).
Where the naive sampler runs in full, the table also says whether both drew the same codes.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from vqgen.config import PriorConfig
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.sampling import pick_codes, sample_codes, sample_codes_naive


def timed(sampler, prior: GatedPixelCNN, n: int) -> tuple[float, torch.Tensor]:
    """Seconds for one batch of n grids, and the codes."""
    start = time.perf_counter()
    codes = sampler(prior, n, generator=torch.Generator().manual_seed(1))
    return time.perf_counter() - start, codes


@torch.no_grad()
def naive_estimate(prior: GatedPixelCNN, n: int, steps: int) -> float:
    """Seconds for a naive batch from `steps` iterations of its loop (forward pass + draw)."""
    g = prior.cfg.grid
    codes = torch.zeros(n, g, g, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    pick_codes(prior(codes)[:, :, 0, 0], 1.0, None, gen)  # warm-up
    start = time.perf_counter()
    for step in range(steps):
        i, j = divmod(step, g)
        codes[:, i, j] = pick_codes(prior(codes)[:, :, i, j], 1.0, None, gen)
    return (time.perf_counter() - start) / steps * g * g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--dilation", type=int, default=PriorConfig.dilation)
    parser.add_argument("--naive-max-grid", type=int, default=16)
    parser.add_argument("--naive-steps", type=int, default=20)
    parser.add_argument("--full-naive", action="store_true", help="never extrapolate")
    args = parser.parse_args()

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}; prior K {args.codebook_size}, "
        f"channels {args.channels}, layers {args.layers}, kernel 3, dilation {args.dilation}; "
        f"batch {args.batch}\n"
    )
    print("| grid | fast (s/batch) | naive (s/batch) | speed-up | same codes |")
    print("| --- | --- | --- | --- | --- |")
    for g in args.grids:
        torch.manual_seed(0)
        cfg = PriorConfig(
            codebook_size=args.codebook_size,
            grid=g,
            channels=args.channels,
            layers=args.layers,
            dilation=args.dilation,
        )
        prior = GatedPixelCNN(cfg).eval()
        sample_codes(prior, 2, generator=torch.Generator().manual_seed(0))  # warm-up
        fast_s, fast = timed(sample_codes, prior, args.batch)
        if args.full_naive or g <= args.naive_max_grid:
            naive_s, naive = timed(sample_codes_naive, prior, args.batch)
            naive_col, same = f"{naive_s:.2f}", "yes" if torch.equal(fast, naive) else "no"
        else:
            naive_s = naive_estimate(prior, args.batch, args.naive_steps)
            naive_col, same = f"{naive_s:.0f} (from {args.naive_steps} steps)", "not run"
        print(f"| {g}x{g} | {fast_s:.2f} | {naive_col} | {naive_s / fast_s:.0f}x | {same} |")


if __name__ == "__main__":
    main()
