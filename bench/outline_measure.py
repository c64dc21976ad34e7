"""The outline measure on real mni152 slices: its floor as evaluate computes it (256 real
train slices spread over the subjects, against the test split with its evaluation subjects)
over several picks, real validate slices, the known defects of vqgen.realism.perturb, and how
the real slices' (components, holes) move with the mask's threshold.

    .venv/bin/python bench/outline_measure.py --size 64 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch import Tensor

from vqgen.config import DataConfig
from vqgen.data import load_data, load_reference
from vqgen.evaluate_realism import spread_pick
from vqgen.realism import outline, perturb


def row(name: str, images: Tensor, levels: Tensor, real: outline.Outline, ref: Tensor) -> None:
    """One line: the set's scores level by level, and against real slices of any level."""
    found = outline.outline_features(images)
    cells = []
    for at in (levels, None):
        s = outline.outline_scores(outline.rarity(found, at, real, ref))
        cells.append(
            f"{s['atypical']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] "
            f"(topology {s['topology']:.3f}, solidity {s['solidity']:.3f})"
        )
    s = outline.outline_scores(outline.rarity(found, levels, real, ref))
    shape = f"{s['components']:.2f} / {s['holes']:.2f} / {s['excess']:.2f}"
    print(f"| {name} | {len(images)} | {cells[0]} | {cells[1]} | {shape} |", flush=True)


def thresholds(images: Tensor) -> None:
    """The share of each common (components, holes) among real slices, threshold by threshold."""
    for threshold in (0.02, 0.05, 0.1, 0.15):
        area = outline.min_area(images.shape[-1])
        masks = outline.brain_mask(images, threshold)
        counts = Counter(outline.topology(mask, area) for mask in masks)
        shares = ", ".join(f"{k}: {v / len(masks):.0%}" for k, v in counts.most_common(4))
        print(f"| {threshold} | {shares} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=256, help="slices a floor set (evaluate's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    data = DataConfig(source="mni152")
    train, validate = load_data(data, "train", args.size), load_data(data, "validate", args.size)
    reference = load_reference(data, load_data(data, "test", args.size))
    start = time.perf_counter()
    real = outline.outline_features(reference.images)
    seconds = time.perf_counter() - start
    print(f"{len(reference)} reference slices at {args.size} px: features in {seconds:.1f} s\n")
    print("| set | n | atypical, same level [95% CI] | any level | pieces / holes / excess |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        pick = spread_pick(train.subjects, args.n, seed)
        row(
            f"floor: train, pick {seed}",
            train.images[pick],
            train.positions[pick],
            real,
            reference.positions,
        )
    row("real validate", validate.images, validate.positions, real, reference.positions)
    for name, defect in perturb.PERTURBATIONS.items():
        broken = defect(validate.images, torch.Generator().manual_seed(0))
        row(
            f"validate, {perturb.PERTURBATION_NOTES[name]}",
            broken,
            validate.positions,
            real,
            reference.positions,
        )
    print("\n| threshold | real train slices: (components, holes) |\n|---|---|")
    thresholds(train.images)


if __name__ == "__main__":
    main()
