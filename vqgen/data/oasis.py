"""OASIS brain MRI as preprocessed for COMP3710: 256 x 256 8-bit grey PNG slices.

    keras_png_slices_{train,validate,test}/case_XXX_slice_Y.nii.png

The `keras_png_slices_seg_*` folders beside them hold segmentation masks and are never read.
The splits are the given folders; subject = case_XXX; there are no labels.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from vqgen.data.dataset import (
    SPLITS,
    DataWarning,
    SliceDataset,
    list_images,
    make_dataset,
    normalise_per_group,
    read_images,
    root_here_or_below,
)
from vqgen.errors import DataError

LAYOUT = "keras_png_slices_{train,validate,test}/case_XXX_slice_Y.nii.png (OASIS)"
FOLDERS = {split: f"keras_png_slices_{split}" for split in SPLITS}
MASK_PREFIX = "keras_png_slices_seg"
NAME = re.compile(r"(case_\d+)_slice_(\d+)\.nii\.png")


def is_mask(path: Path) -> bool:
    """Whether an image file lies in a keras_png_slices_seg_* folder: a mask, not a slice."""
    return any(part.startswith(MASK_PREFIX) for part in path.parent.parts)


def _is_root(path: Path) -> bool:
    return any((path / folder).is_dir() for folder in FOLDERS.values())


def find_root(path: Path) -> Path | None:
    """The folder holding the keras_png_slices_* folders: `path` or one of its children."""
    return root_here_or_below(path, _is_root)


def sources(root: Path) -> list[Path]:
    """Every image file of the three split folders (not the masks)."""
    return [p for folder in FOLDERS.values() for p in list_images(root / folder, recursive=False)]


def _parse(path: Path) -> tuple[str, int]:
    """(subject, slice index) from a file name like case_001_slice_12.nii.png."""
    match = NAME.fullmatch(path.name)
    if match is None:
        raise DataError(f"{path}: expected an OASIS file name like case_001_slice_0.nii.png")
    return match[1], int(match[2])


def _subjects(folder: Path) -> set[str]:
    """Subjects named in a split folder (file names only, nothing decoded)."""
    names = (NAME.fullmatch(p.name) for p in list_images(folder, recursive=False))
    return {m[1] for m in names if m}


def _warn_shared_subjects(root: Path, split: str, subjects: set[str]) -> None:
    """Subjects in two splits make validation and test scores optimistic; say so."""
    for other in SPLITS:
        shared = subjects & _subjects(root / FOLDERS[other]) if other != split else set()
        if shared:  # one text for the pair, whichever split is loaded: it is shown once
            pair = " and ".join(s for s in SPLITS if s in (split, other))
            warnings.warn(
                f"{len(shared)} subject(s) are in both the OASIS {pair} splits, "
                f"first: {min(shared)} ({root})",
                DataWarning,
                3,
            )


def load(root: Path, split: str, size: int, seed: int, strict: bool) -> SliceDataset:
    """One split folder; position = slice index normalised per subject. `seed` is unused: the
    split is given by the folders."""
    folder = root / FOLDERS[split]
    paths = list_images(folder, recursive=False) if folder.is_dir() else []
    if not paths:
        raise DataError(f"split '{split}' is empty: no case_XXX_slice_Y.nii.png images in {folder}")
    parsed = {p: _parse(p) for p in paths}
    paths.sort(key=lambda p: parsed[p])  # subject, then slice order
    subjects = [parsed[p][0] for p in paths]
    positions = normalise_per_group(subjects, [parsed[p][1] for p in paths])
    _warn_shared_subjects(root, split, set(subjects))
    pixels, kept = read_images(paths, size, strict)
    return make_dataset(
        pixels,
        [subjects[i] for i in kept],
        [-1] * len(kept),
        positions[kept],
        [str(paths[i]) for i in kept],
        kind="oasis",
        split=split,
    )
