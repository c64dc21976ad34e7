"""Tiny datasets in the real on-disk layouts, written as real image and volume files.

Sizes the layouts define are kept (OASIS 256 x 256 PNG, ADNI 256 wide x 240 high JPEG);
there are just fewer subjects and slices. Every builder returns the dataset root.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from vqgen.cli import main

OASIS_SPLITS = {"train": 3, "validate": 1, "test": 1}  # cases per split
ADNI_PATIENTS = {"train": 5, "test": 2}  # patients per class and folder


def brain_slice(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 grey slice: a noisy bright ellipse with a dark centre on a black background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = ((y - height / 2) / (0.4 * height)) ** 2 + ((x - width / 2) / (0.35 * width)) ** 2
    image = np.where(r < 1, 150 + 60 * rng.random((height, width)), 0)
    image = np.where(r < 0.1 * rng.uniform(0.5, 1.5), 40, image)
    return image.astype(np.uint8)


def make_oasis(
    root: Path, cases: dict[str, int] | None = None, slices: int = 3, size: int = 256
) -> Path:
    """root/keras_png_slices_data/keras_png_slices_{split}/case_XXX_slice_Y.nii.png, with
    mask folders keras_png_slices_seg_{split} beside them. Case numbers do not repeat."""
    data = root / "keras_png_slices_data"
    case = 0
    for split, n_cases in (cases or OASIS_SPLITS).items():
        images = data / f"keras_png_slices_{split}"
        masks = data / f"keras_png_slices_seg_{split}"
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for _ in range(n_cases):
            case += 1
            for s in range(slices):
                name = f"case_{case:03d}_slice_{s}.nii.png"
                Image.fromarray(brain_slice(size, size, 100 * case + s)).save(images / name)
                labels = (np.arange(size * size).reshape(size, size) % 4 * 85).astype(np.uint8)
                Image.fromarray(labels).save(masks / f"seg_{case:03d}_slice_{s}.nii.png")
    return data


def make_adni(root: Path, patients: dict[str, int] | None = None, slices: int = 3) -> Path:
    """root/AD_NC/{train,test}/{AD,NC}/PATIENT_SLICE.jpeg, 256 wide x 240 high."""
    data = root / "AD_NC"
    patient = 100000
    for split, n_patients in (patients or ADNI_PATIENTS).items():
        for label in ("AD", "NC"):
            folder = data / split / label
            folder.mkdir(parents=True)
            for _ in range(n_patients):
                patient += 7
                for s in range(slices):
                    image = brain_slice(240, 256, patient + s)
                    Image.fromarray(image).save(folder / f"{patient}_{78 + s}.jpeg", quality=90)
    return data


def brain_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A float32 (X, Y, Z) head in RAS order: an ellipsoid that fills the middle z slices,
    brightest at its anterior (+y) end, with empty slices at the bottom and top."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    inside = (x / 0.8) ** 2 + (y / 0.8) ** 2 + (z / 0.6) ** 2 < 1
    vol = inside * (500 + 300 * (y > 0.4) + 50 * rng.random(shape))
    return vol.astype(np.float32)


def make_nifti(root: Path, n: int = 4, shape: tuple[int, int, int] = (20, 24, 16)) -> Path:
    """root/volumes/: `n` .nii.gz volumes (some in subfolders, one stored LPS rather than RAS)
    and one Analyze .hdr/.img pair, so n + 1 subjects."""
    data = root / "volumes"
    for i in range(n):
        vol = brain_volume(shape, i)
        affine = np.diag([1.0, 1.0, 1.5, 1.0])
        if i == 1:  # stored left-posterior-superior: canonical orientation must undo the flips
            vol, affine = vol[::-1, ::-1].copy(), np.diag([-1.0, -1.0, 1.5, 1.0])
        path = data / (f"sub-{i:02d}/anat/T1w.nii.gz" if i % 2 else f"scan{i:02d}.nii.gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol, affine), path)
    pair = nib.AnalyzeImage(brain_volume(shape, n).astype(np.int16), np.diag([1.0, 1.0, 1.5, 1.0]))
    nib.save(pair, data / "analyze.hdr")
    return data


def make_folder(root: Path, n: int = 10, size: int = 48) -> Path:
    """root/pngs/: `n` PNG and JPEG images in a small tree."""
    data = root / "pngs"
    for i in range(n):
        path = data / ("a" if i % 2 else "b") / f"img{i:02d}{'.png' if i % 3 else '.jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(brain_slice(size, size, i)).save(path)
    return data


def load_splits(source: Path, **settings: object) -> dict:
    """Every split of a dataset, as `load_split` gives them."""
    from vqgen.api import load_data
    from vqgen.data import SPLITS

    return {split: load_data(source, split, **settings) for split in SPLITS}


def example_cond(condition: str, n: int) -> torch.Tensor | None:
    """A condition for n samples of a prior with 3 labels or slice conditioning (float64)."""
    if condition == "label":
        return torch.arange(n) % 3
    if condition == "slice":
        return torch.linspace(0, 1, n, dtype=torch.float64)
    return None


# -- the command line, in-process ----------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str] | None, *args: object) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    if capsys is None:
        return code, "", ""
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int, *needles: str) -> str:
    """The error contract: the exit code, one `error:` line holding the needles, no traceback."""
    assert code == expected_code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]
