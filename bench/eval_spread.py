"""The run-to-run spread of a report's realism figures: `vqgen evaluate` of one run with
several seeds (the seed draws the samples and drives the C2ST classifier, KID's subsets and
the floor's pick of train slices; the feature net is the data's cached one).

    python bench/eval_spread.py checkpoints/demo --seeds 0 1 2 [--split test] [--n-samples 256]

Prints a Markdown table (mean ± sd over the seeds) and the C2ST seed by seed; bench/README.md
keeps the last one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import vqgen
from vqgen.config import EVAL_SAMPLES

SETS = ("samples", "reconstructions", "floor")
MEASURES = ("kid", "fid", "precision", "recall", "density", "coverage", "sharpness")


def spread(values: list[float]) -> str:
    """'mean ± sd' (sd 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {sd:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="test")
    parser.add_argument("--n-samples", type=int, default=EVAL_SAMPLES)
    args = parser.parse_args()
    run = vqgen.load_run(args.run)
    values: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"report-{seed}.json"
            report = run.evaluate(args.split, n_samples=args.n_samples, seed=seed, out=out)
            realism = report["realism"]
            for name in SETS:
                if name not in realism:  # no samples: a run without a prior
                    continue
                for scale in ("full", "half"):
                    accuracy = realism[name]["c2st"][scale]["accuracy"]
                    values.setdefault((f"c2st {scale}", name), []).append(accuracy)
                for measure in MEASURES:
                    values.setdefault((measure, name), []).append(realism[name][measure])
            for set_name, value in realism.get("ms_ssim", {}).items():
                values.setdefault(("ms_ssim", set_name), []).append(value)
            for set_name, scores in realism.get("outline", {}).items():
                if isinstance(scores, dict):
                    atypical = scores["atypical"]
                    values.setdefault(("atypical outlines", set_name), []).append(atypical)
    print(f"| measure | {' | '.join(SETS)} |")
    print("|---" * (len(SETS) + 1) + "|")
    for measure in ("c2st full", "c2st half", *MEASURES, "ms_ssim", "atypical outlines"):
        cells = []
        for name in SETS:
            v = values.get((measure, name), [])
            cells.append(spread(v) if v else "-")
        print(f"| {measure} | {' | '.join(cells)} |")
    for name in SETS:
        for scale in ("full", "half"):
            each = ", ".join(f"{v:.3f}" for v in values.get((f"c2st {scale}", name), []))
            print(f"C2ST accuracy of {name} at {scale} scale, seed by seed: {each}")
    if ("ms_ssim", "real") in values:
        v = values[("ms_ssim", "real")]
        print(f"\nMS-SSIM of real pairs: {spread(v)}")


if __name__ == "__main__":
    main()
