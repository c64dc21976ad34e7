"""Power of the realism meter's C2ST and KID: can they tell real mni152 slices from slices with
a known defect (vqgen.realism.perturb), and do they call real slices real?

The reference is what `evaluate` compares with on mni152: the test split and its evaluation
subjects. The other set is the train split (other subjects than the reference's), as it is or
with one defect; it is split by its subjects, as samples would be split slice by slice. A
perfect "reconstruction" (the reference itself, paired) must score 0.5.

    python bench/c2st_power.py --size 64 [--seeds 0 1 2] [--figure OUT.png]
    python bench/c2st_power.py --size 32 --sets real blur      # a quick check that it runs

Prints a Markdown table; bench/README.md keeps the last one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vqgen import plots, realism
from vqgen.config import DataConfig
from vqgen.data import load_data, load_reference
from vqgen.realism.perturb import PERTURBATION_NOTES, PERTURBATIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--other", type=int, default=1152, help="train slices in the other set")
    parser.add_argument("--figure", help="save a figure of each defect here")
    choices = ["real", *PERTURBATIONS, "paired"]
    parser.add_argument("--sets", nargs="+", choices=choices, default=choices, help="rows to run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = DataConfig(source="mni152")
    reference = load_reference(data, load_data(data, "test", args.size))
    train = load_data(data, "train", args.size)
    real, real_groups = reference.images, reference.subjects
    other, other_groups = train.images[: args.other], train.subjects[: args.other]
    sets = {"real (train split)": other} if "real" in args.sets else {}
    gen = torch.Generator().manual_seed(0)
    sets.update({name: fn(other, gen) for name, fn in PERTURBATIONS.items() if name in args.sets})
    if args.figure:
        shown = torch.arange(6) * (len(other) // 6) + torch.arange(6) * 4  # bottom to top
        plots.rows_figure([(n, x[shown]) for n, x in sets.items()], Path(args.figure), "defects")
    print(f"reference {len(real)} slices ({len(set(real_groups))} subjects), other {len(other)}")
    print("| set | full-scale C2ST | half-scale C2ST | KID | seconds |")
    print("| --- | --- | --- | ---: | ---: |")
    net = realism.train_feature_net(train, seed=0, steps=500)
    real_features = realism.extract_features(net, real)
    for name, x in sets.items():
        start = time.perf_counter()
        cells = []
        for scale in (1, 2):
            runs = [
                realism.c2st(real, real_groups, x, other_groups, s, scale=scale) for s in args.seeds
            ]
            acc = torch.tensor([r.accuracy for r in runs])
            spread = f" ± {acc.std():.3f}" if len(runs) > 1 else ""
            cells.append(f"{acc.mean():.3f}{spread} [{runs[0].ci_low:.2f}, {runs[0].ci_high:.2f}]")
        kid = realism.feature_distances(real_features, realism.extract_features(net, x))["kid"]
        note = PERTURBATION_NOTES.get(name, name)
        print(
            f"| {note} | {cells[0]} | {cells[1]} | {kid:.3f} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )
    if "paired" not in args.sets:
        return
    start = time.perf_counter()
    same = realism.c2st(real, real_groups, real.clone(), None, 0, paired=True)
    print(
        f"| the reference itself, paired | {same.accuracy:.3f} [{same.ci_low:.2f}, "
        f"{same.ci_high:.2f}] | | | {time.perf_counter() - start:.0f} |"
    )


if __name__ == "__main__":
    main()
