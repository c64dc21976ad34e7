"""Known defects to put into real slices: what a realism measure must see (its power test).

    fake = PERTURBATIONS["blur"](real, torch.Generator().manual_seed(0))
    realism.c2st(reference, reference_subjects, fake, subjects)   # should be far above 0.5

Each takes (N, 1, S, S) images in [0, 1] and a generator, and returns images of the same
shape: blur and a median filter soften the texture (seen at full scale), holes and a wedge cut
from the outline break the anatomy (seen at both scales), and the contrast and intensity
changes alter the tissue's grey values. The brain is the foreground (metrics.foreground_mask).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from scipy import ndimage
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from vqgen.metrics import foreground_mask

Perturbation = Callable[[Tensor, torch.Generator], Tensor]


def blur(x: Tensor, gen: torch.Generator, sigma: float = 0.7) -> Tensor:
    """A Gaussian blur of `sigma` pixels."""
    return gaussian_blur(x, kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)


def median(x: Tensor, gen: torch.Generator) -> Tensor:
    """A 3x3 median filter: the noise removed, edges kept."""
    return torch.from_numpy(ndimage.median_filter(x.numpy(), size=(1, 1, 3, 3), mode="nearest"))


def holes(x: Tensor, gen: torch.Generator, count: int = 3, radius: float = 0.04) -> Tensor:
    """`count` black discs of `radius` (of the side) punched into the brain of each slice."""
    out, side = x.clone(), x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    for image, brain in zip(out, foreground_mask(x), strict=True):
        inside = brain[0].nonzero()
        if len(inside) == 0:
            continue
        for i in torch.randint(len(inside), (count,), generator=gen).tolist():
            cy, cx = inside[i].tolist()
            image[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= (radius * side) ** 2] = 0
    return out


def wedge(x: Tensor, gen: torch.Generator, degrees: float = 40, depth: float = 0.35) -> Tensor:
    """A wedge of `degrees` at a random angle cut from each brain's outline, `depth` of the
    brain's radius deep: the brain is black there beyond (1 - depth) of its radius."""
    out, side = x.clone(), x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    for image, brain in zip(out, foreground_mask(x), strict=True):
        inside = brain[0].nonzero().float()
        if len(inside) == 0:
            continue
        cy, cx = inside.mean(0).tolist()
        radius = math.sqrt(len(inside) / math.pi)
        angle = float(torch.rand((), generator=gen)) * 2 * math.pi
        offset = torch.atan2(yy - cy, xx - cx) - angle
        in_sector = torch.cos(offset) >= math.cos(math.radians(degrees) / 2)
        far = (yy - cy) ** 2 + (xx - cx) ** 2 >= ((1 - depth) * radius) ** 2
        image[0][in_sector & far] = 0
    return out


def contrast(x: Tensor, gen: torch.Generator, factor: float = 1.15) -> Tensor:
    """The brain's grey values spread `factor` times as far from each slice's brain mean."""
    brain = foreground_mask(x)
    mean = (x * brain).sum((1, 2, 3), keepdim=True) / brain.sum((1, 2, 3), keepdim=True).clamp(1)
    return torch.where(brain, (mean + factor * (x - mean)).clamp(0, 1), x)


def shift(x: Tensor, gen: torch.Generator, amount: float = 0.05) -> Tensor:
    """The brain's intensity raised by `amount` of the full range; the background stays black."""
    return torch.where(foreground_mask(x), (x + amount).clamp(0, 1), x)


PERTURBATIONS: dict[str, Perturbation] = {
    "blur": blur,
    "median": median,
    "holes": holes,
    "wedge": wedge,
    "contrast": contrast,
    "shift": shift,
}
PERTURBATION_NOTES = {
    "blur": "Gaussian blur, sigma 0.7 px",
    "median": "noise removed: 3x3 median filter",
    "holes": "3 holes of radius 4% punched in the brain",
    "wedge": "a 40-degree wedge cut 35% deep into the outline",
    "contrast": "grey/white contrast raised by 15%",
    "shift": "brain intensity shifted by 5% of the range",
}
assert PERTURBATIONS.keys() == PERTURBATION_NOTES.keys()
