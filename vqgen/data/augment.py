"""Augmented copies of slices, for the prior's training grids: it sees more variants of the
anatomy than the train split holds, so it learns local statistics instead of memorising grids.

    copies = augment_slices(train_set.images, seed=1, flip=True)

Images are augmented and then encoded, never the code grids: a flipped or shifted code grid
is not the code grid of the flipped or shifted slice.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

MAX_ROTATION = 5.0  # degrees
SCALES = (0.95, 1.05)
MAX_SHIFT = 0.03  # of the side
GAMMAS = (0.85, 1.15)  # intensity ** gamma: grey/white contrast changes, black stays black
GAINS = (0.9, 1.1)


def augment_slices(images: Tensor, seed: int, flip: bool) -> Tensor:
    """Each (N, 1, S, S) slice in [0, 1] under its own small affine (rotation, scale, shift),
    gamma and gain, and mirrored left-right half the time if `flip` (axial brain slices:
    the halves look alike). Seeded: the same seed gives the same copies."""
    assert images.dim() == 4 and images.shape[1] == 1, f"images {tuple(images.shape)}"
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=gen))

    side = images.shape[-1]
    out = torch.empty_like(images, dtype=torch.float32)
    for i, image in enumerate(images.float()):
        shift = [round(uniform(-MAX_SHIFT, MAX_SHIFT) * side) for _ in range(2)]
        image = TF.affine(
            image,
            angle=uniform(-MAX_ROTATION, MAX_ROTATION),
            translate=shift,
            scale=uniform(*SCALES),
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        image = TF.adjust_gamma(image.clamp(0, 1), uniform(*GAMMAS), uniform(*GAINS))
        if flip and float(torch.rand((), generator=gen)) < 0.5:
            image = image.flip(-1)
        out[i] = image.clamp(0, 1)
    return out
