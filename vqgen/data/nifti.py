"""A folder tree of 3-D MRI volumes: NIfTI (.nii, .nii.gz) and Analyze (.hdr/.img pairs).

One file is one subject; subjects are split 80/10/10 by a seeded shuffle. Each volume is
turned to the closest canonical (RAS) orientation and cut into axial slices, shown as
radiologists view them: the front of the head at the top, the patient's right on the left.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from PIL import Image

from vqgen.data.dataset import (
    SliceDataset,
    make_dataset,
    preprocess,
    seeded_split,
    stack,
    warn_skipped,
)
from vqgen.errors import DataError

LAYOUT = "a folder of .nii, .nii.gz or Analyze .hdr/.img volumes (NIfTI)"
SUFFIXES = (".nii", ".nii.gz", ".hdr")
CLIP_PERCENTILES = (0.5, 99.5)
EMPTY_FRACTION = 0.01  # a slice with fewer pixels than this above 5% of the range is empty
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(SUFFIXES) and not name.startswith(".") and path.is_file()


def volumes(root: Path) -> list[Path]:
    """The volumes under `root`, sorted (an Analyze pair is listed by its .hdr)."""
    return sorted(p for p in root.rglob("*") if _is_volume(p))


def find_root(path: Path) -> Path | None:
    """`path` when its tree holds at least one volume."""
    if path.is_dir() and any(_is_volume(p) for p in path.rglob("*")):
        return path
    return None


def sources(root: Path) -> list[Path]:
    """Every volume, with the .img half of each Analyze pair."""
    files = volumes(root)
    images = [p.with_suffix(".img") for p in files if p.suffix.lower() == ".hdr"]
    return files + [p for p in images if p.exists()]


def subject_of(root: Path, path: Path) -> str:
    """The file's path under `root` without its extension, e.g. 'sub-01/anat/T1w'."""
    name = str(path.relative_to(root))
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_volume(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The non-empty axial slices of one volume as float32 [0, 1] images, and their z indices.

    Intensities are clipped to the volume's 0.5-99.5 percentiles and scaled to [0, 1].
    Raises DataError when the file is not a 3-D volume.
    """
    img = nib.load(path)
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = img.slicer[:, :, :, 0]
    if len(img.shape) != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {tuple(img.shape)}")
    img = nib.as_closest_canonical(img)
    vol = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))  # (X, Y, Z), RAS
    lo, hi = np.percentile(vol, CLIP_PERCENTILES)
    vol = np.clip((vol - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(vol)
    zx, zy = (float(z) for z in img.header.get_zooms()[:2])
    filled = (vol > 0.05).mean(axis=(0, 1))  # (Z,)
    zs = np.flatnonzero(filled >= EMPTY_FRACTION)
    slices = [_axial(vol[:, :, z], zx, zy) for z in zs]
    return slices, zs


def _axial(plane: np.ndarray, zx: float, zy: float) -> np.ndarray:
    """An (X, Y) RAS plane as an image: anterior at the top, the patient's right on the left,
    stretched to square pixels when the voxels are not square in-plane."""
    image = np.ascontiguousarray(np.flip(plane, (0, 1)).T)  # (Y, X): rows run anterior -> posterior
    if zx > 0 and zy > 0 and abs(zx - zy) > 1e-3 * max(zx, zy):
        h, w = image.shape
        unit = min(zx, zy)
        shape = (max(1, round(w * zx / unit)), max(1, round(h * zy / unit)))
        image = np.asarray(Image.fromarray(image).resize(shape, Image.Resampling.BILINEAR))
    return image


def volume_shape(path: Path) -> tuple[int, ...]:
    """The shape of a volume, from its header alone; a trailing axis of 1 does not count."""
    shape = tuple(nib.load(path).shape)
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def readable_volumes(paths: list[Path], strict: bool) -> list[Path]:
    """The volumes whose header reads and describes a 3-D volume of at least 2 slices a side.
    The others are skipped with one counted warning naming the first, or with `strict` are a
    DataError naming it; checked before the split, so that none of them empties a split."""
    good, bad, first_error = [], [], ""
    for path in paths:
        try:
            shape = volume_shape(path)
            if len(shape) != 3 or min(shape) < 2:
                raise DataError(f"{path}: expected a 3-D volume, got shape {shape}")
        except (*READ_ERRORS, DataError) as err:
            if strict:
                raise DataError(f"{path}: unusable volume ({err})") from err
            bad.append(path)
            first_error = first_error or str(err)
            continue
        good.append(path)
    if bad and not good:
        raise DataError(f"none of {len(bad)} volume(s) can be used, first: {first_error}")
    warn_skipped(bad, "unusable volumes (unreadable, not 3-D or flat)")
    return good


def load(root: Path, split: str, size: int, seed: int, strict: bool) -> SliceDataset:
    """The slices of this split's subjects; position = z normalised over the non-empty extent.

    Unreadable volumes, and volumes that are not 3-D or are flat, are dropped before the split
    is drawn (`readable_volumes`).
    """
    files = readable_volumes(volumes(root), strict)
    chosen = seeded_split(files, seed)[split]
    if not chosen:
        raise DataError(
            f"split '{split}' is empty: {len(files)} volume(s) under {root}, and a seeded "
            "80/10/10 split by subject needs at least 3"
        )
    slices, subjects, positions, paths, bad = [], [], [], [], []
    for path in chosen:
        try:
            planes, zs = read_volume(path)
        except READ_ERRORS as err:
            if strict:
                raise DataError(f"{path}: unreadable volume ({err})") from err
            bad.append(path)
            continue
        for plane, z in zip(planes, zs, strict=True):
            slices.append(preprocess(plane, size))
            subjects.append(subject_of(root, path))
            positions.append((z - zs[0]) / (zs[-1] - zs[0]) if len(zs) > 1 else 0.5)
            paths.append(f"{path}#z={z}")
    warn_skipped(bad, "unreadable volumes")
    return make_dataset(
        stack(slices, size),
        subjects,
        [-1] * len(slices),
        positions,
        paths,
        kind="nifti",
        split=split,
    )
