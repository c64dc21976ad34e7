"""The outline measure: broken outlines and holes are what a person sees first in a slice.

Per slice, the brain mask's connected components, its holes (background the brain encloses)
and its solidity (area over that of its convex hull: a wedge cut from the outline lowers it and
leaves the topology alone). A slice is atypical when real slices of its level (slice position
within +-WINDOW) show its (components, holes) or a solidity as low as its less than RARE of
the time:

    real = outline_features(reference.images)
    found = rarity(outline_features(samples), levels, real, reference.positions)
    outline_scores(found)["atypical"]         # fraction of atypical slices, with its 95% interval
    worst(found, 8)                           # the most atypical slices, for a figure

Like every realism figure it means something only beside its floor: the same for real slices of
another split, compared with the same reference the same way (vqgen.evaluate).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.stats import binomtest
from skimage.segmentation import find_boundaries
from torch import Tensor

from vqgen.metrics import foreground_mask
from vqgen.realism.images import check_images

# metrics.foreground_mask's threshold, the brain that brain SSIM and the perturbations use.
# The (components, holes) of real mni152 slices barely move between 0.02 and 0.15 (77% and 74%
# one piece without holes at 64 px; docs/decisions.md, outline-threshold), so the choice is not
# delicate.
THRESHOLD = 0.05
# Pieces and holes smaller than this share of the image are scanner or sampling noise, not
# anatomy: 4 px at 64 px, 16 at 128. A hole that perturb.holes punches is 5 times as large.
MIN_AREA = 1 / 1024
WINDOW = 0.05  # slice positions this close count as one level
MIN_NEIGHBOURS = 20  # real slices to compare with at least, where a level has fewer
RARE = 0.01  # what fewer real slices of the level show is atypical
EIGHT = np.ones((3, 3), bool)  # brain pieces touch diagonally; holes (fill_holes') do not


class Outline(NamedTuple):
    """Per slice: brain pieces, holes and solidity (N,) each."""

    components: np.ndarray  # int
    holes: np.ndarray  # int
    solidity: np.ndarray  # float in [0, 1]; 0 for a slice without brain


class Rarity(NamedTuple):
    """Per slice, the share of real slices of its level that are as unusual (N,) each."""

    outline: Outline  # the slices' own
    topology: np.ndarray  # real slices with the same (components, holes)
    solidity: np.ndarray  # real slices with a solidity as low or lower
    excess: np.ndarray  # fewest pieces and holes to add or remove to match a real slice (int)

    @property
    def atypical(self) -> np.ndarray:
        """(N,) bool: real slices of the level show this less than RARE of the time."""
        return np.minimum(self.topology, self.solidity) < RARE


def brain_mask(images: Tensor, threshold: float = THRESHOLD) -> np.ndarray:
    """(N, 1, H, W) slices in [0, 1] -> (N, H, W) bool: the brain on a black background. No
    opening: it would cut thin gyri and open holes; specks are dropped by area instead."""
    return foreground_mask(images.float().cpu(), threshold)[:, 0].numpy()


def _large(labelled: np.ndarray, count: int, min_area: int) -> tuple[np.ndarray, int]:
    """The pixels of the labelled regions of `min_area` pixels or more, (H, W) bool, and how
    many regions they are."""
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    keep = sizes >= min_area
    keep[0] = False  # label 0 is what was not labelled
    return keep[labelled], int(keep.sum())


class Parts(NamedTuple):
    """One slice's brain mask as the measure sees it."""

    brain: np.ndarray  # (H, W) bool: its 8-connected pieces of min_area pixels or more
    holes: np.ndarray  # (H, W) bool: the 4-connected background they enclose, as large
    filled: np.ndarray  # (H, W) bool: the brain with every hole it encloses filled
    components: int  # pieces in `brain`
    hole_count: int  # holes in `holes`


def parts(mask: np.ndarray, min_area: int) -> Parts:
    """One slice's brain (8-connected pieces) and holes (4-connected background it encloses),
    each without regions under `min_area` pixels."""
    brain, components = _large(*ndimage.label(mask, EIGHT), min_area)
    filled = ndimage.binary_fill_holes(brain)
    holes, hole_count = _large(*ndimage.label(filled & ~brain), min_area)
    return Parts(brain, holes, filled, components, hole_count)


def min_area(side: int) -> int:
    """The smallest piece or hole that counts in slices of `side` pixels."""
    return max(1, round(side * side * MIN_AREA))


def topology(mask: np.ndarray, area: int = 1) -> tuple[int, int]:
    """(components, holes) of one (H, W) brain mask, ignoring regions under `area` pixels:
    a disc is (1, 0), a ring (1, 1), two discs (2, 0)."""
    found = parts(mask, area)
    return found.components, found.hole_count


