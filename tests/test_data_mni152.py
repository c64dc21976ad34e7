"""The embedded mni152 source: deterministic virtual subjects, disjoint per split, brain-like."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import load_splits

from vqgen.api import load_data
from vqgen.config import DataConfig
from vqgen.data import load_reference, mni152

SIZE = 32
pytestmark = pytest.mark.usefixtures("tiny_mni152")


def test_splits_have_disjoint_named_subjects() -> None:
    splits = load_splits("mni152", size=SIZE)
    for split, ds in splits.items():
        assert ds.kind == "mni152" and ds.split == split
        assert len(ds) == mni152.SUBJECTS[split] * mni152.SLICES
        assert ds.pixels.shape[1:] == (1, SIZE, SIZE)
        assert all(s.startswith(f"mni152-{split}-") for s in ds.subjects)
        assert all(p.startswith("mni152:") and "#z=" in p for p in ds.paths)
        assert (ds.labels == -1).all()
        assert ds.positions.min() >= 0 and ds.positions.max() <= 1
    pixels = {split: ds.pixels for split, ds in splits.items()}
    assert not torch.equal(pixels["validate"], pixels["test"])  # different seed streams


def test_same_seed_same_slices_other_seed_other_slices() -> None:
    a = mni152.load(None, "train", SIZE, seed=3, strict=False)
    b = mni152.load(None, "train", SIZE, seed=3, strict=False)
    c = mni152.load(None, "train", SIZE, seed=4, strict=False)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.positions, b.positions)
    assert not torch.equal(a.pixels, c.pixels)


def test_slices_look_like_skull_stripped_axial_brains() -> None:
    ds = load_data("mni152", "train", size=SIZE)
    images = ds.images[:, 0]  # (N, S, S)
    corners = images[:, :3, :3].amax(dim=(1, 2))
    assert (corners == 0).all()  # black background outside the brain
    foreground = (images > 0.05).float().mean(dim=(1, 2))
    assert (foreground > 0.05).all() and (foreground < 0.8).all()
    assert images.amax(dim=(1, 2)).min() > 0.5  # bright tissue in every slice
    # within a subject, slices go from bottom to top: the highest slice is smaller than the middle
    first = [s == ds.subjects[0] for s in ds.subjects]
    order = torch.argsort(ds.positions[first])
    areas = foreground[first][order]
    assert areas[-1] < areas.max()


def test_subjects_differ_from_each_other() -> None:
    rng = [np.random.default_rng(np.random.SeedSequence([0, 0, s])) for s in range(2)]
    (a, pos_a, _), (b, pos_b, _) = (mni152.subject(r, 3, SIZE) for r in rng)
    assert np.abs(a - b).mean() > 0.01
    assert not np.array_equal(pos_a, pos_b)  # slice levels are jittered per subject


def test_settings_change_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    small = load_data("mni152", "test", size=SIZE)
    monkeypatch.setattr(mni152, "SLICES", mni152.SLICES + 1)
    assert len(load_data("mni152", "test", size=SIZE)) == len(small) + mni152.SUBJECTS["test"]


def test_evaluation_subjects_are_fresh_and_their_own_per_split() -> None:
    """evaluate's reference: the split and subjects of a stream no split, no other split's
    reference and no augmentation of the prior (fresh_train_subjects) draws from."""
    data = DataConfig(source="mni152")
    splits = load_splits("mni152", size=SIZE)
    test_ref, validate_ref = (
        load_reference(data, splits["test"]),
        load_reference(data, splits["validate"]),
    )
    n = mni152.EVALUATION_SUBJECTS * mni152.SLICES
    assert len(test_ref) == len(splits["test"]) + n
    assert torch.equal(test_ref.pixels[: len(splits["test"])], splits["test"].pixels)
    extra = test_ref.pixels[len(splits["test"]) :]
    assert all(s.startswith("mni152-test-eval-") for s in test_ref.subjects[-n:])
    others = [ds.pixels for ds in splits.values()]
    others += [validate_ref.pixels[-n:], mni152.fresh_train_subjects(2, 0, SIZE, 0).pixels]
    for other in others:
        assert torch.cdist(extra.flatten(1).float(), other.flatten(1).float()).min() > 0
    assert torch.equal(load_reference(data, splits["test"]).pixels, test_ref.pixels)  # seeded
    assert torch.equal(load_reference(data, splits["train"]).pixels, splits["train"].pixels)
    with pytest.raises(ValueError, match="beside validate or test"):
        mni152.evaluation_subjects("train", SIZE, 0)
