"""The run-to-run spread of a report's realism figures: `vqgen evaluate` of one run with
several seeds (the seed draws the samples and drives the C2ST classifier, KID's subsets and
the floor's pick of train slices; the feature net is the data's cached one).

    .venv/bin/python bench/eval_spread.py checkpoints/demo --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from vqgen.config import EvalConfig
from vqgen.evaluate import evaluate

MEASURES = ("kid", "fid", "precision", "recall", "density", "coverage", "sharpness")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    values: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"report-{seed}.json"
            report = evaluate(args.run, EvalConfig(seed=seed), out)
            for name, section in report["realism"].items():
                if name == "reference":
                    continue
                if name == "ms_ssim":
                    for set_name, value in section.items():
                        values.setdefault(("ms_ssim", set_name), []).append(value)
                    continue
                for scale in ("full", "half"):
                    accuracy = section["c2st"][scale]["accuracy"]
                    values.setdefault((f"c2st {scale}", name), []).append(accuracy)
                for measure in MEASURES:
                    values.setdefault((measure, name), []).append(section[measure])
    sets = ["samples", "reconstructions", "floor"]
    print(f"| measure | {' | '.join(sets)} |")
    print("|---" * (len(sets) + 1) + "|")
    for measure in ("c2st full", "c2st half", *MEASURES, "ms_ssim"):
        cells = []
        for name in sets:
            v = values.get((measure, name), [])
            cells.append(f"{statistics.mean(v):.3g} ± {statistics.stdev(v):.2g}" if v else "-")
        print(f"| {measure} | {' | '.join(cells)} |")
    for name in sets:
        for scale in ("full", "half"):
            each = ", ".join(f"{v:.3f}" for v in values.get((f"c2st {scale}", name), []))
            print(f"C2ST accuracy of {name} at {scale} scale, seed by seed: {each}")
    if ("ms_ssim", "real") in values:
        v = values[("ms_ssim", "real")]
        print(f"\nMS-SSIM of real pairs: {statistics.mean(v):.3g} ± {statistics.stdev(v):.2g}")


if __name__ == "__main__":
    main()
