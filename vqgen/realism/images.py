"""What the realism measures share: a seeded RNG, input checks, resizing and flips."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

Device = str | torch.device


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG (weight init, torchmetrics' subsets) without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_images(name: str, x: Tensor, min_count: int = 1) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be images of shape (N, 1, H, W), got {tuple(x.shape)}")
    if len(x) < min_count:
        raise ValueError(f"{name} must hold at least {min_count} images, got {len(x)}")


def at_size(x: Tensor, size: int) -> Tensor:
    """Area-downsample slices larger than `size` (anti-aliased); smaller ones stay as they are."""
    x = x.float()
    return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] > size else x


def random_flip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Mirror a random half left-right: a brain's halves look alike, so it stays realistic."""
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
