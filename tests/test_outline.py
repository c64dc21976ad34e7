"""The outline measure: topology and solidity of hand-drawn masks, and on real mni152 slices
(validate, against the test split at the same level) it flags punched holes and a wedge cut
from the outline, and leaves real slices and a blur alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.morphology import convex_hull_image

from vqgen import evaluate_realism, report_text
from vqgen.data import SliceDataset
from vqgen.realism import outline, perturb


def disc(cy: float, cx: float, r: float, side: int = 32) -> np.ndarray:
    yy, xx = np.ogrid[:side, :side]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="module")
def real(mni152_64: dict[str, SliceDataset]) -> outline.Outline:
    return outline.outline_features(mni152_64["test"].images)


def rarity_of(images: torch.Tensor, mni152_64, real) -> outline.Rarity:
    """Validate's slices (perhaps changed) against the test split, level by level."""
    found = outline.outline_features(images)
    return outline.rarity(found, mni152_64["validate"].positions, real, mni152_64["test"].positions)


# -- hand-drawn masks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (disc(16, 16, 10), (1, 0)),
        (disc(16, 16, 10) & ~disc(16, 16, 4), (1, 1)),  # a ring
        (disc(8, 8, 5) | disc(24, 24, 5), (2, 0)),
        (disc(16, 16, 12) & ~disc(10, 16, 3) & ~disc(22, 16, 3), (1, 2)),
        (disc(16, 16, 12) & ~disc(16, 28, 5), (1, 0)),  # a bite from the edge is no hole
        (np.zeros((32, 32), bool), (0, 0)),
    ],
    ids=["disc", "ring", "two discs", "two holes", "bitten", "empty"],
)
def test_topology_of_drawn_masks(mask, expected):
    assert outline.topology(mask) == expected


def test_specks_and_pinholes_under_the_area_do_not_count():
    mask = disc(16, 16, 10)
    mask[16, 16], mask[1, 1] = False, True  # a dark pixel in the brain, a bright one outside
    assert outline.topology(mask) == (2, 1)
    assert outline.topology(mask, area=4) == (1, 0)
    assert outline.min_area(64) == 4  # the area outline_features uses at 64 px


def test_squares_touching_at_a_corner_are_one_piece():
    mask = np.zeros((16, 16), bool)
    mask[:8, :8] = mask[8:, 8:] = True
    assert outline.topology(mask) == (1, 0)


def test_solidity_drops_with_a_notch_and_ignores_holes():
    square = np.zeros((32, 32), bool)
    square[4:28, 4:28] = True
    notched = square & ~((np.arange(32)[:, None] > 10) & (np.arange(32) > 16))
    assert outline.solidity(square) == 1.0
    assert outline.solidity(square & ~disc(16, 16, 4)) == 1.0
    assert 0.78 < outline.solidity(notched) < 0.84  # 389 px over a hull of about 480
    assert outline.solidity(np.zeros((32, 32), bool)) == 0.0


@settings(max_examples=300, deadline=None)
@given(
    arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.booleans()).filter(
        np.any
    )
)
def test_hull_area_counts_what_scikit_image_counts(mask):
    """Any mask: the hull's pixels counted row by row are those of convex_hull_image."""
    assert outline.hull_area(mask) == convex_hull_image(mask).sum()


def test_hull_area_counts_what_scikit_image_counts_on_real_slices(mni152_64):
    masks = [m for m in outline.brain_mask(mni152_64["test"].images) if m.any()]
    assert len(masks) > 150
    assert [outline.hull_area(m) for m in masks] == [convex_hull_image(m).sum() for m in masks]


def test_neighbours_are_the_window_or_the_nearest_where_it_holds_too_few():
    dense = torch.rand(2000, generator=torch.Generator().manual_seed(0))
    near = outline.neighbours(torch.tensor([0.5]), dense)
    assert (near[0] == ((dense - 0.5).abs() <= outline.WINDOW).numpy()).all()
    sparse = torch.linspace(0, 1, 30)
    near = outline.neighbours(torch.tensor([0.0]), sparse)
    assert near[0].tolist() == [True] * outline.MIN_NEIGHBOURS + [False] * 10


def test_without_levels_every_real_slice_counts():
    real = outline.Outline(np.array([1, 3]), np.array([0, 0]), np.array([0.95, 0.6]))
    three_pieces = outline.Outline(np.array([3]), np.array([0]), np.array([0.6]))
    low, high = torch.tensor([0.2]), torch.tensor([0.2, 0.8])
    assert outline.rarity(three_pieces, None, real, high).topology[0] == 0.5
    assert outline.rarity(three_pieces, torch.tensor([0.8]), real, high).topology[0] == 0.5
    assert outline.known(low, high) and not outline.known(low, None)
    assert not outline.known(torch.tensor([float("nan")]))


