"""Vector quantizer: nearest-code lookup, losses, EMA codebook updates, dead-code restarts.

The layer of van den Oord et al., "Neural Discrete Representation Learning" (arXiv:1711.00937):
each encoder vector is replaced by its nearest codebook entry (squared L2) and gradients pass
straight through to the encoder. Two ways to learn the codebook:

- "st": the codebook is a Parameter trained by the codebook loss ||sg[z_e] - z_q||^2;
- "ema": the codebook is a buffer set to exponential moving averages of the encoder vectors
  assigned to each code (appendix A.1), so only the commitment loss is returned.

Against codebook collapse, the first training batch seeds the codebook with k-means centres of
encoder outputs, and codes whose moving-average usage falls below `dead_code_threshold` are
re-seeded from encoder outputs of the current batch. All state lives in buffers, so
`state_dict` carries it; state changes only in training mode, and all randomness comes from
torch's global RNG so that seeded runs repeat and resume. Under torchrun, batch statistics are
summed and seeding draws from the gathered global batch, so every rank makes the same update
as a single process would.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen import distributed
from vqgen.config import QUANTIZERS

KMEANS_ITERS = 10
LAPLACE_EPS = 1e-5
NOISE_SCALE = 0.01  # jitter, relative to the data's std, on vectors drawn more than once


class Quantized(NamedTuple):
    z_q: Tensor  # (B, D, H, W), straight-through: forward is the code, gradient goes to z_e
    codes: Tensor  # (B, H, W), long
    loss: Tensor  # codebook + beta * commitment ("st") or beta * commitment ("ema"), scalar
    perplexity: Tensor  # exp(entropy) of code usage in this batch, 1..K, scalar


# ---- helpers: pure functions of tensors ----


def flatten(z: Tensor) -> Tensor:
    """(B, D, H, W) -> (B*H*W, D): one row per spatial position."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def squared_distances(x: Tensor, codebook: Tensor) -> Tensor:
    """(N, D), (K, D) -> (N, K) squared L2 distances, as ||x||^2 - 2 x.c + ||c||^2."""
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)


def nearest(x: Tensor, codebook: Tensor) -> Tensor:
    """(N, D) -> (N,) index of the nearest code."""
    return squared_distances(x, codebook).argmin(1)


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of a histogram: K when K codes are used equally, 1 when one code is used."""
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())


def sample_vectors(x: Tensor, n: int) -> Tensor:
    """n rows of x drawn at random; with replacement plus small noise when x has fewer rows."""
    if x.shape[0] >= n:
        return x[torch.randperm(x.shape[0], device=x.device)[:n]]
    picked = x[torch.randint(x.shape[0], (n,), device=x.device)]
    scale = NOISE_SCALE * x.std(correction=0).clamp_min(1e-3)
    return picked + scale * torch.randn_like(picked)


def kmeans(x: Tensor, k: int, iters: int = KMEANS_ITERS) -> Tensor:
    """(N, D) -> (k, D) centres: Lloyd's iterations from k random rows; empty clusters stay put."""
    centres = sample_vectors(x, k)
    for _ in range(iters):
        codes = nearest(x, centres)
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, codes, x)
        means = sums / counts.clamp_min(1).unsqueeze(1)
        centres = torch.where(counts.unsqueeze(1) > 0, means, centres)
    return centres


# ---- the layer ----


