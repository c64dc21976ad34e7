"""Bad input gives one line that names the path and what was expected (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures import brain_slice, make_adni, make_nifti, make_oasis
from PIL import Image

from vqgen.api import load_data
from vqgen.data import SPLITS, DataWarning, detect_kind
from vqgen.errors import DataError, UsageError

SIZE = 16


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError, match=r"nowhere.*does not exist") as err:
        load_data(missing, "train")
    assert err.value.exit_code == 2


def test_unrecognised_layout_lists_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError) as err:
        detect_kind(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "\n" not in message
    for layout in ("keras_png_slices", "AD_NC", ".nii", ".png", "mni152"):
        assert layout in message


def test_forced_kind_that_does_not_match(tmp_path: Path) -> None:
    root = make_oasis(tmp_path)
    with pytest.raises(UsageError, match=r"not an ADNI layout.*AD_NC"):
        load_data(root, "train", kind="adni")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"split": "val"}, "split must be one of"),
        ({"size": 4}, "--size"),
        ({"kind": "dicom"}, "--kind"),
    ],
)
def test_bad_options(options: dict, match: str) -> None:
    args = {"split": "train", **options}
    with pytest.raises(UsageError, match=match):
        load_data("mni152", args.pop("split"), **args)


def test_empty_split_names_split_and_folder(tmp_path: Path) -> None:
    root = make_oasis(tmp_path, cases={"train": 1, "test": 1})
    with pytest.raises(DataError, match=r"'validate' is empty.*keras_png_slices_validate"):
        load_data(root, "validate", size=SIZE)


def test_too_few_volumes_for_a_split(tmp_path: Path) -> None:
    root = make_nifti(tmp_path, n=1)  # one .nii.gz + one Analyze pair: two subjects
    with pytest.raises(DataError, match=f"'test' is empty.*{root}"):
        load_data(root, "test", size=SIZE)


def test_corrupt_image_is_skipped_with_one_counted_warning(tmp_path: Path) -> None:
    root = make_oasis(tmp_path, slices=3)
    bad = root / "keras_png_slices_train" / "case_002_slice_1.nii.png"
    bad.write_bytes(b"not a png")
    with pytest.warns(DataWarning, match=f"skipped 1 unreadable images, first: {bad}"):
        ds = load_data(root, "train", size=SIZE)
    assert len(ds) == 3 * 3 - 1 and str(bad) not in ds.paths


def test_corrupt_image_is_an_error_when_strict(tmp_path: Path) -> None:
    root = make_oasis(tmp_path)
    bad = root / "keras_png_slices_test" / "case_005_slice_0.nii.png"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=str(bad)):
        load_data(root, "test", size=SIZE, strict=True)


def test_adni_file_without_patient_id(tmp_path: Path) -> None:
    root = make_adni(tmp_path)
    bad = root / "train" / "NC" / "scan.jpeg"
    Image.fromarray(brain_slice(240, 256, 0)).save(bad)
    with pytest.raises(DataError, match=f"{bad}: no patient id"):
        load_data(root, "train", size=SIZE)


def test_nifti_folder_without_a_3d_volume_names_the_first(tmp_path: Path) -> None:
    for i in range(3):
        path = tmp_path / f"s{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((8, 8, 6, 2), np.float32), np.eye(4)), path)
    with pytest.raises(DataError, match=r"\.nii\.gz: expected a 3-D volume"):
        load_data(tmp_path, "train", size=SIZE)


def test_unreadable_volume_is_skipped(tmp_path: Path) -> None:
    root = make_nifti(tmp_path, n=4)
    before = load_data(root, "train", size=SIZE)
    victim = min(set(before.subjects) - {"analyze"})
    bad = root / f"{victim}.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    # dropped before the split is drawn: it is in no split, and every split keeps subjects
    after = []
    for split in ("train", "validate", "test"):
        with pytest.warns(DataWarning, match=f"skipped 1 unusable volumes .*, first: {bad}"):
            after.append(load_data(root, split, size=SIZE))
    assert all(len(ds) for ds in after)
    assert victim not in set().union(*(ds.subjects for ds in after))


def test_oasis_masks_are_never_read_as_slices(tmp_path: Path) -> None:
    """--kind folder on an OASIS tree reads its slices, not its keras_png_slices_seg_* masks;
    a folder of masks alone is refused in one line."""
    root = make_oasis(tmp_path, {"train": 4, "validate": 3, "test": 3}, slices=1, size=32)
    splits = [load_data(root, split, kind="folder", size=SIZE) for split in SPLITS]
    paths = [path for ds in splits for path in ds.paths]
    assert len(paths) == 10 and not any("_seg_" in path for path in paths)
    masks = tmp_path / "masks"
    masks.mkdir()
    (root / "keras_png_slices_seg_train").rename(masks / "keras_png_slices_seg_train")
    with pytest.raises(DataError, match=r"only OASIS segmentation masks") as err:
        detect_kind(masks)
    assert str(masks) in str(err.value) and "\n" not in str(err.value)