def hull_area(mask: np.ndarray) -> int:
    """Pixels of the convex hull of a non-empty (H, W) bool mask, as scikit-image's
    `convex_hull_image(mask).sum()` counts them (the pixel centres inside or on the hull of
    the pixels' edge midpoints), counted row by row from the hull's edges instead of tested
    pixel by pixel, in half the time. A row's leftmost and rightmost pixels span the hull of all
    its pixels."""
    rows = np.flatnonzero(mask.any(1))
    left = mask[rows].argmax(1)
    right = mask.shape[1] - 1 - mask[rows, ::-1].argmax(1)
    y, x = np.concatenate([rows, rows]).astype(float), np.concatenate([left, right]).astype(float)
    offsets = np.array([[-0.5, 0], [0.5, 0], [0, -0.5], [0, 0.5]])  # the edge midpoints
    points = (np.stack([y, x], 1)[:, None] + offsets).reshape(-1, 2)
    hull = points[ConvexHull(points).vertices]  # in order around the hull
    (y0, x0), (y1, x1) = hull.T, np.roll(hull, -1, axis=0).T  # each edge's two ends
    centre_rows = np.arange(np.ceil(y0.min()), np.floor(y0.max()) + 1)[:, None]  # (R, 1)
    crossed = (np.minimum(y0, y1) <= centre_rows) & (centre_rows <= np.maximum(y0, y1))
    flat = y0 == y1  # an edge along a row adds both its ends
    with np.errstate(divide="ignore", invalid="ignore"):
        at = np.where(flat, x0, x0 + (centre_rows - y0) * (x1 - x0) / (y1 - y0))  # (R, E)
    other = np.where(flat, x1, at)  # a flat edge's other end; the same point on any other
    first = np.where(crossed, np.minimum(at, other), np.inf).min(1)
    last = np.where(crossed, np.maximum(at, other), -np.inf).max(1)
    return int((np.floor(last) - np.ceil(first) + 1).sum())


def solidity(brain: np.ndarray) -> float:
    """Area of the brain with its holes filled over that of its convex hull; 0 if empty."""
    return _solidity(ndimage.binary_fill_holes(brain))


def _solidity(filled: np.ndarray) -> float:
    return float(filled.sum() / hull_area(filled)) if filled.any() else 0.0


def outline_features(images: Tensor) -> Outline:
    """Components, holes and solidity of each slice's brain mask."""
    check_images("images", images)
    area, found = min_area(images.shape[-1]), []
    for mask in brain_mask(images):
        shape = parts(mask, area)
        found.append((shape.components, shape.hole_count, _solidity(shape.filled)))
    components, holes, solid = zip(*found, strict=True)
    return Outline(np.array(components), np.array(holes), np.array(solid, dtype=float))


def known(*levels: Tensor | None) -> bool:
    """Whether every slice position is known: no None, no NaN."""
    return all(x is not None and not x.isnan().any() for x in levels)


def neighbours(levels: Tensor, real_levels: Tensor) -> np.ndarray:
    """(N, N_real) bool: the real slices each slice is compared with, those within WINDOW of
    its level (the MIN_NEIGHBOURS nearest where fewer are)."""
    distance = (levels.double()[:, None] - real_levels.double()[None, :]).abs().numpy()
    k = min(MIN_NEIGHBOURS, len(real_levels))
    kth = np.partition(distance, k - 1, axis=1)[:, k - 1, None]  # (N, 1)
    return distance <= np.maximum(WINDOW, kth)


def rarity(
    outline: Outline, levels: Tensor | None, real: Outline, real_levels: Tensor | None
) -> Rarity:
    """How rare each slice's outline is among the `real` slices of its level (`levels` and
    `real_levels` are slice positions; where one is unknown, among all real slices)."""
    if known(levels, real_levels):
        near = neighbours(levels, real_levels)  # type: ignore[arg-type]
    else:
        near = np.ones((len(outline.components), len(real.components)), bool)
    steps = np.abs(outline.components[:, None] - real.components) + np.abs(
        outline.holes[:, None] - real.holes
    )  # (N, N_real): pieces and holes that differ
    lower = real.solidity <= outline.solidity[:, None]
    count = near.sum(1)
    return Rarity(
        outline,
        topology=((steps == 0) & near).sum(1) / count,
        solidity=(lower & near).sum(1) / count,
        excess=np.where(near, steps, np.iinfo(steps.dtype).max).min(1),
    )


def outline_scores(found: Rarity) -> dict[str, float]:
    """The share of atypical slices with its 95% interval (Wilson), the shares atypical by
    topology and by solidity, the mean components and holes per slice, and the mean excess:
    pieces and holes that differ from the nearest outline real slices of the level have."""
    n, flagged = len(found.topology), int(found.atypical.sum())
    interval = binomtest(flagged, n).proportion_ci(0.95, method="wilson")
    return {
        "atypical": flagged / n,
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "topology": float(np.mean(found.topology < RARE)),
        "solidity": float(np.mean(found.solidity < RARE)),
        "components": float(np.mean(found.outline.components)),
        "holes": float(np.mean(found.outline.holes)),
        "excess": float(np.mean(found.excess)),
        "n": n,
    }


def worst(found: Rarity, n: int) -> list[int]:
    """The `n` most atypical slices: rarest first, then those with the most excess pieces and
    holes, then those rare on both counts (topology and solidity)."""
    rarest = np.minimum(found.topology, found.solidity)
    both = np.maximum(found.topology, found.solidity)
    return np.lexsort((both, -found.excess, rarest))[:n].tolist()


def marked(images: Tensor) -> Tensor:
    """(N, 1, H, W) slices -> (N, 3, H, W) RGB: the brain's outline in green and its holes in
    red, as the measure counts them."""
    rgb = images.float().cpu().clamp(0, 1).repeat(1, 3, 1, 1)
    area = min_area(images.shape[-1])
    for image, mask in zip(rgb, brain_mask(images), strict=True):
        shape = parts(mask, area)
        edge = torch.from_numpy(find_boundaries(shape.brain, mode="inner"))
        image[:, edge] = torch.tensor([0.1, 0.9, 0.1])[:, None]
        image[:, torch.from_numpy(shape.holes)] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    return rgb