class VectorQuantizer(nn.Module):
    """Replace each D-vector of a (B, D, H, W) map by its nearest of `codebook_size` codes.

    Args:
        codebook_size: number of codes K.
        code_dim: length D of each code, the channels of the encoder output.
        beta: weight of the commitment loss ||z_e - sg[z_q]||^2.
        quantizer: "st" learns the codebook by gradient, "ema" by moving averages.
        decay: EMA decay for the codebook ("ema") and for the usage counts (both kinds).
        dead_code_threshold: codes whose EMA usage (vectors per batch) falls below this are
            re-seeded from the current batch; 0 turns restarts off.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        beta: float = 0.25,
        quantizer: str = "st",
        decay: float = 0.99,
        dead_code_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        assert codebook_size >= 1 and code_dim >= 1 and beta >= 0, (codebook_size, code_dim, beta)
        assert quantizer in QUANTIZERS and 0 <= decay < 1 and dead_code_threshold >= 0
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = beta
        self.quantizer = quantizer
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold

        codebook = torch.randn(codebook_size, code_dim)  # replaced by k-means on the first batch
        if quantizer == "st":
            self.codebook = nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
            # EMA sums m_i of appendix A.1; the cluster sizes N_i are `usage`, codebook = m_i / N_i
            self.register_buffer("embed_sum", torch.zeros(codebook_size, code_dim))
        self.register_buffer("usage", torch.zeros(codebook_size))  # EMA of vectors per code
        self.register_buffer("initialised", torch.tensor(False))
        self.known_initialised = False  # read `initialised` once, not every step (a device wait)

    def forward(self, z_e: Tensor) -> Quantized:
        """Quantize encoder outputs (B, D, H, W); in training mode, also update the codebook."""
        self._check(z_e)
        B, _, H, W = z_e.shape
        # distances and EMA in float32, whatever autocast would pick
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            x = flatten(z.detach())  # (B*H*W, D)
            # under torchrun: the whole global batch's vectors, the same on every rank
            x_all = distributed.gather_batch(x, B) if self.training else x
            if self.training and not self.known_initialised:
                if not self.initialised:
                    self.init_codebook_(x_all)
                self.known_initialised = True
            codes = nearest(x, self.codebook.detach().float())  # (B*H*W,)
            # looked up before any update, so z_q matches codes
            z_q = F.embedding(codes, self.codebook).view(B, H, W, -1).permute(0, 3, 1, 2)
            counts = torch.bincount(codes, minlength=self.codebook_size).float()  # (K,)
            if self.training:
                distributed.sum_(counts)  # global-batch counts
                self.update_usage_(counts)
                if self.quantizer == "ema":
                    self.update_ema_(x, codes, counts)
                self.restart_dead_codes_(x_all)

            loss = self.beta * F.mse_loss(z, z_q.detach())  # commitment
            if self.quantizer == "st":
                loss = loss + F.mse_loss(z_q, z.detach())  # codebook
            z_q = z + (z_q - z).detach()  # straight-through estimator
        return Quantized(z_q.to(z_e.dtype), codes.view(B, H, W), loss, perplexity(counts))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.known_initialised = False  # the loaded `initialised` is read again

    def codes(self, z_e: Tensor) -> Tensor:
        """(B, D, H, W) -> (B, H, W) nearest codes, never changing state."""
        self._check(z_e)
        B, _, H, W = z_e.shape
        with torch.no_grad(), torch.autocast(z_e.device.type, enabled=False):
            return nearest(flatten(z_e.float()), self.codebook.float()).view(B, H, W)

    def lookup(self, codes: Tensor) -> Tensor:
        """(B, H, W) long codes -> (B, D, H, W) code vectors."""
        assert codes.dim() == 3 and codes.dtype == torch.long, (codes.shape, codes.dtype)
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)

    @torch.no_grad()
    def init_codebook_(self, x: Tensor) -> None:
        """Seed the codebook with k-means centres of encoder outputs x (N, D), once.

        Each code starts as a restarted one does, with usage at the threshold: codes the
        fast-moving early encoder leaves behind are re-seeded within a few steps, and EMA
        codes adapt quickly until their cluster sizes build up.
        """
        self.codebook.copy_(kmeans(x, self.codebook_size))
        self.usage.fill_(self.dead_code_threshold)
        if self.quantizer == "ema":
            self.embed_sum.copy_(self.codebook * self.dead_code_threshold)
        self.initialised.fill_(True)

    @torch.no_grad()
    def update_usage_(self, counts: Tensor) -> None:
        """Fold the (global) batch's per-code counts (K,) into the moving-average usage."""
        self.usage.lerp_(counts, 1 - self.decay)

    @torch.no_grad()
    def update_ema_(self, x: Tensor, codes: Tensor, counts: Tensor) -> None:
        """Move each used code to the EMA mean of the vectors x (N, D) assigned to it.

        arXiv:1711.00937 appendix A.1, with Laplace smoothing of the cluster sizes as in
        Sonnet's VectorQuantizerEMA so that rarely used codes never divide by ~zero. Codes
        unused in this batch keep their vectors. Expects `usage` (the cluster sizes) already
        updated with this batch's `counts`, summed over ranks.
        """
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, x)  # (K, D)
        distributed.sum_(sums)  # over the global batch, like `counts`
        self.embed_sum.lerp_(sums, 1 - self.decay)
        n = self.usage.sum()
        smoothed = (self.usage + LAPLACE_EPS) / (n + self.codebook_size * LAPLACE_EPS) * n
        means = self.embed_sum / smoothed.unsqueeze(1)
        self.codebook.copy_(torch.where(counts.unsqueeze(1) > 0, means, self.codebook))

    @torch.no_grad()
    def restart_dead_codes_(self, x: Tensor) -> None:
        """Re-seed codes whose usage fell below the threshold from random rows of x (N, D).

        A restarted code gets usage equal to the threshold (and EMA state to match), so it
        stays unless another batch passes without using it.
        """
        if self.dead_code_threshold == 0:
            return
        dead = self.usage < self.dead_code_threshold  # (K,)
        fresh = sample_vectors(x, self.codebook_size)  # drawn every step: no device sync
        self.codebook.copy_(torch.where(dead.unsqueeze(1), fresh, self.codebook))
        self.usage.masked_fill_(dead, self.dead_code_threshold)
        if self.quantizer == "ema":
            reset = self.codebook * self.dead_code_threshold
            self.embed_sum.copy_(torch.where(dead.unsqueeze(1), reset, self.embed_sum))

    def _check(self, z: Tensor) -> None:
        assert z.dim() == 4 and z.shape[1] == self.code_dim, f"z_e {tuple(z.shape)}"
