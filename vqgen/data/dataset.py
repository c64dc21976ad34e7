"""What every data source shares: the SliceDataset type, the one preprocessing function that
turns any grey image into a square uint8 slice (so training and evaluation prepare data the same
way), reading image files and seeded splits. The decoded-slice cache is vqgen.data.cache.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vqgen.errors import DataError

SPLITS = ("train", "validate", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# PIL's errors for a truncated, corrupt or foreign file
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

T = TypeVar("T")


class DataWarning(UserWarning):
    """Input that vqgen skipped or that looks suspicious; loading goes on."""


@dataclass(eq=False)  # compared by identity: tensor fields have no single truth value
class SliceDataset(torch.utils.data.Dataset):
    """2-D slices of one split, stored as uint8 to save memory."""

    pixels: Tensor  # (N, 1, S, S) uint8
    subjects: list[str]  # subject or patient id per slice
    labels: Tensor  # (N,) long, -1 where there is no label
    positions: Tensor  # (N,) float32 slice position in [0, 1], NaN where unknown
    paths: list[str]  # source of each slice, e.g. "scan.nii.gz#z=42"
    label_names: tuple[str, ...] = ()  # labels index this, e.g. ("NC", "AD")
    kind: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        if self.pixels.dtype != torch.uint8 or self.pixels.dim() != 4:
            shape = tuple(self.pixels.shape)
            raise ValueError(f"pixels must be (N, 1, S, S) uint8, got {self.pixels.dtype} {shape}")
        n = len(self.pixels)
        for name in ("subjects", "labels", "positions", "paths"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} slices")

    @property
    def images(self) -> Tensor:
        """All slices as float32 (N, 1, S, S) in [0, 1]."""
        return self.pixels.float() / 255

    def subset(self, keep: Tensor) -> SliceDataset:
        """The slices where the boolean `keep` (N,) is true, e.g. those of one label."""
        idx = keep.nonzero()[:, 0].tolist()
        return dataclasses.replace(
            self,
            pixels=self.pixels[idx],
            subjects=[self.subjects[i] for i in idx],
            labels=self.labels[idx],
            positions=self.positions[idx],
            paths=[self.paths[i] for i in idx],
        )

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.pixels[i].float() / 255, self.labels[i], self.positions[i]

    def to(self, device: torch.device) -> SliceDataset:
        """The slices on `device`, still as uint8 (a quarter of their floats' memory)."""
        return dataclasses.replace(
            self,
            pixels=self.pixels.to(device),
            labels=self.labels.to(device),
            positions=self.positions.to(device),
        )

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The slices at `index` (a tensor on their device) as floats in [0, 1], with their
        labels and positions: what `__getitem__` gives, stacked."""
        return self.pixels[index].float() / 255, self.labels[index], self.positions[index]


def concat(first: SliceDataset, second: SliceDataset) -> SliceDataset:
    """The slices of `first`, then those of `second` (same size, same kind of labels)."""
    if first.pixels.shape[1:] != second.pixels.shape[1:] or first.label_names != second.label_names:
        raise ValueError("concat needs datasets of one size and one set of label names")
    return dataclasses.replace(
        first,
        pixels=torch.cat([first.pixels, second.pixels]),
        subjects=first.subjects + second.subjects,
        labels=torch.cat([first.labels, second.labels]),
        positions=torch.cat([first.positions, second.positions]),
        paths=first.paths + second.paths,
    )


def make_dataset(
    pixels: np.ndarray,
    subjects: Sequence[str],
    labels: Sequence[int],
    positions: Sequence[float],
    paths: Sequence[str],
    *,
    label_names: tuple[str, ...] = (),
    kind: str,
    split: str,
) -> SliceDataset:
    """A SliceDataset from per-slice lists and (N, S, S) uint8 pixels."""
    return SliceDataset(
        pixels=torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1),  # (N, 1, S, S)
        subjects=list(subjects),
        labels=torch.tensor(list(labels), dtype=torch.long),
        positions=torch.tensor(list(positions), dtype=torch.float32),
        paths=list(paths),
        label_names=label_names,
        kind=kind,
        split=split,
    )


# --- preprocessing ------------------------------------------------------------------------


def to_unit(image: np.ndarray) -> np.ndarray:
    """Grey levels as float32 in [0, 1].

    8-bit images and floats already in [0, 1] keep their levels, so slices of one scan stay
    comparable. Anything else (16-bit, other floats) is scaled by its 0.5-99.5 percentiles: a
    few hot pixels cannot darken the image and 12-bit data in a 16-bit file is not clipped.
    An unsigned image of one grey level has no range of its own and is placed on its type's.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    a = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if image.dtype == bool or (
        np.issubdtype(image.dtype, np.floating) and 0 <= a.min() <= a.max() <= 1
    ):
        return a
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        lo, hi = a.min(), a.max()
    if hi <= lo and np.issubdtype(image.dtype, np.unsignedinteger):
        # one grey level has no range to scale by: place it on the type's own (16-bit white = 1)
        return a / np.float32(np.iinfo(image.dtype).max)
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0, 1)


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """A grey 2-D image of any dtype and shape -> (size, size) uint8.

    Pads to a centred square with background 0, keeping the aspect ratio (ADNI's 256 x 240
    slices are not stretched), then resizes with antialiasing (PIL's bicubic filter widens
    with the reduction factor).
    """
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    unit = to_unit(image)
    h, w = unit.shape
    side = max(h, w)
    if h != w:
        square = np.zeros((side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = unit
        unit = square
    if side != size:
        resized = Image.fromarray(unit).resize((size, size), Image.Resampling.BICUBIC)
        unit = np.asarray(resized)
    return np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)


def decode_image(path: Path) -> np.ndarray:
    """An image file as a grey 2-D array; 16-bit and float images keep their depth."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return np.asarray(img)
        return np.asarray(img.convert("L"))  # RGB, palette, 1-bit, LA...: proper grey levels


def warn_skipped(bad: Sequence[Path], what: str = "unreadable images") -> None:
    """One warning line for all files that could not be used."""
    if bad:
        warnings.warn(f"skipped {len(bad)} {what}, first: {bad[0]}", DataWarning, 3)


def readable_images(paths: Sequence[Path], strict: bool) -> list[Path]:
    """The files that open as images. Checked before a split is drawn, so that an unreadable
    file never empties a split: the others are skipped with one counted warning naming the
    first, or with `strict` are a DataError naming it."""
    good, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()  # the header and, for PNG, the checksums: no decoding
        except IMAGE_ERRORS as err:
            if strict:
                raise DataError(f"{path}: unreadable image ({err})") from err
            bad.append(path)
            continue
        good.append(path)
    if bad and not good:
        raise DataError(f"none of {len(bad)} image(s) could be read, first: {bad[0]}")
    warn_skipped(bad)
    return good


def read_images(paths: Sequence[Path], size: int, strict: bool) -> tuple[np.ndarray, list[int]]:
    """Decode and preprocess `paths` -> ((N, size, size) uint8, indices of the files read).

    An unreadable file is skipped with one counted warning, or with `strict` is a DataError
    naming it; so is the first of them when none of the files can be read.
    """
    slices, kept, bad = [], [], []
    for i, path in enumerate(paths):
        try:
            image = decode_image(path)
        except IMAGE_ERRORS as err:
            if strict:
                raise DataError(f"{path}: unreadable image ({err})") from err
            bad.append(path)
            continue
        slices.append(preprocess(image, size))
        kept.append(i)
    if bad and not kept:  # nothing left: an error that names a file, not just an empty split
        raise DataError(f"none of {len(bad)} image(s) could be read, first: {bad[0]}")
    warn_skipped(bad)
    return stack(slices, size), kept


def stack(slices: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(N, size, size) uint8, also for N = 0."""
    return np.stack(slices) if slices else np.zeros((0, size, size), np.uint8)


def root_here_or_below(path: Path, is_root: Callable[[Path], bool]) -> Path | None:
    """`path` if it is a dataset root, else the child folder that is, else None: users may
    point at the dataset folder or at the folder that holds it. A folder that holds several
    is refused, naming them: which one was meant is the user's to say."""
    if not path.is_dir():
        return None
    if is_root(path):
        return path
    roots = [c for c in sorted(path.iterdir()) if c.is_dir() and is_root(c)]
    if len(roots) > 1:
        names = ", ".join(r.name for r in roots)
        raise DataError(f"{path} holds several datasets ({names}); give the one you mean")
    return roots[0] if roots else None


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """PNG/JPEG files under `folder`, sorted, skipping hidden files such as macOS '._x.png'."""
    found = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def normalise_per_group(groups: Sequence[str], index: Sequence[float]) -> np.ndarray:
    """Each item's index mapped to [0, 1] within its group; a group of one item gets 0.5."""
    index = np.asarray(index, dtype=np.float64)
    out = np.full(len(index), 0.5, np.float32)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for rows in members.values():
        lo, hi = index[rows].min(), index[rows].max()
        if hi > lo:
            out[rows] = (index[rows] - lo) / (hi - lo)
    return out


def seeded_split(items: Sequence[T], seed: int) -> dict[str, list[T]]:
    """A seeded 80/10/10 split of `items`, at least one per split once there are three."""
    n = len(items)
    n_small = max(1, round(0.1 * n)) if n >= 3 else 0
    order = np.random.default_rng(seed).permutation(n)
    ranges = {"validate": order[:n_small], "test": order[n_small : 2 * n_small]}
    ranges["train"] = order[2 * n_small :]
    return {split: [items[i] for i in sorted(ranges[split])] for split in SPLITS}
