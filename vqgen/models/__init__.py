"""The networks: stage 1's VQ-VAE (vqvae, quantizer, discriminator) and stage 2's priors.

A prior is an nn.Module built from a PriorConfig, with `cfg` and `forward(codes, cond)` ->
logits (B, K, h, w) where the logits at (i, j) depend only on codes before (i, j) in raster
order. PRIORS names the module of each `PriorConfig.kind`; vqgen.sampling draws from any of
them (with a fast sampler where the kind has one).
"""

from __future__ import annotations

from torch import nn

from vqgen.config import PriorConfig
from vqgen.models.pixelcnn import GatedPixelCNN

PRIORS: dict[str, type[nn.Module]] = {"gated_pixelcnn": GatedPixelCNN}


def build_prior(cfg: PriorConfig) -> nn.Module:
    """A new prior of the kind `cfg.kind`."""
    return PRIORS[cfg.kind](cfg)