def test_scores_count_the_atypical_with_an_interval():
    found = outline.Rarity(
        outline.Outline(np.array([1, 2, 1, 1]), np.array([0, 0, 3, 0]), np.full(4, 0.9)),
        topology=np.array([0.5, 0.0, 0.0, 0.5]),
        solidity=np.array([0.5, 0.5, 0.5, 0.001]),
        excess=np.array([0, 1, 3, 0]),
    )
    scores = outline.outline_scores(found)
    assert scores["atypical"] == 0.75 and scores["topology"] == 0.5 and scores["solidity"] == 0.25
    assert scores["ci_low"] < 0.75 < scores["ci_high"]
    assert (scores["components"], scores["holes"], scores["excess"]) == (1.25, 0.75, 1.0)
    assert outline.worst(found, 4) == [2, 1, 3, 0]  # the rarest, then the most excess


def test_marked_paints_the_outline_green_and_the_holes_red():
    mask = disc(16, 16, 10) & ~disc(16, 16, 4)
    rgb = outline.marked(torch.from_numpy(mask).float()[None, None] * 0.5)
    assert rgb.shape == (1, 3, 32, 32)
    assert rgb[0, 0, 16, 16] > 0.8 > rgb[0, 1, 16, 16]  # the hole
    assert rgb[0, 1, 6, 16] > 0.8 > rgb[0, 0, 6, 16]  # the outline's top
    assert rgb[0, 0, 0, 0] == 0 and rgb[0, 0, 16, 9] == 0.5  # background and brain stay grey


# -- real slices ---------------------------------------------------------------------------------


def test_real_slices_are_not_flagged(mni152_64, real):
    found = rarity_of(mni152_64["validate"].images, mni152_64, real)
    assert outline.outline_scores(found)["atypical"] <= 0.05


@pytest.mark.parametrize(("defect", "at_least"), [("holes", 0.8), ("wedge", 0.6)])
def test_holes_and_a_cut_outline_are_flagged(mni152_64, real, defect, at_least):
    images = mni152_64["validate"].images
    broken = perturb.PERTURBATIONS[defect](images, torch.Generator().manual_seed(0))
    found = rarity_of(broken, mni152_64, real)
    assert outline.outline_scores(found)["atypical"] >= at_least
    # above the temporal lobes, where real slices are one convex piece without holes
    assert found.atypical[mni152_64["validate"].positions > 0.45].mean() >= 0.9


def test_blur_keeps_the_outline(mni152_64, real):
    blurred = perturb.blur(mni152_64["validate"].images, torch.Generator())
    assert outline.outline_scores(rarity_of(blurred, mni152_64, real))["atypical"] <= 0.05


def test_the_worst_are_the_slices_with_holes(mni152_64, real):
    images = mni152_64["validate"].images.clone()
    upper = (mni152_64["validate"].positions > 0.45).nonzero()[:4, 0]
    images[upper] = perturb.holes(images[upper], torch.Generator().manual_seed(0))
    assert sorted(outline.worst(rarity_of(images, mni152_64, real), 4)) == upper.tolist()


# -- in the report -------------------------------------------------------------------------------


def test_evaluate_scores_samples_beside_the_floor_and_draws_the_rarest(mni152_64, tmp_path):
    """Samples with holes at known levels against the test split, beside a floor of real
    slices (validate's, standing in for train), with the figure and the report's rows."""
    validate, test = mni152_64["validate"], mni152_64["test"]
    samples = perturb.holes(validate.images[:64], torch.Generator().manual_seed(0))
    levels = validate.positions[:64]
    section = evaluate_realism.outline_section(samples, levels, validate, test, 0, tmp_path)
    assert section["by_level"] and section["samples"]["n"] == section["floor"]["n"] == 64
    assert section["samples"]["atypical"] > 0.5 > section["floor"]["ci_high"]
    assert (tmp_path / "eval_outline_worst.png").stat().st_size > 1000
    rows = report_text.outline_rows(section, ["samples", "reconstructions", "floor"])
    assert rows[0][1].startswith(f"{section['samples']['atypical']:.2f} [") and rows[0][2] == "-"
    floor = section["floor"]
    assert rows[1][3] == f"{floor['components']:.2f} / {floor['holes']:.2f} / {floor['excess']:.2f}"


@pytest.mark.parametrize("cond", [None, torch.arange(64) % 2], ids=["none", "label"])
def test_without_sample_levels_the_floor_ignores_its_levels_too(mni152_64, cond):
    validate = mni152_64["validate"]
    section = evaluate_realism.outline_section(
        validate.images[:64], cond, validate, mni152_64["test"], 0
    )
    assert not section["by_level"]
    assert section["floor"]["atypical"] <= 0.05
