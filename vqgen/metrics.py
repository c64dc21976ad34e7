"""Image and codebook metrics: one value per image, images (N, 1, H, W) float in [0, 1].

SSIM always uses data_range=1.0, never the images' own min and max, so scores are comparable
across images and runs. scikit-image's `structural_similarity` with its defaults (7x7 uniform
window, sample covariance, K1=0.01, K2=0.03) is the reference: `ssim_reference` calls it, and the
batched torch `ssim`, `pairwise_ssim` and `masked_ssim` compute the same quantity and are tested
against it. Like scikit-image, the mean SSIM covers only pixels whose 7x7 window lies inside
the image (a 3-pixel border is left out), so the torch versions pool without padding.

Usage:
    ssim(recon, real).mean()                    # headline reconstruction SSIM
    masked_ssim(recon, real, foreground_mask(real))  # SSIM over the brain only
    values, index = nearest_ssim(samples, train_images)  # memorisation check
    fraction, perplexity = codebook_usage(codes, 512)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import Tensor

WIN = 7  # side of the uniform SSIM window (scikit-image's default)
BORDER = (WIN - 1) // 2  # pixels at each edge without a full window
C1 = 0.01**2  # (K1 * data_range)^2
C2 = 0.03**2  # (K2 * data_range)^2
COV_NORM = WIN**2 / (WIN**2 - 1)  # sample (N-1) rather than population covariance
NEAREST_CANDIDATES = 32  # references per query that nearest_ssim scores exactly
PROXY_WINDOWS = 16  # nearest_ssim ranks by window_ssim over about this many windows a side

# ---------------------------------------------------------------------------------------------
# input checks


def _check_images(name: str, x: Tensor | np.ndarray, min_side: int = 1) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be images of shape (N, 1, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_side:
        raise ValueError(
            f"{name} must be at least {min_side}x{min_side} pixels, got {tuple(x.shape[-2:])}"
        )


def _check_pair(x: Tensor | np.ndarray, y: Tensor | np.ndarray, min_side: int = 1) -> None:
    _check_images("x", x, min_side)
    _check_images("y", y, min_side)
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _check_dtype(dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point type, got {dtype}")


def _to_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# scikit-image reference


def ssim_reference(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> np.ndarray:
    """Per-image SSIM from scikit-image on float64 copies: (N, 1, H, W) x2 -> (N,)."""
    _check_pair(x, y, WIN)
    pairs = zip(_to_numpy(x), _to_numpy(y), strict=True)
    return np.array([structural_similarity(p[0], q[0], data_range=1.0) for p, q in pairs])


# ---------------------------------------------------------------------------------------------
# batched torch SSIM


def _box(x: Tensor) -> Tensor:
    """Mean over every WIN x WIN window inside the image: (..., H, W) -> (..., H-6, W-6).

    Seven shifted in-place adds per axis: each window is summed directly (no cumulative-sum
    round-off), on any device, and faster on CPU than avg_pool2d for large batches.
    """
    h, w = x.shape[-2] - WIN + 1, x.shape[-1] - WIN + 1
    rows = x[..., :h, :].clone()
    for i in range(1, WIN):
        rows += x[..., i : i + h, :]
    out = rows[..., :w].clone()
    for j in range(1, WIN):
        out += rows[..., j : j + w]
    return out.div_(WIN * WIN)


class _Stats(NamedTuple):
    """Per-window terms that depend on one image only, each (..., H-6, W-6)."""

    mu: Tensor  # local mean
    lum: Tensor  # mu^2 + C1/2: half of the luminance denominator
    con: Tensor  # sample variance + C2/2: half of the contrast denominator


def _stats(x: Tensor) -> _Stats:
    mu = _box(x)
    var = COV_NORM * (_box(x * x) - mu * mu)
    return _Stats(mu, mu * mu + C1 / 2, var + C2 / 2)


def _combine(sx: _Stats, sy: _Stats, mean_xy: Tensor) -> Tensor:
    """SSIM of each window (Wang et al. 2004, eq. 13); broadcasts.

    `mean_xy` is the local mean of x * y; it is overwritten, so that a block of pairs takes
    few passes over memory.
    """
    mu_xy = sx.mu * sy.mu
    contrast = mean_xy.sub_(mu_xy).mul_(2 * COV_NORM).add_(C2)  # 2 cov + C2
    num = mu_xy.mul_(2).add_(C1).mul_(contrast)  # (2 mu_x mu_y + C1)(2 cov + C2)
    return num.div_((sx.lum + sy.lum).mul_(sx.con + sy.con))


def ssim_map(x: Tensor, y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """SSIM of each full 7x7 window: (N, 1, H, W) x2 -> (N, H-6, W-6).

    Pixel [i, j] of the map is pixel [i+3, j+3] of the image; it equals scikit-image's full
    map there. The BORDER strip, which scikit-image fills from reflected windows, is left out.
    """
    _check_pair(x, y, WIN)
    _check_dtype(dtype)
    x, y = x.to(dtype), y.to(dtype)
    return _combine(_stats(x), _stats(y), _box(x * y))[:, 0]


def ssim(x: Tensor, y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Mean SSIM of each image pair: (N, 1, H, W) x2 -> (N,), as `ssim_reference`."""
    return ssim_map(x, y, dtype).mean(dim=(1, 2))


