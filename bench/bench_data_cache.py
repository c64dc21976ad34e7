"""Time a cold load (decode or generate) against a cached one, for mni152 and an OASIS folder.

    python bench/bench_data_cache.py [--size 128] [--cases 20] [--slices 32]

Uses a fresh temporary cache folder (VQGEN_CACHE), so the first load of each source is cold.
Prints a Markdown table; bench/README.md keeps the last one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vqgen


def write_oasis(root: Path, cases: int, slices: int) -> Path:
    """An OASIS-layout train folder of 256 x 256 8-bit PNG slices (noisy ellipses)."""
    folder = root / "keras_png_slices_data" / "keras_png_slices_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    for case in range(1, cases + 1):
        for s in range(slices):
            r = ((y - 128) / rng.uniform(80, 110)) ** 2 + ((x - 128) / rng.uniform(70, 95)) ** 2
            image = np.where(r < 1, 120 + 100 * rng.random((256, 256)), 0).astype(np.uint8)
            Image.fromarray(image).save(folder / f"case_{case:03d}_slice_{s}.nii.png")
    return root / "keras_png_slices_data"


def timed(source: str | Path, size: int) -> tuple[int, float, float]:
    """(slices, cold seconds, cached seconds) for the train split, each including one pass
    over the pixels (so a lazily mapped cache file is really read)."""
    start = time.perf_counter()
    cold = vqgen.load_data(source, "train", size=size)
    cold.images.mean()
    middle = time.perf_counter()
    warm = vqgen.load_data(source, "train", size=size)
    warm.images.mean()
    end = time.perf_counter()
    assert torch.equal(cold.pixels, warm.pixels)
    return len(cold), middle - start, end - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--slices", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VQGEN_CACHE"] = str(Path(tmp) / "cache")
        oasis = write_oasis(Path(tmp), args.cases, args.slices)
        rows = [("mni152 train", *timed("mni152", args.size))]
        rows.append(("OASIS train (256 px PNG)", *timed(oasis, args.size)))
    print(f"| source (size {args.size}) | slices | cold load s | cached load s | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, n, cold, warm in rows:
        print(f"| {name} | {n} | {cold:.2f} | {warm:.3f} | {cold / warm:.0f}x |")


if __name__ == "__main__":
    main()
