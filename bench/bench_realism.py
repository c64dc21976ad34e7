"""Time each realism metric on mni152 slices and show its run-to-run spread over seeds.

Real = n test slices; compared with n validate slices and n train slices (real vs real: the
floors; train has many subjects, as a generator's samples would) and with the validate slices
blurred by a Gaussian (sigma 1 pixel). The sets stay fixed; the seed
drives the feature net, the C2ST classifier, KID's subsets and MS-SSIM's pairs.

    .venv/bin/python bench/bench_realism.py --size 64 --n 192 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import torch
from torchvision.transforms.functional import gaussian_blur

from vqgen import realism
from vqgen.data import load_split

DISTANCES = ("kid", "fid", "precision", "recall", "density", "coverage")


def timed(times: dict[str, list[float]], name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    times[name].append(time.perf_counter() - start)
    return out


def pick(dataset, n: int):
    """The same n slices of a split on every run, with their subjects."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return dataset.images[order], [dataset.subjects[i] for i in order]


def one_seed(seed: int, sets: dict, train, args, times, values) -> None:
    """Every metric once for real vs each other set; times per call, values per set."""
    (real, real_groups), others = sets["real"], {k: v for k, v in sets.items() if k != "real"}
    net = timed(times, "feature net (train)", realism.train_feature_net, train, seed, args.steps)
    features = timed(
        times,
        "features (3 sets)",
        lambda: {name: realism.extract_features(net, x) for name, (x, _) in sets.items()},
    )
    for name, (x, groups) in others.items():
        dist = timed(
            times,
            "KID+FID+PRDC",
            realism.feature_distances,
            features["real"],
            features[name],
            seed=seed,
        )
        for key in DISTANCES:
            values[key][name].append(dist[key])
        test = timed(times, "C2ST", realism.c2st, real, real_groups, x, groups, seed)
        values["C2ST accuracy"][name].append(test.accuracy)
        values["C2ST AUC"][name].append(test.auc)
        ratio = timed(times, "sharpness", realism.sharpness_ratio, x, real)
        values["sharpness ratio"][name].append(ratio)
        div = timed(times, "MS-SSIM diversity", realism.ms_ssim_diversity, x, seed=seed)
        values["MS-SSIM diversity"][name].append(div)
    values["MS-SSIM diversity"]["real"].append(realism.ms_ssim_diversity(real, seed=seed))


def spread(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3g} ± {sd:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=192, help="slices a side (<= 192 for mni152)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500, help="feature-net training steps")
    args = parser.parse_args()
    splits = {s: load_split("mni152", s, size=args.size) for s in ("train", "validate", "test")}
    real, other = pick(splits["test"], args.n), pick(splits["validate"], args.n)
    blurred = (gaussian_blur(other[0], kernel_size=7, sigma=1.0), other[1])
    sets = {
        "real": real,
        "validate (8 subj.)": other,
        "train (48 subj.)": pick(splits["train"], args.n),
    }
    sets["validate blurred σ=1"] = blurred
    times: dict[str, list[float]] = defaultdict(list)
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for seed in args.seeds:
        one_seed(seed, sets, splits["train"], args, times, values)
    print(
        f"mni152, {args.size} px, {len(real[0])} test slices a side, seeds {args.seeds}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads\n"
    )
    print("| step | seconds per call (mean ± sd) |\n| --- | --- |")
    for name, ts in times.items():
        print(f"| {name} | {spread(ts)} |")
    columns = [c for c in sets if c != "real"]
    print(f"\n| metric | {' | '.join(columns)} |\n| --- |{' --- |' * len(columns)}")
    for metric, by_set in values.items():
        print(f"| {metric} | {' | '.join(spread(by_set[c]) for c in columns)} |")
    print(
        f"\nMS-SSIM diversity of the real test slices themselves: "
        f"{spread(values['MS-SSIM diversity']['real'])}"
    )


if __name__ == "__main__":
    main()
