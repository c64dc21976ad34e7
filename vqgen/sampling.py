"""Sampling code grids from a prior, in raster order.

Two samplers that draw the same codes for the same generator state:
    sample_codes_naive  one full forward pass per code position: the reference for every
                        kind of prior, O((hw)^2)
    sample_codes        the fast sampler of the prior's kind (FAST_SAMPLERS), the naive one for
                        a kind without. The gated PixelCNN's caches the activations of every
                        layer (Ramachandran et al. 2017, https://arxiv.org/abs/1704.06001): the
                        vertical stack runs once per row, the horizontal stack and head once
                        per position.
Both draw randomness the same way: Gumbel-max with (n, K) noise per position in raster order,
so float differences of ~1e-6 between the two paths almost never change a code.

    prior.eval()
    codes = sample_levels(prior, 16, temperature=1.0, generator=torch.Generator().manual_seed(0))
    images = vqvae.decode_codes(codes)  # codes: each level's grids, coarse first

`sample_levels` draws a two-level prior's top grid, then its bottom grid told the top codes.
With `guidance` S != 1 every sampler runs the conditioned rows and the same rows with their
condition hidden in one batch and draws from uncond + S (cond - uncond) (`rows_for`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vqgen.models import prior_levels
from vqgen.models.pixelcnn import GatedPixelCNN, gate


def _device(prior: nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else next(prior.parameters()).device


SHARED_ROWS = 128  # rows (samples, twice with guidance) from which the loop takes every thread


@contextmanager
def cpu_threads_for(rows: int, device: torch.device) -> Iterator[None]:
    """Run the per-position loop on one CPU thread for fewer than SHARED_ROWS rows, then
    restore the thread count: each step is then a few (rows, C) matrix products, too small to
    split, and handing them to a second thread costs more than the work, over 10x more when
    other processes share the cores. From SHARED_ROWS on (evaluate's 256 guided samples are
    512) the products are worth splitting: 5.4 s instead of 7.3 for those on 2 cores."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and rows < SHARED_ROWS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pick_codes(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> Tensor:
    """Draw one code per row of logits (n, K) -> (n,) long, by Gumbel-max.

    Noise is drawn even for temperature 0 (argmax) so the generator advances the same way.
    """
    n, K = logits.shape
    gen_device = generator.device if generator is not None else logits.device
    u = torch.rand(n, K, generator=generator, device=gen_device).to(logits.device)
    scores = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if top_k is not None and top_k < K:
        kth = torch.topk(scores, top_k, dim=1).values[:, -1:]  # (n, 1)
        scores = scores.masked_fill(scores < kth, -math.inf)
    if temperature == 0:
        return scores.argmax(dim=1)
    gumbel = -torch.log(-torch.log(u.to(scores.dtype).clamp_min(torch.finfo(u.dtype).tiny)))
    return (scores / temperature + gumbel).argmax(dim=1)


class Rows(NamedTuple):
    """What the prior runs on to draw n grids: with guidance, the n conditioned rows and the
    same n with their condition hidden (`drop`), side by side in one batch."""

    count: int  # rows: n, or 2n with guidance
    cond: Tensor | None  # (rows,)
    top: Tensor | None  # (rows, gt, gt)
    drop: Tensor | None  # (rows,) bool
    pick: Callable[[Tensor], Tensor]  # (rows, K) logits -> (rows,) codes


