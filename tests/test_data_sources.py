"""Each data source reads its real layout: kinds, split sizes, labels, subjects, positions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fixtures import (
    ADNI_PATIENTS,
    OASIS_SPLITS,
    brain_volume,
    load_splits,
    make_adni,
    make_folder,
    make_nifti,
    make_oasis,
)
from PIL import Image

from vqgen.api import load_data
from vqgen.data import SPLITS, DataWarning, detect_kind
from vqgen.data.dataset import decode_image, preprocess

SIZE = 32


@pytest.mark.parametrize(
    ("make", "kind"),
    [(make_oasis, "oasis"), (make_adni, "adni"), (make_nifti, "nifti"), (make_folder, "folder")],
)
def test_detect_kind_from_root_and_parent(tmp_path: Path, make, kind: str) -> None:
    root = make(tmp_path / "download")
    assert detect_kind(root) == kind
    assert detect_kind(str(tmp_path / "download")) == kind  # one level above the root
    assert detect_kind("mni152") == "mni152"


def _check_slices(ds, n: int) -> None:
    assert ds.pixels.shape == (n, 1, SIZE, SIZE) and ds.pixels.dtype == torch.uint8
    images = ds.images
    assert images.dtype == torch.float32 and images.min() >= 0 and images.max() <= 1
    assert images.max() > 0.3  # the slices are not blank
    image, label, position = ds[0]
    assert image.shape == (1, SIZE, SIZE) and label.dtype == torch.long
    assert position.dtype == torch.float32
    assert len(ds) == len(ds.subjects) == len(ds.paths) == len(ds.labels) == n


def test_oasis_reads_split_folders_and_skips_masks(tmp_path: Path) -> None:
    slices = 3
    splits = load_splits(make_oasis(tmp_path, slices=slices), size=SIZE)
    for split, ds in splits.items():
        _check_slices(ds, OASIS_SPLITS[split] * slices)
        assert ds.kind == "oasis" and ds.split == split
        assert all(f"keras_png_slices_{split}/" in p for p in ds.paths)  # never the seg masks
        assert (ds.labels == -1).all() and ds.label_names == ()
        for subject in set(ds.subjects):
            pos = ds.positions[[s == subject for s in ds.subjects]]
            assert pos.min() == 0 and pos.max() == 1  # normalised per subject
    subjects = [set(ds.subjects) for ds in splits.values()]
    assert not (subjects[0] & subjects[1]) and not (subjects[0] & subjects[2])
    assert all(s.startswith("case_") for s in splits["train"].subjects)


def test_oasis_warns_about_a_subject_in_two_splits(tmp_path: Path) -> None:
    root = make_oasis(tmp_path)
    image = Image.open(root / "keras_png_slices_train" / "case_001_slice_0.nii.png")
    image.save(root / "keras_png_slices_validate" / "case_001_slice_0.nii.png")
    with pytest.warns(DataWarning, match="case_001"):
        load_data(root, "validate", size=SIZE)


def test_adni_labels_and_patient_level_validate_split(tmp_path: Path) -> None:
    slices = 3
    root = make_adni(tmp_path, slices=slices)
    splits = load_splits(root, size=SIZE, seed=1)
    folder_patients = {
        folder: {p.stem.split("_")[0] for p in (root / folder).rglob("*.jpeg")}
        for folder in ("train", "test")
    }
    train, validate, test = (set(splits[s].subjects) for s in SPLITS)
    assert validate and not (train & validate)
    assert train | validate == folder_patients["train"]  # validate is taken from train patients
    assert test == folder_patients["test"]
    assert len(splits["test"]) == 2 * ADNI_PATIENTS["test"] * slices
    for ds in splits.values():
        _check_slices(ds, len(ds))
        assert ds.label_names == ("NC", "AD")
        for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
            assert Path(path).parent.name == ds.label_names[label]
        assert ds.positions.min() >= 0 and ds.positions.max() <= 1
    again = load_data(root, "validate", size=SIZE, seed=1)
    assert set(again.subjects) == validate  # the seed fixes the split


def test_adni_slices_keep_their_aspect_ratio(tmp_path: Path) -> None:
    root = make_adni(tmp_path)
    path = next((root / "train" / "AD").glob("*.jpeg"))
    Image.fromarray(np.full((240, 256), 255, np.uint8)).save(path)  # 256 wide, 240 high, all white
    ds = load_data(root, "train", size=64)
    image = ds.pixels[ds.paths.index(str(path)), 0]
    assert image[0].max() == 0 and image[-1].max() == 0  # padded top and bottom, not stretched
    assert image[32].min() == 255


def test_nifti_splits_by_subject_and_reads_analyze(tmp_path: Path) -> None:
    root = make_nifti(tmp_path, n=4)
    splits = load_splits(root, size=SIZE)
    subjects = [set(splits[s].subjects) for s in SPLITS]
    assert [len(s) for s in subjects] == [3, 1, 1]
    assert set.union(*subjects) == {
        "scan00",
        "sub-01/anat/T1w",
        "scan02",
        "sub-03/anat/T1w",
        "analyze",
    }
    for ds in splits.values():
        _check_slices(ds, len(ds))
        assert all("#z=" in p for p in ds.paths)
        assert ds.positions.min() == 0 and ds.positions.max() == 1


def test_nifti_slices_are_axial_front_up_and_skip_empty(tmp_path: Path) -> None:
    shape = (20, 24, 16)
    root = make_nifti(tmp_path, n=4, shape=shape)
    ds = load_data(root, "train", size=SIZE, seed=0)
    vol = brain_volume(shape, 0)
    nonempty = int(((vol > 0).mean(axis=(0, 1)) >= 0.01).sum())
    for subject in set(ds.subjects):
        rows = [s == subject for s in ds.subjects]
        assert sum(rows) == nonempty  # empty bottom and top slices are skipped
        images = ds.images[rows][:, 0]  # (n, S, S)
        profile = images.mean(dim=(0, 2))  # mean brightness per image row
        # the bright anterior end is at the top, also for the volume stored LPS
        assert profile[: SIZE // 2].mean() > profile[SIZE // 2 :].mean()


def test_nifti_squeezes_a_trailing_singleton_axis(tmp_path: Path) -> None:
    vol = brain_volume((16, 16, 12), 0)[..., None]  # (X, Y, Z, 1)
    for i in range(3):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / f"s{i}.nii")
    ds = load_data(tmp_path, "test", size=SIZE)
    assert len(ds) > 0 and ds.kind == "nifti"


def test_folder_split_by_file(tmp_path: Path) -> None:
    splits = load_splits(make_folder(tmp_path, n=10), size=SIZE)
    assert [len(splits[s]) for s in SPLITS] == [8, 1, 1]
    paths = [set(ds.paths) for ds in splits.values()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    for ds in splits.values():
        _check_slices(ds, len(ds))
        assert torch.isnan(ds.positions).all() and (ds.labels == -1).all()


@pytest.mark.parametrize("mode", ["RGB", "P", "LA", "I;16"])
def test_image_modes_become_proper_grey(tmp_path: Path, mode: str) -> None:
    grey = np.tile(np.linspace(0, 200, 64).astype(np.uint8), (64, 1))
    path = tmp_path / "img.png"
    if mode == "I;16":
        Image.fromarray(grey.astype(np.uint16) * 16).save(path)  # 12-bit values in 16 bits
    else:
        Image.fromarray(grey).convert(mode).save(path)
    image = preprocess(decode_image(path), 64).astype(int)
    if mode == "I;16":
        assert image.max() == 255 and image[:, 0].max() == 0  # scaled, not clipped to white
        assert np.all(np.diff(image[32]) >= 0)
    else:
        assert np.abs(image - grey).max() <= 2


def test_preprocess_pads_to_square_and_resizes() -> None:
    tall = np.full((40, 20), 1.0, np.float32)
    out = preprocess(tall, 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    assert out[:, 0].max() == 0 and out[:, -1].max() == 0 and out[8, 8] == 255
    assert preprocess(np.zeros((5, 5), np.float64), 8).max() == 0
