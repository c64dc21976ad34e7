"""Gated PixelCNN prior over VQ-VAE code grids.

van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"
(https://arxiv.org/abs/1606.05328). Two stacks per layer remove the blind spot of the original
PixelCNN: the vertical stack sees every row above the current one, the horizontal stack sees
the current row to the left and takes the vertical stack in through a 1x1 convolution.

Causality comes from cropped kernels plus a mask on the first layer only:
    vertical   kernel (k//2 + 1, k): rows i-k//2..i,  padded above and on both sides
    horizontal kernel (1, k//2 + 1): cols j-k//2..j,  padded on the left
A layer with dilation d spaces its taps d apart (rows i-d*(k//2)..i in steps of d, and so on),
as WaveNet's layers do (van den Oord et al. 2016, https://arxiv.org/abs/1609.03499): with
PriorConfig.dilation the layers after the first cycle through 1, 2, 4, .. up to it, so that a
few layers see most of the grid above at no extra cost. The taps stay above or to the left, so
causality is untouched.
Mask "A" (first layer) removes the current row from the vertical kernel and the current
position from the horizontal one; mask "B" layers keep them, since by then the features at
(i, j) only depend on inputs before (i, j) in raster order.

Every gate also gets a learned positional bias (section 2.3, location-dependent conditioning
with a spatial map): one embedding `pos` (P, h, w) shared by all layers, projected per layer by
a 1x1 convolution to the vertical and horizontal gate pre-activations. It does not depend on the
codes, so causality is untouched; it lets the prior place background and brain on the grid,
which a translation-equivariant stack cannot.

A bottom prior of two code levels (PriorConfig.top_grid) is told the top codes the same way:
their map on the bottom grid (vqgen.conditioning.TopCodesEmbedding) is projected per layer by
a 1x1 convolution into both gates. Every top code is known before the bottom grid is drawn, so
this keeps the prior causal in the bottom codes.

The blocks also expose `vertical` on pre-padded rows (and the weights of the horizontal stack),
so that `vqgen.sampling.sample_codes` can run one row (vertical) or one position (horizontal)
at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen.conditioning import TopCodesEmbedding, condition_embedding
from vqgen.config import PriorConfig

POSITION_CHANNELS = 16  # P, channels of the positional embedding shared by all layers


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 mask; no padding of its own.

    mask None keeps every tap (the cropped kernel shape alone is causal).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        mask: Tensor | None,
        dilation: int = 1,
    ):
        super().__init__(in_channels, out_channels, kernel, dilation=dilation)
        assert mask is None or mask.shape == kernel, (mask.shape, kernel)
        mask = mask.to(self.weight.dtype) if mask is not None else None
        self.register_buffer("mask", mask, persistent=False)

    @property
    def masked_weight(self) -> Tensor:
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight, self.bias)


class Dropout(nn.Module):
    """nn.Dropout, faster on a CPU: torch's CPU generator draws each element's random number
    one by one (3-4 ms for a (32, 64, 16, 16) mask), so the mask is cut from the four 16-bit
    pieces of 64-bit draws instead, a quarter of the draws. A draw's top piece lacks its sign
    bit, so it is held against half the cut. The rate is p to a 32,768th and the kept features
    are scaled to keep the mean. Seeded by torch's generator, as nn.Dropout is, so --resume
    continues exactly; on a GPU it is nn.Dropout's."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        half = round(p * 2**15)  # dropped: below -2**15 + 2 half in pieces 0-2, half in piece 3
        # not a buffer: only the CPU uses it, and DDP broadcasts no int16 buffers
        self.cuts = torch.tensor([2 * half - 2**15] * 3 + [half], dtype=torch.int16)
        self.scale = 1 / (1 - half / 2**15)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not self.p:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        draws = torch.empty(-(-n // 4), dtype=torch.int64).random_()  # 63 random bits each
        keep = draws.view(torch.int16).view(-1, 4) >= self.cuts  # (n/4, 4)
        keep = keep.view(-1)[:n].view(x.shape)
        return x * keep.to(x.dtype).mul_(self.scale)


def gate(x: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) over the two channel halves of x: (B, 2C, ...) -> (B, C, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedBlock(nn.Module):
    """One gated layer: vertical and horizontal stacks; position and condition enter both gates.

    Args:
        channels: feature channels C of both stacks.
        kernel: odd kernel size k; each layer widens the receptive field by k//2 on each side.
        mask: "A" for the first layer (current position hidden), "B" for the others.
        conditional: whether a (B, C) condition embedding is added inside the gates.
        positions: channels P of the positional embedding (P, h, w) added inside the gates.
        spatial: whether a (B, C, h, w) map of the top codes is added inside the gates.
        dropout: probability of zeroing a gated horizontal feature in training (none in eval,
            so sampling is deterministic given its random draws).
        dilation: spacing d of the kernel's taps; the layer then widens it by d * (k//2).
    """

    def __init__(
        self,
        channels: int,
        kernel: int,
        mask: str,
        conditional: bool,
        positions: int,
        dropout: float = 0.0,
        spatial: bool = False,
        dilation: int = 1,
    ):
        super().__init__()
        assert mask in ("A", "B"), mask
        assert mask == "B" or dilation == 1, "the masked first layer is not dilated"
        self.dilation = dilation
        self.pad = kernel // 2 * dilation  # how far the taps reach: the padding each side needs
        v_mask = h_mask = None
        if mask == "A":
            v_mask = torch.ones(kernel // 2 + 1, kernel)
            v_mask[-1] = 0  # the current row
            h_mask = torch.ones(1, kernel // 2 + 1)
            h_mask[:, -1] = 0  # the current position
        c2 = 2 * channels
        self.v_conv = MaskedConv2d(channels, c2, (kernel // 2 + 1, kernel), v_mask, dilation)
        self.h_conv = MaskedConv2d(channels, c2, (1, kernel // 2 + 1), h_mask, dilation)
        self.v_to_h = nn.Conv2d(c2, c2, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.dropout = Dropout(dropout)
        self.cond = nn.Linear(channels, 2 * c2) if conditional else None
        self.pos = nn.Conv2d(positions, 2 * c2, 1, bias=False)
        self.top = nn.Conv2d(channels, 2 * c2, 1, bias=False) if spatial else None
        self.residual = mask == "B"  # with mask A the input at (i, j) must not reach (i, j)
        self.masked = mask == "A"

    def hidden_weights(self) -> list[Tensor]:
        """The weights of the block's convolutions and linear maps that vqgen.optim's Muon
        updates: every one but the positional map's projection, an input's as much as an
        embedding is (biases and embeddings stay with AdamW)."""
        return [p for name, p in self.named_parameters() if p.dim() >= 2 and name != "pos.weight"]

    def gate_bias(
        self, pos: Tensor, c: Tensor | None, top: Tensor | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The terms of the gate biases (vertical, horizontal), each broadcastable to
        (B, 2C, h, w): position (1, 2C, h, w), condition (B, 2C, 1, 1), top codes (B, 2C, h, w).

        pos: the positional embedding (1, P, h, w); c: a (B, C) condition embedding or None;
        top: the (B, C, h, w) map of the top codes, or None. The terms stay apart because adding
        each to a convolution's output costs less than materialising their (B, 4C, h, w) sum.
        """
        terms = [self.pos(pos)]  # (1, 4C, h, w)
        if self.cond is not None and c is not None:
            terms.append(self.cond(c)[:, :, None, None])  # (B, 4C, 1, 1)
        if self.top is not None and top is not None:
            terms.append(self.top(top))  # (B, 4C, h, w)
        halves = [term.chunk(2, dim=1) for term in terms]
        return [v for v, _ in halves], [h for _, h in halves]

    def taps(self, conv: MaskedConv2d, padded: Tensor, rows_apart: bool = True) -> Tensor:
        """`conv` (v_conv or h_conv) on its padded input. Mask "A" hides the kernel's last row
        (vertical) or column (horizontal): that layer convolves with the rest alone, on the
        input without its last row or column, the same sums for less work. With `rows_apart`
        False the input holds only the kernel's rows (d apart in the grid, as the sampler
        gathers them), so only its columns are spaced by the dilation."""
        vertical = conv is self.v_conv
        weight, x = conv.weight, padded
        if self.masked:
            weight = weight[:, :, :-1] if vertical else weight[..., :-1]
            x = x[:, :, :-1] if vertical else x[..., :-1]
        dilation = conv.dilation if rows_apart else (1, conv.dilation[1])
        return F.conv2d(x, weight, conv.bias, dilation=dilation)

    def vertical(
        self, v_padded: Tensor, bv: list[Tensor], gated: bool = True, rows_apart: bool = True
    ) -> tuple[Tensor | None, Tensor]:
        """Vertical stack on input padded p = d * (k//2) above and on both sides.

        (B, C, h + p, w + 2p) -> gated output (B, C, h, w), term for the
        horizontal stack (B, 2C, h, w). bv: gate bias terms for these rows, from `gate_bias`.
        The last layer's gated output feeds nothing: with `gated` False it is None. With
        `rows_apart` False, v_padded holds only the k//2 + 1 rows the kernel reads (`taps`).
        """
        pre = sum(bv, self.taps(self.v_conv, v_padded, rows_apart))
        return gate(pre) if gated else None, self.v_to_h(pre)

    def horizontal(self, h_padded: Tensor, from_v: Tensor, bh: list[Tensor]) -> Tensor:
        """Horizontal stack on input padded p = d * (k//2) on the left: (B, C, h, w + p) ->
        (B, C, h, w).

        from_v: the vertical term from `vertical`, (B, 2C, h, w); bh: gate bias terms.
        """
        pre = sum(bh, self.taps(self.h_conv, h_padded) + from_v)
        out = self.h_out(self.dropout(gate(pre)))
        return out + h_padded[..., self.pad :] if self.residual else out

    def forward(
        self,
        v: Tensor,
        h: Tensor,
        pos: Tensor,
        c: Tensor | None = None,
        top: Tensor | None = None,
        gated: bool = True,
    ) -> tuple[Tensor | None, Tensor]:
        """(vertical, horizontal) features (B, C, h, w) -> the next layer's; the vertical
        ones None where not `gated` (the last layer)."""
        p = self.pad
        bv, bh = self.gate_bias(pos, c, top)
        v_next, from_v = self.vertical(F.pad(v, (p, p, p, 0)), bv, gated)
        return v_next, self.horizontal(F.pad(h, (p, 0, 0, 0)), from_v, bh)


def layer_dilations(cfg: PriorConfig) -> list[int]:
    """Each gated layer's dilation: 1 for the first, then 1, 2, 4, .. cfg.dilation, repeated."""
    cycle = [2**k for k in range(cfg.dilation.bit_length())]  # 1, 2, .., dilation
    return [1] + [cycle[i % len(cycle)] for i in range(cfg.layers - 1)]


class GatedPixelCNN(nn.Module):
    """Autoregressive prior p(codes) over (grid x grid) code grids in raster order.

    `forward(codes, cond, top, drop)` gives logits (B, K, h, w) where the logits at (i, j)
    depend only on codes before (i, j) in raster order, on (i, j) itself through the positional
    embedding `pos`, on cond, a (B,) tensor as vqgen.conditioning describes it for
    PriorConfig.condition (ignored for "none"), and for a bottom prior (cfg.top_grid) on every
    top code, (B, gt, gt). drop, a (B,) bool, hides the condition of its rows behind a learned
    "none" (classifier-free guidance, Ho & Salimans 2021: trained at cfg.cond_dropout, sampled
    with the conditioned and hidden rows side by side).
    """

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        self.embedding = nn.Embedding(cfg.codebook_size, C)
        self.cond_embedding = condition_embedding(cfg, C)
        conditional = self.cond_embedding is not None
        # small like GPT-2's position embedding: the prior starts close to translation-equivariant
        self.pos = nn.Parameter(0.02 * torch.randn(1, POSITION_CHANNELS, cfg.grid, cfg.grid))
        spatial = cfg.top_grid > 0
        self.blocks = nn.ModuleList(
            GatedBlock(
                C,
                cfg.kernel,
                "A" if i == 0 else "B",
                conditional,
                POSITION_CHANNELS,
                cfg.dropout,
                spatial,
                dilation,
            )
            for i, dilation in enumerate(layer_dilations(cfg))
        )
        # applied over the channels of each position: (..., C) -> (..., K)
        self.out = nn.Sequential(
            nn.ReLU(), nn.Linear(C, C), nn.ReLU(), nn.Linear(C, cfg.codebook_size)
        )
        factor = cfg.grid // cfg.top_grid if spatial else 0
        self.top_embedding = TopCodesEmbedding(cfg.codebook_size, C, factor) if spatial else None
        # the learned "none" that hides the condition (classifier-free guidance)
        self.null_cond = nn.Parameter(torch.zeros(C)) if cfg.cond_dropout else None

    def embed(self, codes: Tensor) -> Tensor:
        """Code grid (B, h, w) long -> embeddings (B, C, h, w). The codes' range is checked where
        they are read (vqgen.inference.read_codes), not here: a check would make the host wait
        for the device at every step."""
        g = self.cfg.grid
        assert codes.dim() == 3 and codes.shape[1:] == (g, g), f"codes {tuple(codes.shape)}"
        assert not (codes.dtype.is_floating_point or codes.dtype == torch.bool), codes.dtype
        # (B, h, w, C) -> (B, C, h, w), made contiguous: left a channels-last view, it would make
        # every add in the gated blocks mix memory layouts, several times slower on a CPU
        return self.embedding(codes.long()).permute(0, 3, 1, 2).contiguous()

    def embed_condition(
        self, cond: Tensor | None, batch: int, drop: Tensor | None = None
    ) -> Tensor | None:
        """cond (batch,) -> condition embedding (batch, C), the learned "none" where drop (a
        (batch,) bool) is set; None when the prior is unconditional."""
        if self.cond_embedding is None:
            return None
        kind = self.cfg.condition
        assert cond is not None and cond.shape == (batch,), f"condition '{kind}' needs (B,) cond"
        c = self.cond_embedding(cond)
        if drop is not None:
            assert self.null_cond is not None, "drop needs a prior trained with cond_dropout"
            c = torch.where(drop[:, None], self.null_cond.to(c.dtype), c)
        return c

    def embed_top(self, top: Tensor | None, batch: int) -> Tensor | None:
        """Top codes (batch, gt, gt) -> their map on this grid (batch, C, h, w); None for a
        prior without a top level."""
        if self.top_embedding is None:
            return None
        gt = self.cfg.top_grid
        assert top is not None and top.shape == (batch, gt, gt), "a bottom prior needs top codes"
        return self.top_embedding(top)

    def body(
        self,
        emb: Tensor,
        cond: Tensor | None = None,
        top: Tensor | None = None,
        drop: Tensor | None = None,
    ) -> Tensor:
        """Embeddings (B, C, h, w) -> horizontal-stack features (B, C, h, w)."""
        g = self.cfg.grid
        assert emb.shape[1:] == (self.cfg.channels, g, g), f"emb {tuple(emb.shape)}"
        c = self.embed_condition(cond, emb.shape[0], drop)
        top_map = self.embed_top(top, emb.shape[0])
        v = h = emb
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            v, h = block(v, h, self.pos, c, top_map, gated=i < last)
        return h

    def head(self, features: Tensor) -> Tensor:
        """Features (B, C, h, w) -> logits (B, K, h, w)."""
        return self.out(features.movedim(1, -1)).movedim(-1, 1)  # via (B, h, w, C)

    def forward(
        self,
        codes: Tensor,
        cond: Tensor | None = None,
        top: Tensor | None = None,
        drop: Tensor | None = None,
    ) -> Tensor:
        return self.head(self.body(self.embed(codes), cond, top, drop))
