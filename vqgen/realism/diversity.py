"""Diversity: MS-SSIM between random pairs of a set (torchmetrics)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

from vqgen.realism.images import check_images

# MS-SSIM at 64 px: torchmetrics needs side // (scales - 1)^2 > kernel - 1, so the standard five
# scales need 176 px. Three scales with the standard 11 px Gaussian work from 44 px up; their
# weights are the first three standard ones (Wang et al. 2003), renormalised to sum to 1.
MS_SSIM_BETAS = tuple(b / (0.0448 + 0.2856 + 0.3001) for b in (0.0448, 0.2856, 0.3001))
MS_SSIM_KERNEL = 11


def ms_ssim_diversity(images: Tensor, pairs: int = 256, seed: int = 0) -> float:
    """Mean MS-SSIM over `pairs` random pairs of distinct images: low = diverse. A set should
    score near the real data's own value; far above it means the samples look alike.

    Three scales with an 11 px Gaussian window (MS_SSIM_BETAS), data_range 1 and torchmetrics'
    default ReLU on negative terms: this works for slices of 44 px and more (64, 128, 256).
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    check_images("images", images, 2)
    if min(images.shape[-2:]) < 44:
        raise ValueError(f"MS-SSIM needs slices of at least 44 px, got {tuple(images.shape[-2:])}")
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(0, len(images), (pairs,), generator=gen)
    second = (first + torch.randint(1, len(images), (pairs,), generator=gen)) % len(images)
    ms_ssim = functools.partial(
        multiscale_structural_similarity_index_measure,
        data_range=1.0, kernel_size=MS_SSIM_KERNEL, betas=MS_SSIM_BETAS, reduction="none",
    )  # fmt: skip
    x = images.float()
    chunks = zip(first.split(64), second.split(64), strict=True)
    with _without_onednn():
        return float(torch.cat([ms_ssim(x[i], x[j]) for i, j in chunks]).mean())


@contextlib.contextmanager
def _without_onednn() -> Iterator[None]:
    """torch's own CPU convolution inside: MS-SSIM's windows are 11x11 convolutions of one
    channel, which oneDNN computes slowly (docs/decisions.md, ms-ssim-native)."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled
