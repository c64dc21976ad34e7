"""Stage 1: a VQ-VAE that turns (B, 1, S, S) slices into (B, S/f, S/f) grids of codes and back.

The architecture of van den Oord et al., "Neural Discrete Representation Learning"
(arXiv:1711.00937): strided convolutions down by f = 2, 4 or 8, residual blocks, a 1x1 projection
to the code dimension, the vector quantizer, and a mirrored decoder with transposed
convolutions. No normalisation layers, so a slice's codes never depend on the rest of its batch.

Stage 2, sampling and evaluation use only `encode`, `quantize`, `decode`, `codes`, `lookup`,
`decode_codes` and `forward`; with two code levels (VQ-VAE-2) each takes or gives one entry per
level, coarse first. The decoder's output is unbounded; callers clamp it to [0, 1]
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
    """Encoder -> VectorQuantizer -> Decoder for single-channel slices of side `cfg.size`.

    With `cfg.levels == 2` it is VQ-VAE-2 (Razavi et al. 2019, https://arxiv.org/abs/1906.00446):
    a top encoder takes the bottom encoder's features down a further `top_downsample`, its codes
    are decoded back to the bottom grid and the bottom quantizer sees them beside the bottom
    features, and the decoder takes both levels (the top one upsampled). The top grid holds the
    slice's global structure, the bottom grid the detail. Codes of every level are lists,
    coarse first: [codes] or [top codes, bottom codes].
    """

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        res_channels = max(cfg.hidden // 4, 1)
        two = cfg.levels == 2
        trunk = (cfg.hidden, cfg.res_blocks, res_channels)
        # with two levels the bottom encoder gives features, which both levels quantize
        self.encoder = Encoder(1, *trunk, cfg.downsample, cfg.hidden if two else cfg.code_dim)
        self.quantizer = self.make_quantizer()
        self.decoder = Decoder(cfg.code_dim * cfg.levels, *trunk, cfg.downsample, 1)
        if two:
            up = cfg.top_downsample
            self.top_encoder = Encoder(cfg.hidden, *trunk, up, cfg.code_dim)
            self.top_quantizer = self.make_quantizer()
            self.top_decoder = Decoder(cfg.code_dim, *trunk, up, cfg.hidden)  # to the bottom grid
            self.bottom_in = nn.Conv2d(2 * cfg.hidden, cfg.code_dim, 1)
            self.top_upsample = nn.Sequential(  # top code vectors onto the bottom grid
                *(
                    nn.ConvTranspose2d(cfg.code_dim, cfg.code_dim, 4, stride=2, padding=1)
                    for _ in range(up.bit_length() - 1)
                )
            )

    def hidden_weights(self) -> list[Tensor]:
        """The weights that vqgen.optim's Muon updates: every convolution's but the first one,
        which reads the slice's pixels, and the last one, which writes them (those, the biases
        and the codebooks stay with AdamW)."""
        pixels = (self.encoder.net[0], self.decoder.net[-1])
        convs = (nn.Conv2d, nn.ConvTranspose2d)
        return [m.weight for m in self.modules() if isinstance(m, convs) and m not in pixels]

    def make_quantizer(self) -> VectorQuantizer:
        cfg = self.cfg
        return VectorQuantizer(
            cfg.codebook_size,
            cfg.code_dim,
            beta=cfg.beta,
            quantizer=cfg.quantizer,
            decay=cfg.decay,
            dead_code_threshold=cfg.dead_code_threshold,
        )

    def encode(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) images in [0, 1] -> (B, D, h, w) encoder outputs z_e (with two levels,
        (B, hidden, h, w) bottom features)."""
        size = self.cfg.size
        assert x.dim() == 4 and x.shape[1:] == (1, size, size), f"x {tuple(x.shape)}"
        assert x.is_floating_point(), f"x must be float in [0, 1], got {x.dtype}"
        return self.encoder(x)

    def bottom_input(self, features: Tensor, z_top: Tensor) -> Tensor:
        """What the bottom quantizer sees: the bottom features beside the decoded top level."""
        return self.bottom_in(torch.cat([features, self.top_decoder(z_top)], dim=1))

    def quantize(self, x: Tensor) -> list[Quantized]:
        """Each level's nearest codes for images x, coarse first; in training mode this also
        updates the codebooks."""
        z_e = self.encode(x)
        if self.cfg.levels == 1:
            return [self.quantizer(z_e)]
        top = self.top_quantizer(self.top_encoder(z_e))
        return [top, self.quantizer(self.bottom_input(z_e, top.z_q))]

    def decode(self, z_q: list[Tensor]) -> Tensor:
        """Each level's (B, D, h, w) code vectors, coarse first -> (B, 1, S, S), unbounded."""
        dim = self.cfg.code_dim
        assert len(z_q) == self.cfg.levels, f"{len(z_q)} levels"
        for z, grid in zip(z_q, self.cfg.grids, strict=True):
            assert z.dim() == 4 and z.shape[1:] == (dim, grid, grid), f"z_q {tuple(z.shape)}"
        if self.cfg.levels == 1:
            return self.decoder(z_q[0])
        top, bottom = z_q
        return self.decoder(torch.cat([self.top_upsample(top), bottom], dim=1))

    @torch.no_grad()
    def codes(self, x: Tensor) -> list[Tensor]:
        """(B, 1, S, S) images -> each level's (B, h, w) long code grid, coarse first; never
        changes the codebooks."""
        z_e = self.encode(x)
        if self.cfg.levels == 1:
            return [self.quantizer.codes(z_e)]
        top = self.top_quantizer.codes(self.top_encoder(z_e))
        z_top = self.top_quantizer.lookup(top)
        return [top, self.quantizer.codes(self.bottom_input(z_e, z_top))]

    @property
    def quantizers(self) -> list[VectorQuantizer]:
        """The quantizer of each code level, coarse first: [bottom] or [top, bottom]."""
        return [self.top_quantizer, self.quantizer] if self.cfg.levels == 2 else [self.quantizer]

    def lookup(self, codes: list[Tensor]) -> list[Tensor]:
        """Each level's (B, h, w) code grid -> its (B, D, h, w) code vectors."""
        assert len(codes) == self.cfg.levels, f"{len(codes)} levels of codes"
        for c, grid in zip(codes, self.cfg.grids, strict=True):
            assert c.dim() == 3 and c.shape[1:] == (grid, grid), f"codes {tuple(c.shape)}"
        return [q.lookup(c) for q, c in zip(self.quantizers, codes, strict=True)]

    def decode_codes(self, codes: list[Tensor]) -> Tensor:
        """Each level's (B, h, w) long code grid, coarse first -> (B, 1, S, S), unbounded."""
        return self.decode(self.lookup(codes))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Quantized]]:
        """Reconstruct x; each level's Quantized carries its loss, codes and perplexity."""
        quantized = self.quantize(x)
        return self.decode([q.z_q for q in quantized]), quantized
