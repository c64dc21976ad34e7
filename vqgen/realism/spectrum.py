"""Sharpness: the radially averaged power spectrum, and high-frequency energy against real."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from vqgen.realism.images import check_images


class Spectrum(NamedTuple):
    """The mean power of a set of images at each frequency, `power_spectrum`'s."""

    power: Tensor  # (H, W) mean |FFT|^2 / pixels of the mean-subtracted images, float64
    radius: Tensor  # (H, W) each frequency's radius in cycles per pixel (Nyquist = 0.5)


def power_spectrum(images: Tensor) -> Spectrum:
    """The mean power spectrum of (N, 1, H, W) images; a set's once, for every figure of it."""
    check_images("images", images)
    x = images.double().cpu()[:, 0]
    x = x - x.mean(dim=(1, 2), keepdim=True)
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().square().mean(0) / (h * w)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    return Spectrum(power, (fy[:, None].square() + fx[None, :].square()).sqrt())


def _spectrum(images: Tensor | Spectrum) -> Spectrum:
    return images if isinstance(images, Spectrum) else power_spectrum(images)


def radial_power_spectrum(images: Tensor | Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a set (its images or their `power_spectrum`):
    (freqs, power), freqs in cycles per pixel from 0 to Nyquist (0.5) in steps of 1/side; plot
    power on a log scale."""
    power, radius = _spectrum(images)
    side = min(power.shape)
    ring = (radius * side).round().long().flatten()  # ring index of each frequency
    keep = ring <= side // 2
    total = torch.bincount(ring[keep], power.flatten()[keep], side // 2 + 1)
    count = torch.bincount(ring[keep], minlength=side // 2 + 1)
    return (torch.arange(side // 2 + 1) / side).numpy(), (total / count).numpy()


def sharpness_ratio(
    images: Tensor | Spectrum, real: Tensor | Spectrum, cutoff: float = 0.25
) -> float:
    """Power above `cutoff` cycles per pixel (half Nyquist) of `images` over that of `real`
    (each the images or their `power_spectrum`): 1 = as sharp as real, < 1 = blurred, > 1 =
    noisier than real."""
    (power, radius), (power_real, _) = _spectrum(images), _spectrum(real)
    if power.shape != power_real.shape:
        raise ValueError(f"images and real differ in size: {power.shape}, {power_real.shape}")
    high = radius > cutoff
    return float(power[high].sum() / power_real[high].sum())
