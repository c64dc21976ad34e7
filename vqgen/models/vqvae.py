"""Stage 1: a VQ-VAE that turns (B, 1, S, S) slices into (B, S/f, S/f) grids of codes and back.

The architecture of van den Oord et al., "Neural Discrete Representation Learning"
(arXiv:1711.00937): strided convolutions down by f = 2, 4 or 8, residual blocks, a 1x1 projection
to the code dimension, the vector quantizer, and a mirrored decoder with transposed
convolutions. No normalisation layers, so a slice's codes never depend on the rest of its batch.

Stage 2, sampling and evaluation use only `encode`, `quantize`, `decode`, `codes`,
`decode_codes` and `forward`. The decoder's output is unbounded; callers clamp it to [0, 1]
for images and metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqgen.config import VQVAEConfig
from vqgen.models.quantizer import Quantized, VectorQuantizer


def stage_widths(hidden: int, stages: int) -> list[int]:
    """Channels of each resolution stage, full resolution first: halved per stage up from hidden.

    Wide layers at full resolution cost the most, so the trunk widens as it downsamples.
    """
    return [max(hidden >> (stages - 1 - i), 1) for i in range(stages)]


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), with a narrower middle of `res_channels`."""

    def __init__(self, channels: int, res_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, res_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(res_channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B, in_channels, S, S) -> (B, out_channels, S/downsample, S/downsample).

    Args:
        in_channels: image channels.
        hidden: channels of the trunk at the lowest resolution.
        res_blocks: residual blocks after the downsampling.
        res_channels: middle channels of each residual block.
        downsample: total stride, a power of two; each 4x4 stride-2 conv halves the side.
        out_channels: the code dimension.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        res_blocks: int,
        res_channels: int,
        downsample: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        widths = stage_widths(hidden, downsample.bit_length() - 1)
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(channels, hidden, 3, padding=1))
        layers += [ResBlock(hidden, res_channels) for _ in range(res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(hidden, out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, in_channels, s, s) -> (B, out_channels, s*upsample, s*upsample), unbounded.

    Mirrors `Encoder`: 3x3 conv, residual blocks, then 4x4 stride-2 transposed convs that
    narrow the trunk as the side doubles, and a 3x3 conv to the output channels.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        res_blocks: int,
        res_channels: int,
        upsample: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        stages = upsample.bit_length() - 1
        widths = stage_widths(hidden, stages + 1)[:-1][::-1]  # below hidden, lowest res first
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
        layers += [ResBlock(hidden, res_channels) for _ in range(res_blocks)]
        layers.append(nn.ReLU())
        channels = hidden
        for width in widths:
            layers += [nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class VQVAE(nn.Module):
    """Encoder -> VectorQuantizer -> Decoder for single-channel slices of side `cfg.size`."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        res_channels = max(cfg.hidden // 4, 1)
        self.encoder = Encoder(
            1, cfg.hidden, cfg.res_blocks, res_channels, cfg.downsample, cfg.code_dim
        )
        self.quantizer = VectorQuantizer(
            cfg.codebook_size,
            cfg.code_dim,
            beta=cfg.beta,
            quantizer=cfg.quantizer,
            decay=cfg.decay,
            dead_code_threshold=cfg.dead_code_threshold,
        )
        self.decoder = Decoder(
            cfg.code_dim, cfg.hidden, cfg.res_blocks, res_channels, cfg.downsample, 1
        )

    @property
    def last_layer(self) -> Tensor:
        """The decoder's last weight, where VQGAN's adaptive weight compares gradients."""
        return self.decoder.net[-1].weight

    def encode(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) images in [0, 1] -> (B, D, h, w) encoder outputs z_e."""
        size = self.cfg.size
        assert x.dim() == 4 and x.shape[1:] == (1, size, size), f"x {tuple(x.shape)}"
        assert x.is_floating_point(), f"x must be float in [0, 1], got {x.dtype}"
        return self.encoder(x)

    def quantize(self, z_e: Tensor) -> Quantized:
        """Nearest codes for z_e; in training mode this also updates the codebook."""
        return self.quantizer(z_e)

    def decode(self, z_q: Tensor) -> Tensor:
        """(B, D, h, w) code vectors -> (B, 1, S, S) reconstructions, unbounded."""
        grid, dim = self.cfg.grid, self.cfg.code_dim
        assert z_q.dim() == 4 and z_q.shape[1:] == (dim, grid, grid), f"z_q {tuple(z_q.shape)}"
        return self.decoder(z_q)

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) images -> (B, h, w) long code grid; never changes the codebook."""
        return self.quantizer.codes(self.encode(x))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """(B, h, w) long code grid -> (B, 1, S, S) reconstructions, unbounded."""
        grid = self.cfg.grid
        assert codes.dim() == 3 and codes.shape[1:] == (grid, grid), f"codes {tuple(codes.shape)}"
        return self.decode(self.quantizer.lookup(codes))

    def forward(self, x: Tensor) -> tuple[Tensor, Quantized]:
        """Reconstruct x; the Quantized carries the quantizer loss, codes and perplexity."""
        q = self.quantize(self.encode(x))
        return self.decode(q.z_q), q
