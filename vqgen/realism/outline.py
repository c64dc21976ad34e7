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
from scipy.stats import binomtest
from skimage.morphology import convex_hull_image
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


def _large(labelled: np.ndarray, count: int, min_area: int) -> np.ndarray:
    """The pixels of the labelled regions of `min_area` pixels or more: (H, W) bool."""
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    keep = sizes >= min_area
    keep[0] = False  # label 0 is what was not labelled
    return keep[labelled]


def parts(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """One slice's brain (8-connected pieces) and holes (4-connected background it encloses),
    each without regions under `min_area` pixels: (H, W) bool twice."""
    brain = _large(*ndimage.label(mask, EIGHT), min_area)
    enclosed = ndimage.binary_fill_holes(brain) & ~brain
    return brain, _large(*ndimage.label(enclosed), min_area)


def min_area(side: int) -> int:
    """The smallest piece or hole that counts in slices of `side` pixels."""
    return max(1, round(side * side * MIN_AREA))


def topology(mask: np.ndarray, area: int = 1) -> tuple[int, int]:
    """(components, holes) of one (H, W) brain mask, ignoring regions under `area` pixels:
    a disc is (1, 0), a ring (1, 1), two discs (2, 0)."""
    brain, holes = parts(mask, area)
    return ndimage.label(brain, EIGHT)[1], ndimage.label(holes)[1]


def solidity(brain: np.ndarray) -> float:
    """Area of the brain with its holes filled over that of its convex hull; 0 if empty."""
    if not brain.any():
        return 0.0
    filled = ndimage.binary_fill_holes(brain)
    return float(filled.sum() / convex_hull_image(filled).sum())


def outline_features(images: Tensor) -> Outline:
    """Components, holes and solidity of each slice's brain mask."""
    check_images("images", images)
    area, found = min_area(images.shape[-1]), []
    for mask in brain_mask(images):
        brain, holes = parts(mask, area)
        found.append((ndimage.label(brain, EIGHT)[1], ndimage.label(holes)[1], solidity(brain)))
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
        brain, holes = parts(mask, area)
        edge = torch.from_numpy(find_boundaries(brain, mode="inner"))
        image[:, edge] = torch.tensor([0.1, 0.9, 0.1])[:, None]
        image[:, torch.from_numpy(holes)] = torch.tensor([0.9, 0.1, 0.1])[:, None]
    return rgb
