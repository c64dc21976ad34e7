"""ADNI 2D slices as distributed for COMP3710: 256 wide x 240 high JPEGs.

    AD_NC/{train,test}/{AD,NC}/PATIENT_SLICE.jpeg     e.g. AD_NC/train/AD/218391_78.jpeg

label AD = 1, NC = 0. Test is the given folder; validate is a seeded 10% of the train
*patients* (never single slices, which would leak a patient's neighbouring slices), and train
is the rest.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vqgen.data.dataset import (
    DataWarning,
    SliceDataset,
    list_images,
    make_dataset,
    normalise_per_group,
    read_images,
    readable_images,
    root_here_or_below,
)
from vqgen.errors import DataError

LAYOUT = "AD_NC/{train,test}/{AD,NC}/PATIENT_SLICE.jpeg (ADNI)"
CLASSES = ("NC", "AD")  # label = index
NAME = re.compile(r"([^_]+)_(\d+)")  # the file stem: patient id, slice number
VALIDATE_FRACTION = 0.1


class Item(NamedTuple):
    path: Path
    patient: str
    slice: int
    label: int


def _is_root(path: Path) -> bool:
    return any((path / "train" / c).is_dir() for c in CLASSES)


def find_root(path: Path) -> Path | None:
    """The AD_NC folder: `path` itself or one of its children."""
    return root_here_or_below(path, _is_root)


def sources(root: Path) -> list[Path]:
    """Every image file of train/ and test/."""
    return [
        p
        for folder in ("train", "test")
        for c in CLASSES
        for p in list_images(root / folder / c, recursive=False)
    ]


def _scan(folder: Path, strict: bool) -> list[Item]:
    """The slices of train/ or test/, each with its patient, slice number and label."""
    items = []
    for label, name in enumerate(CLASSES):
        for path in readable_images(list_images(folder / name, recursive=False), strict):
            match = NAME.fullmatch(path.stem)
            if match is None:
                raise DataError(
                    f"{path}: no patient id in the file name; expected PATIENT_SLICE.jpeg "
                    "(e.g. 218391_78.jpeg)"
                )
            items.append(Item(path, match[1], int(match[2]), label))
    return sorted(items, key=lambda it: (it.patient, it.slice, it.label))


def validate_patients(items: list[Item], seed: int) -> set[str]:
    """A seeded 10% of the patients of each class (at least one patient in all)."""
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for label in range(len(CLASSES)):
        patients = sorted({it.patient for it in items if it.label == label})
        k = round(VALIDATE_FRACTION * len(patients))
        if k:
            chosen.update(str(p) for p in rng.choice(patients, k, replace=False))
    patients = sorted({it.patient for it in items})
    if not chosen and patients:
        chosen.add(str(rng.choice(patients)))
    return chosen


def load(root: Path, split: str, size: int, seed: int, strict: bool) -> SliceDataset:
    """One split; position = slice number normalised per patient."""
    train, test = _scan(root / "train", strict), _scan(root / "test", strict)
    shared = {it.patient for it in train} & {it.patient for it in test}
    if shared:
        warnings.warn(
            f"{len(shared)} ADNI patient(s) are in both train and test, first: {min(shared)} "
            f"({root})",
            DataWarning,
            2,
        )
    if split == "test":
        items, folder = test, root / "test"
    else:
        held_out = validate_patients(train, seed)
        items = [it for it in train if (it.patient in held_out) == (split == "validate")]
        folder = root / "train"
    if not items:
        raise DataError(
            f"split '{split}' is empty: no PATIENT_SLICE.jpeg images in {folder}/AD, NC"
        )
    patients = [it.patient for it in items]
    positions = normalise_per_group(patients, [it.slice for it in items])
    pixels, kept = read_images([it.path for it in items], size, strict)
    return make_dataset(
        pixels,
        [patients[i] for i in kept],
        [items[i].label for i in kept],
        positions[kept],
        [str(items[i].path) for i in kept],
        label_names=CLASSES,
        kind="adni",
        split=split,
    )
