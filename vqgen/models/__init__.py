"""The networks: stage 1's VQ-VAE (vqvae, quantizer, discriminator) and stage 2's priors.

A prior is an nn.Module built from a PriorConfig, with `cfg` and
`forward(codes, cond, top, drop)` -> logits (B, K, h, w) where the logits at (i, j) depend only
on codes before (i, j) in raster order. PRIORS names the module of each `PriorConfig.kind`;
vqgen.sampling draws from any of them (with a fast sampler where the kind has one).

A run whose VQ-VAE has two code levels has one prior per level, held together in a
`TwoLevelPrior` that trains, saves and resumes as one model: p(top) p(bottom | top).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vqgen.config import PriorConfig
from vqgen.models.pixelcnn import GatedPixelCNN

PRIORS: dict[str, type[nn.Module]] = {"gated_pixelcnn": GatedPixelCNN}


class TwoLevelPrior(nn.Module):
    """The priors of a two-level VQ-VAE, `top` over the top grid and `bottom` over the bottom
    grid, told the top codes (its cfg.top_grid). `cfg` is the bottom prior's, which shares the
    condition and codebook with the top one."""

    def __init__(self, top: PriorConfig, bottom: PriorConfig) -> None:
        super().__init__()
        assert bottom.top_grid == top.grid and not top.top_grid, (top, bottom)
        self.top = build_prior(top)
        self.bottom = build_prior(bottom)
        self.cfg = bottom

    def forward(
        self, codes: list[Tensor], cond: Tensor | None = None, drop: Tensor | None = None
    ) -> list[Tensor]:
        """[top codes, bottom codes] -> [top logits, bottom logits]."""
        top, bottom = codes
        return [self.top(top, cond, drop=drop), self.bottom(bottom, cond, top, drop)]


def build_prior(cfg: PriorConfig, top: PriorConfig | None = None) -> nn.Module:
    """A new prior of the kind `cfg.kind`; with `top`, the two priors of a two-level run
    (cfg is then the bottom prior's)."""
    if top is not None:
        return TwoLevelPrior(top, cfg)
    return PRIORS[cfg.kind](cfg)


def prior_levels(prior: nn.Module) -> list[nn.Module]:
    """The prior of each code level, coarse first: [prior] or [top prior, bottom prior]."""
    return [prior.top, prior.bottom] if isinstance(prior, TwoLevelPrior) else [prior]


def level_logits(
    prior: nn.Module, codes: list[Tensor], cond: Tensor | None, drop: Tensor | None = None
) -> list[Tensor]:
    """Each level's logits (B, K, h, w) for each level's codes, coarse first; `prior` may be
    wrapped in DDP, which keeps it as `.module`."""
    if isinstance(getattr(prior, "module", prior), TwoLevelPrior):
        return prior(codes, cond, drop)
    (grid,) = codes
    return [prior(grid, cond, drop=drop)]


def code_nll(logits: Tensor, codes: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of `codes` (B, h, w) under `logits` (B, K, h, w), in float32, over the
    logits' codes axis laid out last (the prior's head makes them so): a softmax along
    contiguous memory, several times cheaper on a CPU than along the strided axis 1."""
    K = logits.shape[1]
    return F.cross_entropy(
        logits.movedim(1, -1).reshape(-1, K).float(), codes.reshape(-1), reduction=reduction
    )
