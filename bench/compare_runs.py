"""Samples of several runs side by side: the same seed and slice levels, one row per run, and
a row of real test slices at the nearest levels, drawn at the guidance `vqgen sample` draws at
(1.5 for a prior trained with `--cond-dropout`, else 1) unless `--guidance` says otherwise.
Makes the figure of budgets in docs/results.md.

    python bench/compare_runs.py RUN_5MIN RUN_15MIN RUN_30MIN --names "5 min" "15 min" "30 min" \\
        --out docs/figures/samples_by_budget.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import vqgen
from vqgen import plots
from vqgen.config import SampleConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, help="default: as `vqgen sample` draws")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    names = args.names or [str(run) for run in args.runs]
    cfg = SampleConfig(n=args.n, seed=args.seed, guidance=args.guidance)
    rows, cond, run = [], None, None
    for name, path in zip(names, args.runs, strict=True):
        run = vqgen.load_run(path, device="cpu")
        images, _, cond = run.loaded.draw(cfg)
        rows.append((name, images))
    test = run.data("test")  # the last run's data
    if cond is not None and cond.is_floating_point():  # a slice prior: real slices at its levels
        nearest = (test.positions[None, :] - cond[:, None]).abs().argmin(1)
        rows.append(("real (test)", test.images[nearest]))
    else:
        rows.append(("real (test)", test.images[torch.randperm(len(test))[: args.n]]))
    plots.rows_figure(rows, args.out, f"samples, seed {args.seed}; real test slices below")
    print(args.out)


if __name__ == "__main__":
    main()
