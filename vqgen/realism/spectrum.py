"""Sharpness: the radially averaged power spectrum, and high-frequency energy against real."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vqgen.realism.images import check_images


def _power_2d(images: Tensor) -> tuple[Tensor, Tensor]:
    """Mean power |FFT|^2 / pixels of the mean-subtracted images, and each frequency's radius
    in cycles per pixel (Nyquist = 0.5): (H, W), (H, W) float64."""
    check_images("images", images)
    x = images.double().cpu()[:, 0]
    x = x - x.mean(dim=(1, 2), keepdim=True)
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().square().mean(0) / (h * w)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    return power, (fy[:, None].square() + fx[None, :].square()).sqrt()


def radial_power_spectrum(images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a set: (freqs, power), freqs in cycles per pixel
    from 0 to Nyquist (0.5) in steps of 1/side; plot power on a log scale."""
    power, radius = _power_2d(images)
    side = min(power.shape)
    ring = (radius * side).round().long().flatten()  # ring index of each frequency
    keep = ring <= side // 2
    total = torch.bincount(ring[keep], power.flatten()[keep], side // 2 + 1)
    count = torch.bincount(ring[keep], minlength=side // 2 + 1)
    return (torch.arange(side // 2 + 1) / side).numpy(), (total / count).numpy()


def sharpness_ratio(images: Tensor, real: Tensor, cutoff: float = 0.25) -> float:
    """Power above `cutoff` cycles per pixel (half Nyquist) of `images` over that of `real`:
    1 = as sharp as real, < 1 = blurred, > 1 = noisier than real."""
    if images.shape[-2:] != real.shape[-2:]:
        raise ValueError(f"images and real differ in size: {images.shape[-2:]}, {real.shape[-2:]}")
    power, radius = _power_2d(images)
    power_real, _ = _power_2d(real)
    high = radius > cutoff
    return float(power[high].sum() / power_real[high].sum())
