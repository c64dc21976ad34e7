"""The samples of a trained run drawn at several temperatures (and top-k), each scored on the
validate split (the test split chooses nothing): one table row per setting.

    .venv/bin/python bench/sample_temperature.py RUN 1.0 0.9 0.8 0.9,16   # T or T,K

A temperature below 1 sharpens the prior's distribution towards its likelier codes: samples
closer to real slices, at some cost in diversity (the pairwise SSIM column, beside the real
slices' own). Reports and figures go to bench/out/temperature/RUN-NAME_SETTING/.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from vqgen.config import EVAL_SAMPLES, EvalConfig
from vqgen.evaluate import evaluate

OUT = Path(__file__).parent / "out" / "temperature"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("settings", nargs="+", help="temperature, or temperature,top-k")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "| run | temperature | top-k | nearest-real SSIM | memorised | C2ST | KID | FID | "
        "precision | recall | sharpness | pairwise SSIM samples / real |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for setting in args.settings:
        temperature, _, k = setting.partition(",")
        top_k = int(k) if k else None
        out = OUT / f"{args.run.name}_{setting}"
        cfg = EvalConfig("validate", EVAL_SAMPLES, float(temperature), top_k, args.seed)
        r = evaluate(args.run, cfg, out / "report.json")
        shutil.copy(args.run / "figures" / "eval_samples_nearest.png", out / "nearest.png")
        s, real = r["samples"], r["realism"]
        c, f = real["samples"], real["floor"]
        print(
            f"| {args.run.name} | {float(temperature):g} | {top_k or '-'} | "
            f"{s['nearest_real_ssim']['mean']:.3f} | {s['memorised']} | "
            f"{c['c2st']['full']['accuracy']:.2f} (floor {f['c2st']['full']['accuracy']:.2f}) | "
            f"{c['kid']:.3f} ± {c['kid_std']:.3f} | {c['fid']:.1f} | {c['precision']:.2f} | "
            f"{c['recall']:.2f} | {c['sharpness']:.2f} | "
            f"{s['diversity_pairwise_ssim']:.3f} / {s['real_pairwise_ssim']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
