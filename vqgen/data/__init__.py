"""Brain MRI slices from any supported source, as one SliceDataset type.

    ds = load_data(DataConfig("mni152"), "train", size=128)      # the embedded default
    ds = load_data(DataConfig("~/data/AD_NC"), "test", size=128)  # layout detected
    images = ds.images                                      # (N, 1, 128, 128) float32 in [0, 1]

`vqgen.load_data` is the same with keyword arguments, for use from Python.

Each source module (oasis, adni, nifti, folder, mni152) has `load(root, split, size, seed,
strict)`; this module finds the source and its root, and keeps decoded slices in a cache so
that a second load of the same data at the same size does not decode again. The `vqgen data`
verb, which summarises a dataset, is `describe.py`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from vqgen.bounds import slice_size
from vqgen.config import DataConfig
from vqgen.data import adni, folder, mni152, nifti, oasis
from vqgen.data.cache import cache_dir, cache_key, cached
from vqgen.data.dataset import SPLITS, DataWarning, SliceDataset, concat, preprocess
from vqgen.errors import DataError, UsageError

__all__ = [
    "KINDS",
    "SPLITS",
    "DataWarning",
    "SliceDataset",
    "cache_dir",
    "detect_kind",
    "load_data",
    "load_reference",
    "preprocess",
    "resolve",
]

SOURCES = {"oasis": oasis, "adni": adni, "nifti": nifti, "folder": folder, "mni152": mni152}
DETECT_ORDER = ("oasis", "adni", "nifti", "folder")  # most specific layout first
KINDS = ("auto", *SOURCES)


def _layouts() -> str:
    return "; ".join(SOURCES[kind].LAYOUT for kind in (*DETECT_ORDER, "mni152"))


def resolve(source: str | Path, kind: str = "auto") -> tuple[str, Path | None]:
    """(kind, dataset root) for `source`; the root is None for the embedded mni152.

    A path may be the dataset root itself or a folder one level above it.
    """
    if kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if str(source) == "mni152" and kind in ("auto", "mni152"):
        return "mni152", None
    if kind == "mni152":
        raise UsageError(f"--kind mni152 takes the source name 'mni152', got '{source}'")
    if str(source) == "mni152" and not Path(source).exists():
        raise UsageError(f"--kind {kind} needs --data, the dataset's folder")
    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(f"data path '{path}' does not exist")
    for name in DETECT_ORDER if kind == "auto" else (kind,):
        root = SOURCES[name].find_root(path)
        if root is not None:
            return name, root.resolve()
    if kind != "auto":
        raise UsageError(f"{path}: not {LAYOUT_NAMES[kind]}; expected {SOURCES[kind].LAYOUT}")
    raise UsageError(f"{path}: no dataset layout that vqgen reads; expected one of: {_layouts()}")


LAYOUT_NAMES = {  # each --kind's layout, with its article
    "oasis": "an OASIS layout",
    "adni": "an ADNI layout",
    "nifti": "a NIfTI layout",
    "folder": "a folder of images",
}


def detect_kind(source: str | Path) -> str:
    """'mni152' for that name, else oasis, adni, nifti or folder from the files' layout."""
    return resolve(source)[0]


def load_data(data: DataConfig, split: str, size: int) -> SliceDataset:
    """One split of a dataset as (N, 1, size, size) slices, from the cache when it is fresh.

    `data.seed` drives the subject-level splits of sources without given folders and the
    mni152 subjects; with `data.strict`, an unreadable image is an error instead of a counted
    warning.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    slice_size("--size", size)
    name, root = resolve(data.source, data.kind)
    module = SOURCES[name]
    key = cache_key(
        module.sources(root),
        root,
        kind=name,
        root=str(root),
        split=split,
        size=size,
        seed=data.seed,
        strict=data.strict,
        generator=mni152.settings() if name == "mni152" else None,
    )
    dataset = cached(
        f"{name}-{split}-{size}px",
        key,
        lambda: module.load(root, split, size, data.seed, data.strict),
    )
    if len(dataset) == 0:
        raise DataError(f"split '{split}' is empty: no readable slices in {root or name}")
    if dataset.pixels.max() == 0:  # nothing to learn; SSIM and PSNR are undefined on it
        where = root or name
        warnings.warn(f"every slice of the {split} split of {where} is black", DataWarning, 2)
    return dataset


def load_reference(data: DataConfig, dataset: SliceDataset) -> SliceDataset:
    """The real slices that evaluate's realism measures compare with: `dataset` (a split of
    `data`, as `load_data` gave it), and for mni152's validate and test also its evaluation
    subjects (mni152.evaluation_subjects), which give the two-sample tests over 1,000 real
    slices. Real datasets: the split alone."""
    split, size = dataset.split, dataset.pixels.shape[-1]
    if resolve(data.source, data.kind)[0] != "mni152" or split == "train":
        return dataset
    settings = {**mni152.settings(), "evaluation_subjects": mni152.EVALUATION_SUBJECTS}
    key = cache_key(
        [],
        None,
        kind="mni152",
        split=f"{split}-eval",
        size=size,
        seed=data.seed,
        generator=settings,
    )
    extra = cached(
        f"mni152-{split}-eval-{size}px",
        key,
        lambda: mni152.evaluation_subjects(split, size, data.seed),
    )
    return concat(dataset, extra)
