"""A PatchGAN discriminator for the VQ-VAE's adversarial loss (Isola et al. 2017, as used by
VQGAN, Esser et al. 2021, arXiv:2012.09841): a stack of 4x4 convolutions that scores every
overlapping patch of a slice as real or reconstructed, so it judges texture, not layout.

    disc = PatchDiscriminator(channels=32, layers=3)
    logits = disc(images)   # (B, 1, S, S) -> (B, 1, h, w), one logit per patch

No normalisation layers: the adversarial step scores real and reconstructed slices in separate
calls, and a BatchNorm would see two different batch statistics; per-image norms would scale
away the grey/white contrast the discriminator is there to see.
"""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """`layers` stride-2 4x4 convs (channels doubling, at most 8x), one stride-1 conv, a logit.

    The receptive field of each output logit: 34 px for layers=2, 70 px for layers=3.
    """

    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        assert channels > 0 and layers >= 1, f"channels {channels}, layers {layers}"
        widths = [channels * min(2**i, 8) for i in range(layers + 1)]
        blocks: list[nn.Module] = [nn.Conv2d(1, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, layers):
            blocks += [nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1), nn.LeakyReLU(0.2)]
        blocks += [nn.Conv2d(widths[layers - 1], widths[layers], 4, 1, 1), nn.LeakyReLU(0.2)]
        blocks.append(nn.Conv2d(widths[layers], 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        assert x.dim() == 4 and x.shape[1] == 1, f"x {tuple(x.shape)}"
        return self.net(x)
