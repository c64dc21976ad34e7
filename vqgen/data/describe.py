"""The `data` verb: what a dataset holds, split by split, and an optional preview figure."""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vqgen import plots
from vqgen.config import DataConfig
from vqgen.data import SPLITS, DataWarning, SliceDataset, detect_kind, load_data
from vqgen.errors import DataError, UsageError
from vqgen.runlock import path_error

PREVIEW_PER_SPLIT = 8


@dataclass
class DataSummary:
    kind: str
    rows: list[tuple[str, ...]]  # split, images, subjects, labels, size, intensity


def label_counts(dataset: SliceDataset) -> str:
    """e.g. 'AD 120, NC 140', or '-' for unlabelled data."""
    counts = Counter(dataset.labels.tolist())
    if not dataset.label_names or set(counts) == {-1}:
        return "-"
    return ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(dataset.label_names))


def check_preview(preview: Path) -> None:
    """A preview file vqgen can write: not a folder, in a folder that exists and takes files
    (tried before any slice is loaded)."""
    if preview.is_dir():
        raise UsageError(f"--preview {preview} is a folder; name a PNG file, e.g. {preview}/x.png")
    if preview.parent.exists() and not preview.parent.is_dir():
        raise UsageError(f"--preview {preview}: {preview.parent} is a file, not a folder")
    if not preview.parent.is_dir():
        raise UsageError(f"--preview {preview}: the folder {preview.parent} does not exist")
    try:
        tempfile.TemporaryFile(dir=preview.parent).close()
    except OSError as err:
        raise path_error(preview, err, "--preview") from None


def describe_dataset(data: DataConfig, size: int, preview: Path | None = None) -> DataSummary:
    """Load every split at `size` (through the cache) and summarise it; optionally write a
    preview grid."""
    if preview is not None:
        check_preview(preview)
    kind = detect_kind(data.source) if data.kind == "auto" else data.kind
    splits, missing = {}, {}
    for split in SPLITS:
        try:
            splits[split] = load_data(replace(data, kind=kind), split, size)
        except DataError as err:  # e.g. an ADNI tree without test/: training still works
            missing[split] = err
    if not splits:
        raise next(iter(missing.values()))
    for split, err in missing.items():
        warnings.warn(
            f"the {split} split is missing ({err}); training needs train and validate, "
            f"`evaluate --split {split}` needs it",
            DataWarning,
            stacklevel=2,
        )
    rows = []
    for split in SPLITS:
        if split in missing:
            rows.append((split, "0", "0", "-", "-", "-"))
            continue
        ds = splits[split]
        pixels = ds.pixels
        rows.append(
            (
                split,
                str(len(ds)),
                str(len(set(ds.subjects))),
                label_counts(ds),
                f"{pixels.shape[-1]}x{pixels.shape[-2]}",
                f"{pixels.min().item() / 255:.2f}-{pixels.max().item() / 255:.2f}",
            )
        )
    if preview is not None:
        generator = torch.Generator().manual_seed(data.seed)
        figure_rows = []
        for split, ds in splits.items():  # the splits there are
            pick = torch.randperm(len(ds), generator=generator)[:PREVIEW_PER_SPLIT]
            figure_rows.append((split, ds.pixels[pick].float() / 255))  # (n, 1, S, S)
        plots.rows_figure(figure_rows, preview, caption=f"{data.source} ({kind}), random slices")
    return DataSummary(kind, rows)
