"""Any folder tree of PNG/JPEG slices, for data in no known layout.

Files are split 80/10/10 by a seeded shuffle; subject = file stem; no labels or positions.
"""

from __future__ import annotations

from pathlib import Path

from vqgen.data.dataset import (
    SliceDataset,
    list_images,
    make_dataset,
    read_images,
    readable_images,
    seeded_split,
)
from vqgen.errors import DataError

LAYOUT = "any folder tree of .png/.jpg/.jpeg images (folder)"


def find_root(path: Path) -> Path | None:
    """`path` when its tree holds at least one image."""
    return path if path.is_dir() and list_images(path) else None


def sources(root: Path) -> list[Path]:
    """Every image under `root`."""
    return list_images(root)


def load(root: Path, split: str, size: int, seed: int, strict: bool) -> SliceDataset:
    """This split's share of the images."""
    files = readable_images(list_images(root), strict)
    paths = seeded_split(files, seed)[split]
    if not paths:
        raise DataError(
            f"split '{split}' is empty: {len(files)} image(s) under {root}, and a seeded "
            "80/10/10 split by file needs at least 3"
        )
    pixels, kept = read_images(paths, size, strict)
    return make_dataset(
        pixels,
        [paths[i].stem for i in kept],
        [-1] * len(kept),
        [float("nan")] * len(kept),
        [str(paths[i]) for i in kept],
        kind="folder",
        split=split,
    )
