"""Any folder tree of PNG/JPEG slices, for data in no known layout.

Files are split 80/10/10 by a seeded shuffle; subject = file stem; no labels or positions.
OASIS segmentation masks (in keras_png_slices_seg_* folders) are never read as slices.
"""

from __future__ import annotations

from pathlib import Path

from vqgen.data import oasis
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
    """`path` when its tree holds at least one image; refused when all are OASIS masks."""
    if not path.is_dir() or not list_images(path):
        return None
    if not sources(path):
        raise DataError(
            f"{path} holds only OASIS segmentation masks ({oasis.MASK_PREFIX}_*), not slices; "
            "give --data the folder that holds keras_png_slices_{train,validate,test}"
        )
    return path


def sources(root: Path) -> list[Path]:
    """Every image under `root` but the OASIS masks."""
    return [p for p in list_images(root) if not oasis.is_mask(p)]


def load(root: Path, split: str, size: int, seed: int, strict: bool) -> SliceDataset:
    """This split's share of the images."""
    files = readable_images(sources(root), strict)
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
