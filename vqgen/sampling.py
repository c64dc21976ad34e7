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
from vqgen.models.pixelcnn import GatedPixelCNN


def _device(prior: nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else next(prior.parameters()).device


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the per-position loop on one CPU thread, then restore the thread count.

    Each step is a few (n, C) matrix products, far too small to split: handing them to a
    second thread costs more than the work, over 10x more when other processes share the cores.
    """
    threads = torch.get_num_threads()
    if device.type == "cpu":
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
    stacks of all layers run on that row alone (they only see rows above); then at each
    position the horizontal stacks (as matrix products) and the head run on a window of
    k//2 + 1 columns (d apart in a layer of dilation d). The gate biases (position, condition,
    top codes) are computed once for the whole grid and indexed at row i (vertical) or at
    (i, j) (horizontal). On a CPU the loop runs on one thread (see `one_cpu_thread`).
    """
    c = prior.embed_condition(rows.cond, rows.count, rows.drop)
    top = prior.embed_top(rows.top, rows.count)
    with one_cpu_thread(device):
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
    # per layer: gate biases (position + condition) for the vertical stack, (n or 1, 2C, g, g),
    # and for the horizontal stack, indexed [i, j] -> (n or 1, 2C)
    gates = []
    for block in blocks:
        bv, bh = (sum(terms[1:], terms[0]) for terms in block.gate_bias(prior.pos, c, top))
        gates.append((bv, bh.permute(2, 3, 0, 1).contiguous()))  # bh: (g, g, n or 1, 2C)

    # v_in[l]: input of layer l's vertical stack, padded P rows above and P columns each side;
    # v_in[0] holds the embeddings of the codes drawn so far (zeros elsewhere).
    v_in = [torch.zeros(n, C, g + P, g + 2 * P, dtype=dtype, device=device) for _ in blocks]
    codes = torch.zeros(n, g, g, dtype=torch.long, device=device)
    for i in range(g):
        from_v = []  # per layer: the vertical term for the horizontal stack on row i, (g, n, 2C)
        for layer, (block, (bv, _)) in enumerate(zip(blocks, gates, strict=True)):
            row_bias = bv[:, :, i : i + 1]  # (n or 1, 2C, 1, g)
            p = block.pad
            rows = v_in[layer][:, :, i + P - p : i + P + 1, P - p : P + g + p]
            v_out, to_h = block.vertical(rows, [row_bias])  # (n, C, 1, g)
            if layer + 1 < len(blocks):
                v_in[layer + 1][:, :, i + P, P : P + g] = v_out[:, :, 0]
            from_v.append(to_h[:, :, 0].permute(2, 0, 1).contiguous())  # (n, 2C, g) -> (g, n, 2C)
        # h_in[l]: input of layer l's horizontal stack on row i, padded P columns on the left
        h_in = [v_in[0][:, :, i + P, : g + P]]  # a view of the embeddings: codes appear as drawn
        h_in += [torch.zeros(n, C, g + P, dtype=dtype, device=device) for _ in blocks[1:]]
        for j in range(g):
            for layer, (block, (_, bh)) in enumerate(zip(blocks, gates, strict=True)):
                p, d = block.pad, block.dilation
                window = h_in[layer][:, :, P + j - p : P + j + 1 : d]  # (n, C, k//2 + 1)
                h = block.horizontal_step(window, from_v[layer][j], bh[i, j])
                if layer + 1 < len(blocks):
                    h_in[layer + 1][:, :, P + j] = h
            code = pick(prior.out(h))  # from (n, K) logits
            codes[:, i, j] = code
            v_in[0][:, :, i + P, P + j] = prior.embedding(code)
    return codes


# the fast sampler of each prior kind: (prior, rows, device) -> (rows, g, g) codes
FAST_SAMPLERS: dict[str, Callable[..., Tensor]] = {"gated_pixelcnn": sample_gated_pixelcnn}
