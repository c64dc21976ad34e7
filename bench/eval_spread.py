"""The run-to-run spread of a report's realism figures, and how the report's time grows with
the train split.

    python bench/eval_spread.py checkpoints/demo --seeds 0 1 2 [--split test] [--n-samples 256]
    python bench/eval_spread.py --make-adni DIR 150 34      # an ADNI layout: train, test patients
    python bench/eval_spread.py RUN --timed DIR DIR_HALF    # `vqgen evaluate` against each tree

Spread: `vqgen evaluate` of one run with several seeds (the seed draws the samples and drives
the C2ST classifier, KID's subsets and the floor's pick of train slices; the feature net is the
data's cached one); prints a Markdown table (mean ± sd over the seeds) and the C2ST seed by
seed. `--make-adni` writes mni152 virtual subjects as an ADNI tree (AD_NC/{train,test}/{AD,NC},
24 slices of 256x240 a patient, odd patients AD); the train patients are numbered from 0, so a
tree of 75 holds the first half of one of 150, and the test patients are the same in both.
`--timed`: the whole `vqgen evaluate` of RUN, a process each, against each tree (`--data`), and
every phase it printed. bench/README.md keeps the last tables.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

import vqgen
from vqgen.config import EVAL_SAMPLES

SETS = ("samples", "reconstructions", "floor")
MEASURES = ("kid", "fid", "precision", "recall", "density", "coverage", "sharpness")


def spread(values: list[float]) -> str:
    """'mean ± sd' (sd 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {sd:.2g}"


def make_adni(root: Path, train_patients: int, test_patients: int) -> None:
    """mni152 virtual subjects written as an ADNI tree (see the module's docstring)."""
    from vqgen.data import mni152

    for split, count, first in (("train", train_patients, 0), ("test", test_patients, 5000)):
        slices = mni152.fresh_train_subjects(count, first, 256, 0)
        names = sorted(set(slices.subjects), key=lambda name: int(name.rsplit("-", 1)[-1]))
        images = slices.pixels[:, 0].numpy()
        for i, (image, subject) in enumerate(zip(images, slices.subjects, strict=True)):
            patient = 100000 + first + names.index(subject)
            folder = root / "AD_NC" / split / ("AD" if patient % 2 else "NC")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[8:248]).save(folder / f"{patient}_{i}.jpeg", quality=95)
        print(f"{split}: {len(slices)} slices of {count} patients in {root / 'AD_NC' / split}")


def timed(run: Path, trees: list[Path], split: str, n_samples: int) -> None:
    """`vqgen evaluate` of `run` against each tree, a process each: its wall time and phases."""
    for tree in trees:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "vqgen", "evaluate", "--run", str(run), "--split"]
            command += [split, "--n-samples", str(n_samples), "--data", str(tree)]
            start = time.perf_counter()
            done = subprocess.run(
                [*command, "--out", f"{tmp}/report.json"], capture_output=True, text=True
            )
            seconds = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"vqgen evaluate against {tree} failed:\n{done.stderr}")
        train = sum(1 for _ in (tree / "AD_NC" / "train").rglob("*.jpeg"))
        print(f"\n{tree}: {train} train slices, evaluate took {seconds:.0f} s")
        print("".join(line + "\n" for line in done.stderr.splitlines() if "evaluate:" in line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="test")
    parser.add_argument("--n-samples", type=int, default=EVAL_SAMPLES)
    parser.add_argument("--make-adni", nargs=3, metavar=("DIR", "TRAIN", "TEST"))
    parser.add_argument("--timed", type=Path, nargs="+", metavar="DIR")
    args = parser.parse_args()
    if args.make_adni:
        root, train, test = args.make_adni
        return make_adni(Path(root), int(train), int(test))
    if args.run is None:
        parser.error("RUN is needed, except with --make-adni")
    if args.timed:
        return timed(args.run, args.timed, args.split, args.n_samples)
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
