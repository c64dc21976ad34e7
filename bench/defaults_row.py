"""One row of bench/defaults_128.sh's table: a run's validate report, both stages.

.venv/bin/python bench/defaults_row.py RUN NAME
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from demo_variants import scales  # bench/ is on the path when this script runs


def main(run: Path, name: str) -> None:
    r = json.loads((run / "report.json").read_text())
    steps = [
        json.loads((run / f"{stage}-last.json").read_text())["step"] for stage in ("vqvae", "prior")
    ]
    rec, realism = r["reconstruction"], r["realism"]
    s, c, f, o = (realism[k] for k in ("samples", "reconstructions", "floor", "outline"))
    print(
        "| setting | steps VQ-VAE / prior | SSIM | brain SSIM | recon KID | recon sharpness | "
        "prior NLL (bits) | sample KID | recall | sample C2ST full / half | atypical outlines |"
    )
    print(
        f"| {name} | {steps[0]} / {steps[1]} | {rec['ssim']['mean']:.3f} | "
        f"{rec['brain_ssim_mean']:.3f} | {c['kid']:.3f} | {c['sharpness']:.2f} | "
        f"{r['prior']['nll_bits']:.2f} | {s['kid']:.3f} | {s['recall']:.2f} | {scales(s)} | "
        f"{o['samples']['atypical']:.2f} |"
    )
    print(
        f"floor (real train slices): KID {f['kid']:.3f}, sharpness {f['sharpness']:.2f}, "
        f"recall {f['recall']:.2f}, C2ST {scales(f)}, "
        f"atypical outlines {o['floor']['atypical']:.2f}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
