"""The prior's extra training grids: augmented slices encoded by the VQ-VAE, and for mni152
fresh virtual subjects that are never a validate or test subject."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import make_oasis, run_cli
from tiny import CPU, PRIOR_2X8, VQVAE_32

from vqgen import fileio
from vqgen.config import DataConfig
from vqgen.data import SPLITS, load_data, mni152
from vqgen.data.augment import augment_slices

BATCH_4_CPU = ["--batch-size", "4", *CPU]


def test_augmented_slices_are_seeded_in_range_and_keep_the_background_black():
    images = torch.zeros(6, 1, 32, 32)
    images[:, :, 8:24, 6:20] = torch.rand(6, 1, 16, 14, generator=torch.Generator().manual_seed(0))
    a = augment_slices(images, seed=3, flip=True)
    assert torch.equal(a, augment_slices(images, seed=3, flip=True))
    assert not torch.equal(a, augment_slices(images, seed=4, flip=True))
    assert not torch.allclose(a, images, atol=0.05)  # changed, ...
    assert a.min() >= 0 and a.max() <= 1
    assert a[:, :, :3].abs().max() == 0 and a[:, :, -3:].abs().max() == 0  # ... black stays black


def test_flips_only_where_asked():
    images = torch.zeros(40, 1, 16, 16)
    images[:, :, 4:12, 1:5] = 1.0  # a bright block on the left
    left = lambda x: x[..., :8].sum((1, 2, 3)) > x[..., 8:].sum((1, 2, 3))  # noqa: E731
    assert left(augment_slices(images, seed=0, flip=False)).all()
    flipped = ~left(augment_slices(images, seed=0, flip=True))
    assert 5 < int(flipped.sum()) < 35


def test_fresh_subjects_are_none_of_the_splits_subjects(tiny_mni152):
    data = DataConfig(source="mni152", kind="mni152")
    taken = {s for split in SPLITS for s in load_data(data, split, 32).subjects}
    fresh = mni152.fresh_train_subjects(3, 0, 32, seed=0)
    assert len(fresh) == 3 * mni152.SLICES and fresh.split == "train"
    assert not set(fresh.subjects) & taken
    more = mni152.fresh_train_subjects(3, 3, 32, seed=0)
    assert not set(more.subjects) & set(fresh.subjects)
    train = load_data(data, "train", 32)
    assert not torch.equal(fresh.pixels, train.pixels)


@pytest.mark.slow
def test_train_prior_learns_from_augmented_copies(capsys, tmp_path, tiny_mni152):
    """--augment 2 on mni152: twice as many fresh train subjects beside the train split,
    encoded once and kept in the run; the setting is saved and resumed."""
    run = tmp_path / "run"
    args = ["--data", "mni152", "--run", run, "--max-steps", "2", *VQVAE_32, *BATCH_4_CPU]
    code, _, err = run_cli(capsys, "train-vqvae", *args)
    assert code == 0, err
    prior = ["--run", run, *PRIOR_2X8, "--max-steps", "3", *BATCH_4_CPU]
    code, _, err = run_cli(capsys, "train-prior", *prior, "--augment", "2", "--dropout", "0.1")
    assert code == 0, err
    extra = fileio.load_tensors(run / "codes" / "train-augmented-2.safetensors")
    train = fileio.load_tensors(run / "codes" / "train.safetensors")
    assert len(extra["codes"]) == 2 * len(train["codes"])
    assert extra["positions"].isfinite().all()  # fresh subjects bring their slice positions
    model = json.loads((run / "prior.json").read_text())["model"]
    assert (model["augment"], model["dropout"]) == (2, 0.1)


@pytest.mark.slow
def test_augmented_copies_of_a_folder_dataset(capsys, tmp_path):
    data = make_oasis(tmp_path, {"train": 3, "validate": 1, "test": 1}, slices=4, size=32)
    run = tmp_path / "run"
    args = ["--data", data, "--run", run, "--max-steps", "2", *VQVAE_32, *BATCH_4_CPU]
    assert run_cli(capsys, "train-vqvae", *args)[0] == 0
    prior = ["--run", run, *PRIOR_2X8, "--max-steps", "2", *BATCH_4_CPU]
    code, _, err = run_cli(capsys, "train-prior", *prior, "--augment", "1")
    assert code == 0, err
    extra = fileio.load_tensors(run / "codes" / "train-augmented-1.safetensors")
    train = fileio.load_tensors(run / "codes" / "train.safetensors")
    assert extra["codes"].shape == train["codes"].shape
    assert not torch.equal(extra["codes"], train["codes"])  # other slices, other codes
