"""The C2ST between two halves of the mni152 train split (24 virtual subjects each), over
several subject splits: how far one split strays from chance, beside its binomial interval.

    .venv/bin/python bench/c2st_floor.py --size 64 --seeds 0 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import statistics

from vqgen import realism
from vqgen.config import DataConfig
from vqgen.data import load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = parser.parse_args()
    train = load_data(DataConfig(source="mni152", size=args.size), "train")
    accuracies = []
    for seed in args.seeds:
        floor = realism.real_floor(train.images, train.subjects, seed=seed)
        accuracies.append(floor.accuracy)
        print(
            f"seed {seed}: accuracy {floor.accuracy:.3f} "
            f"[{floor.ci_low:.3f}, {floor.ci_high:.3f}]  AUC {floor.auc:.3f}",
            flush=True,
        )
    print(f"mean {statistics.mean(accuracies):.3f}, sd {statistics.stdev(accuracies):.3f}")


if __name__ == "__main__":
    main()