def rows_for(
    n: int,
    cond: Tensor | None,
    top: Tensor | None,
    guidance: float,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> Rows:
    """The batch to draw n grids from, and how its logits become codes: classifier-free
    guidance takes uncond + guidance x (cond - uncond) (Ho & Salimans 2021), then one code is
    drawn per grid and written to both of its rows."""
    if guidance == 1:
        return Rows(
            n, cond, top, None, lambda logits: pick_codes(logits, temperature, top_k, generator)
        )
    assert cond is not None, "guidance needs a condition"

    def pick(logits: Tensor) -> Tensor:
        conditioned, hidden = logits.float().chunk(2)
        guided = hidden + guidance * (conditioned - hidden)
        return pick_codes(guided, temperature, top_k, generator).repeat(2)

    drop = torch.arange(2 * n, device=cond.device) >= n
    return Rows(2 * n, cond.repeat(2), None if top is None else top.repeat(2, 1, 1), drop, pick)


@torch.no_grad()
def sample_codes_naive(
    prior: nn.Module,
    n: int,
    *,
    cond: Tensor | None = None,
    top: Tensor | None = None,
    guidance: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample n code grids (n, g, g) with one full forward pass per position (the reference).

    cond: (n,) labels or slice positions as the prior's condition requires; top: (n, gt, gt)
    top codes for a bottom prior; guidance: the classifier-free guidance scale (1: none);
    temperature 0 takes the argmax; top_k keeps only the k most likely codes at each position.
    """
    assert n >= 1 and 0 <= temperature < math.inf and (top_k is None or top_k >= 1)
    device = _device(prior, device)
    g = prior.cfg.grid
    cond, top = _on(cond, device), _on(top, device)
    rows = rows_for(n, cond, top, guidance, temperature, top_k, generator)
    codes = torch.zeros(rows.count, g, g, dtype=torch.long, device=device)
    for i in range(g):
        for j in range(g):
            logits = prior(codes, rows.cond, rows.top, rows.drop)[:, :, i, j]  # (rows, K)
            codes[:, i, j] = rows.pick(logits)
    return codes[:n]


@torch.no_grad()
def sample_codes(
    prior: nn.Module,
    n: int,
    *,
    cond: Tensor | None = None,
    top: Tensor | None = None,
    guidance: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample n code grids (n, g, g); the same codes as `sample_codes_naive`, with the fast
    sampler of the prior's kind where it has one."""
    assert n >= 1 and 0 <= temperature < math.inf and (top_k is None or top_k >= 1)
    device = _device(prior, device)
    fast = FAST_SAMPLERS.get(prior.cfg.kind)
    if fast is None:
        return sample_codes_naive(
            prior,
            n,
            cond=cond,
            top=top,
            guidance=guidance,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            device=device,
        )
    rows = rows_for(n, _on(cond, device), _on(top, device), guidance, temperature, top_k, generator)
    return fast(prior, rows, device)[:n]


@torch.no_grad()
def sample_levels(
    prior: nn.Module,
    n: int,
    *,
    cond: Tensor | None = None,
    guidance: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """Sample n code grids of every level, coarse first: the top grid, then the bottom grid
    told the top codes drawn (for a one-level prior, its one grid)."""
    codes: list[Tensor] = []
    for level in prior_levels(prior):
        top = codes[-1] if codes else None
        options = dict(guidance=guidance, temperature=temperature, top_k=top_k)
        codes.append(
            sample_codes(
                level, n, cond=cond, top=top, generator=generator, device=device, **options
            )
        )
    return codes


def _on(x: Tensor | None, device: torch.device) -> Tensor | None:
    return None if x is None else x.to(device)


def sample_gated_pixelcnn(prior: GatedPixelCNN, rows: Rows, device: torch.device) -> Tensor:
    """The gated PixelCNN's fast sampler: the same codes as `sample_codes_naive`.

    Every layer's inputs are kept in zero-padded buffers. At the start of row i the vertical
    stacks of all layers run on that row alone (they only see rows above), and every term of
    the horizontal gates that does not depend on the row's codes is summed once; then at each
    position the horizontal stacks run as one matrix product per tap (k//2 + 1 columns, d
    apart in a layer of dilation d) on column-major buffers, and the head after them. The gate
    biases (position, condition, top codes) are computed once for the whole grid. On a CPU the
    loop runs on one thread for few rows (see `cpu_threads_for`).
    """
    c = prior.embed_condition(rows.cond, rows.count, rows.drop)
    top = prior.embed_top(rows.top, rows.count)
    with cpu_threads_for(rows.count, device):
        return _cached_raster_loop(prior, rows.count, c, top, rows.pick, device)


def _cached_raster_loop(
    prior: GatedPixelCNN,
    n: int,
    c: Tensor | None,
    top: Tensor | None,
    pick: Callable[[Tensor], Tensor],
    device: torch.device,
) -> Tensor:
    g, C = prior.cfg.grid, prior.cfg.channels
    blocks = list(prior.blocks)
    P = max(block.pad for block in blocks)  # the farthest any layer's taps reach
    dtype = prior.embedding.weight.dtype
    # per layer: the terms of its gate biases (position, condition, top codes), each
    # (n or 1, 2C, 1 or g, 1 or g), for the vertical and the horizontal stack; kept apart, as
    # their sum over the whole grid would be larger than all of them
    gates = [block.gate_bias(prior.pos, c, top) for block in blocks]

    # each layer's horizontal taps as (shift left, (C, 2C) weight), those its mask keeps, and
    # its output weights (C, C), transposed once for the matrix products at every position
    taps, out_weights = [], []
    for block in blocks:
        kernel = block.h_conv.masked_weight[:, :, 0]  # (2C, C, k//2 + 1), the last tap at j
        width = kernel.shape[-1]
        kept = range(width - 1) if block.masked else range(width)
        shifts = [(width - 1 - t) * block.dilation for t in kept]
        taps.append(
            [(sh, kernel[:, :, t].T.contiguous()) for sh, t in zip(shifts, kept, strict=True)]
        )
        out_weights.append(block.h_out.weight[:, :, 0, 0].T.contiguous())

    # v_in[l]: input of layer l's vertical stack, padded P rows above and P columns each side;
    # v_in[0] holds the embeddings of the codes drawn so far (zeros elsewhere).
    v_in = [torch.zeros(n, C, g + P, g + 2 * P, dtype=dtype, device=device) for _ in blocks]
    codes = torch.zeros(n, g, g, dtype=torch.long, device=device)
    for i in range(g):
        from_v = []  # per layer: the vertical term for the horizontal stack on row i, (g, n, 2C)
        for layer, (block, (bv, _)) in enumerate(zip(blocks, gates, strict=True)):
            row_bias = [term[:, :, i : i + 1] if term.shape[2] > 1 else term for term in bv]
            p, d = block.pad, block.dilation
            rows = v_in[layer][:, :, i + P - p : i + P + 1 : d, P - p : P + g + p]  # the taps'
            last = layer + 1 == len(blocks)
            v_out, to_h = block.vertical(rows, row_bias, not last, rows_apart=False)
            if v_out is not None:
                v_in[layer + 1][:, :, i + P, P : P + g] = v_out[:, :, 0]
            from_v.append(to_h[:, :, 0].permute(2, 0, 1).contiguous())  # (n, 2C, g) -> (g, n, 2C)
        # h_in[l]: layer l's horizontal input on row i, column-major (P + g, n, C), so that
        # each tap is a contiguous (n, C) block; h_bias[l]: every term of its gates that does
        # not depend on this row's codes, (g, n, 2C): the vertical term, position, condition
        h_in = [torch.zeros(g + P, n, C, dtype=dtype, device=device) for _ in blocks]
        h_bias = [
            sum((row_term(term, i) for term in bh), v_term + block.h_conv.bias).contiguous()
            for block, v_term, (_, bh) in zip(blocks, from_v, gates, strict=True)
        ]
        for j in range(g):
            for layer, block in enumerate(blocks):
                x = h_in[layer]
                pre = h_bias[layer][j]
                for shift, weight in taps[layer]:  # (n, C) @ (C, 2C) per tap
                    pre = torch.addmm(pre, x[P + j - shift], weight)
                out = torch.addmm(block.h_out.bias, gate(pre), out_weights[layer])
                if block.residual:
                    out += x[P + j]
                if layer + 1 < len(blocks):
                    h_in[layer + 1][P + j] = out
            code = pick(prior.out(out))  # from (n, K) logits
            codes[:, i, j] = code
            embedded = prior.embedding(code)  # (n, C)
            v_in[0][:, :, i + P, P + j] = embedded
            h_in[0][P + j] = embedded
    return codes


def row_term(term: Tensor, i: int) -> Tensor:
    """A gate bias term (n or 1, 2C, 1 or g, 1 or g) on row i, laid out as the horizontal
    stack's buffers are: (g or 1, n or 1, 2C)."""
    row = term[:, :, i if term.shape[2] > 1 else 0]  # (n or 1, 2C, g or 1)
    return row.permute(2, 0, 1)


# the fast sampler of each prior kind: (prior, rows, device) -> (rows, g, g) codes
FAST_SAMPLERS: dict[str, Callable[..., Tensor]] = {"gated_pixelcnn": sample_gated_pixelcnn}