def foreground_mask(x: Tensor, threshold: float = 0.05) -> Tensor:
    """Pixels brighter than `threshold`: the brain on a black background. (N,1,H,W) -> bool."""
    _check_images("x", x)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    return x > threshold


def masked_ssim(x: Tensor, y: Tensor, mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Mean of the SSIM map over the masked pixels of each image: (N, 1, H, W) x3 -> (N,).

    Only pixels with a full 7x7 window count (the map of `ssim_map`), so an all-true mask
    gives exactly `ssim`. An image whose mask has no pixel inside the BORDER gets NaN:
    there is no brain to score, and averaging callers should skip it (torch.nanmean).
    """
    _check_pair(x, y, WIN)
    if tuple(mask.shape) != tuple(x.shape):
        raise ValueError(
            f"mask must have the same shape as x, got {tuple(mask.shape)} and {tuple(x.shape)}"
        )
    smap = ssim_map(x, y, dtype)  # (N, h, w)
    inner = mask[:, 0, BORDER:-BORDER, BORDER:-BORDER].to(smap)  # (N, h, w)
    return (smap * inner).sum(dim=(1, 2)) / inner.sum(dim=(1, 2))  # 0/0 -> NaN


# ---------------------------------------------------------------------------------------------
# SSIM between every pair of two sets


def _ssim_blocks(a: Tensor, b: Tensor, chunk: int, dtype: torch.dtype, upper: bool = False):
    """Yield (rows, cols, ssim of a[rows] x b[cols]) over blocks of about `chunk` pairs.

    Local means and variances are computed once per image; each pair costs only its
    cross-term, the local mean of a * b. With `upper`, blocks holding no pair with
    col > row are skipped.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    _check_dtype(dtype)
    n = max(1, min(len(a), math.isqrt(chunk)))  # rows per block
    m = max(1, chunk // n)  # cols per block
    a = a.to(dtype)
    sa = _stats(a)  # each (N, 1, h, w)
    for j in range(0, len(b), m):
        bj = b[j : j + m].to(a.device, dtype)[None]  # (1, m, 1, H, W)
        sb = _stats(bj)
        for i in range(0, len(a), n):
            if upper and j + len(bj[0]) - 1 <= i:
                continue
            ai = a[i : i + n, None]  # (n, 1, 1, H, W)
            sai = _Stats(*(t[i : i + n, None] for t in sa))
            block = _combine(sai, sb, _box(ai * bj)).mean(dim=(2, 3, 4))  # (n, m)
            yield slice(i, i + len(ai)), slice(j, j + len(bj[0])), block


def pairwise_ssim(
    a: Tensor, b: Tensor, chunk: int = 64, dtype: torch.dtype = torch.float32
) -> Tensor:
    """SSIM of every pair: (N, 1, H, W), (M, 1, H, W) -> (N, M) on a's device.

    Works through blocks of about `chunk` pairs, so beyond the inputs memory holds only a few
    (chunk, H, W) tensors; 64 keeps a block near a CPU's cache, a GPU prefers thousands.
    `b` may live on another device: it moves to a's device one block at a time.
    """
    _check_images("a", a, WIN)
    _check_images("b", b, WIN)
    if a.shape[1:] != b.shape[1:]:
        shapes = f"{tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        raise ValueError(f"a and b must have the same image shape, got {shapes}")
    out = torch.empty(len(a), len(b), dtype=dtype, device=a.device)
    for rows, cols, block in _ssim_blocks(a, b, chunk, dtype):
        out[rows, cols] = block
    return out


def nearest_ssim(
    queries: Tensor, references: Tensor, chunk: int = 64, candidates: int = NEAREST_CANDIDATES
) -> tuple[Tensor, Tensor]:
    """For each query the highest SSIM over `references` and that reference's index: (N,), (N,).

    Its cost grows gently with the references and not with the pixels: each query's
    `candidates` best references by `window_ssim` over about PROXY_WINDOWS x PROXY_WINDOWS
    windows (every 4th window's corner at 64 px, every 8th at 128) are scored exactly and the
    best of them is taken; where there are no more references than that, all are scored
    exactly. On mni152 slices at 64 and 128 px this finds the same nearest slice as scoring
    every reference (tests/test_metrics.py); a near-duplicate (memorisation) always ranks
    first."""
    if len(references) == 0:
        raise ValueError("references must hold at least one image")
    if len(references) <= candidates:
        return pairwise_ssim(queries, references, chunk).max(dim=1)
    stride = max(1, min(queries.shape[-2:]) // PROXY_WINDOWS)
    ranks = window_ssim(queries, references, chunk, stride)
    picks = ranks.topk(candidates, dim=1).indices  # (N, k)
    pairs = [
        ssim(queries[rows].repeat_interleave(candidates, 0), references[picks[rows].flatten()])
        for rows in torch.arange(len(queries)).split(max(1, chunk // candidates))
    ]
    best, column = torch.cat(pairs).view(len(queries), candidates).max(dim=1)
    return best, picks.gather(1, column[:, None])[:, 0]


def window_ssim(a: Tensor, b: Tensor, chunk: int = 64, stride: int = 4) -> Tensor:
    """SSIM of every pair over the 7x7 windows whose corners lie `stride` pixels apart, a cheap
    stand-in for `pairwise_ssim` that ranks references for `nearest_ssim`: (N, M) on a's
    device. The cross term of each window is a batched matrix product over its 49 pixels."""
    _check_images("a", a, WIN)
    _check_images("b", b, WIN)

    def windows(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u = F.unfold(x.float(), WIN, stride=stride)  # (n, 49, P)
        mu = u.mean(1)  # (n, P)
        var = COV_NORM * (u.square().mean(1) - mu * mu)
        return u.permute(2, 0, 1), mu.T, var.T  # (P, n, 49), (P, n), (P, n)

    ua, mua, vara = windows(a)
    out = torch.empty(len(a), len(b), device=a.device)
    pairs = max(1, chunk * 2**16 // ua.shape[0])  # a block holds about chunk x 64k numbers
    rows = max(1, min(len(a), math.isqrt(pairs)))
    cols = max(1, pairs // rows)
    for j in range(0, len(b), cols):
        ub, mub, varb = windows(b[j : j + cols].to(a.device))
        for i in range(0, len(a), rows):
            ma, va = mua[:, i : i + rows, None], vara[:, i : i + rows, None]  # (P, n, 1)
            mb, vb = mub[:, None], varb[:, None]  # (P, 1, m)
            cross = torch.bmm(ua[:, i : i + rows], ub.transpose(1, 2)).div_(WIN * WIN)
            cov = cross.sub_(ma * mb).mul_(2 * COV_NORM).add_(C2)  # 2 cov + C2
            num = (ma * mb).mul_(2).add_(C1).mul_(cov)
            den = (ma * ma + mb * mb).add_(C1).mul_((va + vb).add_(C2))
            out[i : i + rows, j : j + ub.shape[1]] = num.div_(den).mean(0)
    return out


def mean_pairwise_ssim(x: Tensor, chunk: int = 64) -> float:
    """Mean SSIM over distinct pairs i < j of a set: low means diverse. (N, 1, H, W) -> float."""
    _check_images("x", x, WIN)
    if len(x) < 2:
        raise ValueError(f"x must hold at least 2 images, got {len(x)}")
    total, count = 0.0, 0
    for rows, cols, block in _ssim_blocks(x, x, chunk, torch.float32, upper=True):
        r = torch.arange(rows.start, rows.stop, device=x.device)
        c = torch.arange(cols.start, cols.stop, device=x.device)
        keep = c[None, :] > r[:, None]  # (n, m)
        total += block[keep].double().sum().item()
        count += int(keep.sum())
    return total / count


# ---------------------------------------------------------------------------------------------
# pixel errors


def mse(x: Tensor, y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Mean squared error per image: (N, 1, H, W) x2 -> (N,)."""
    _check_pair(x, y)
    _check_dtype(dtype)
    return (x.to(dtype) - y.to(dtype)).square().mean(dim=(1, 2, 3))


def psnr(x: Tensor, y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Peak signal-to-noise ratio in dB, data_range=1: (N, 1, H, W) x2 -> (N,).

    Identical images give inf, as in scikit-image; average the finite values only
    (values[values.isfinite()].mean()) or report the median.
    """
    return -10 * torch.log10(mse(x, y, dtype))


# ---------------------------------------------------------------------------------------------
# codebook statistics


def _code_probs(codes: Tensor | np.ndarray, codebook_size: int) -> Tensor:
    """Histogram of codes as probabilities: any shape -> (codebook_size,) float64."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be at least 1, got {codebook_size}")
    codes = torch.as_tensor(codes)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() == 0:
        raise ValueError("codes must not be empty")
    codes = codes.flatten().long()
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(
            f"codes must lie in [0, {codebook_size}), got range "
            f"[{int(codes.min())}, {int(codes.max())}]"
        )
    counts = torch.bincount(codes, minlength=codebook_size).double()
    return counts / counts.sum()


def _entropy_nats(p: Tensor) -> float:
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def codebook_usage(codes: Tensor | np.ndarray, codebook_size: int) -> tuple[float, float]:
    """Fraction of the codebook used and perplexity exp(entropy) of the code histogram.

    Perplexity is the number of equally used codes with the same entropy: codebook_size when
    usage is uniform, 1 when a single code is used.
    """
    p = _code_probs(codes, codebook_size)
    return float((p > 0).double().mean()), math.exp(_entropy_nats(p))


def entropy_bits(codes: Tensor | np.ndarray, codebook_size: int) -> float:
    """Unigram entropy of the codes in bits per code: what a prior that ignores context pays."""
    return _entropy_nats(_code_probs(codes, codebook_size)) / math.log(2)


def uniform_bits(codebook_size: int) -> float:
    """Bits per code of a uniform prior, log2 K: the ceiling any learned prior should beat."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be at least 1, got {codebook_size}")
    return math.log2(codebook_size)


def finite_mean(values: Tensor) -> float:
    """Mean over the finite values: PSNR is infinite for a perfect reconstruction."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("inf")
