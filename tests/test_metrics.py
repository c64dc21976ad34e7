"""Metrics against scikit-image, and codebook statistics on histograms with known answers."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vqgen import metrics

SIZES = [(16, 16), (64, 64), (128, 128), (24, 40), (7, 9)]


def ssim_map_reference(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-pixel SSIM from scikit-image: (N, 1, H, W) x2 -> (N, H, W). The outer 3 pixels
    come from reflect-padded windows; scikit-image and vqgen leave them out of every mean."""
    pairs = zip(x.double().numpy(), y.double().numpy(), strict=True)
    return np.stack(
        [structural_similarity(p[0], q[0], data_range=1.0, full=True)[1] for p, q in pairs]
    )


def random_pair(n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform noise images and a noisier copy of them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, h, w, generator=g)
    return x, (x + 0.2 * torch.randn(n, 1, h, w, generator=g)).clamp(0, 1)


def brain_like(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth textured ellipses on a black background, with faint noise everywhere."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    radius = 0.5 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    blob = ((xx / radius) ** 2 + (yy / (1.2 * radius)) ** 2 < 1).float()  # (n, 1, h, w)
    smooth = F.avg_pool2d(torch.rand(n, 1, h, w, generator=g), 5, stride=1, padding=2)
    texture = (4 * (smooth - 0.5) + 0.5).clamp(0, 1)  # stretch the averaged noise to [0, 1]
    noise = 0.005 * torch.randn(n, 1, h, w, generator=g)
    return (blob * (0.2 + 0.8 * texture) + noise).clamp(0, 1)


def degrade(x: torch.Tensor, noise: float = 0.05, seed: int = 1) -> torch.Tensor:
    """A plausible imperfect reconstruction: blurred, noisy where bright, clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return (blurred + noise * blurred * torch.randn(x.shape, generator=g)).clamp(0, 1)


def image_pairs(kind: str, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "random":
        return random_pair(4, h, w)
    if kind == "independent":
        g = torch.Generator().manual_seed(2)
        return torch.rand(4, 1, h, w, generator=g), torch.rand(4, 1, h, w, generator=g)
    real = brain_like(4, h, w)
    return real, degrade(real)


# ---------------------------------------------------------------------------------------------
# SSIM


@pytest.mark.parametrize("kind", ["random", "independent", "brain"])
@pytest.mark.parametrize(("h", "w"), SIZES)
def test_ssim_matches_skimage(kind, h, w):
    x, y = image_pairs(kind, h, w)
    reference = metrics.ssim_reference(x, y)
    ours = metrics.ssim(x, y)
    assert ours.shape == (4,) and ours.dtype == torch.float32
    assert np.abs(ours.double().numpy() - reference).mean() < 1e-4
    exact = metrics.ssim(x, y, dtype=torch.float64).numpy()
    np.testing.assert_allclose(exact, reference, atol=1e-10)


@pytest.mark.parametrize("kind", ["random", "brain", "zeros", "constant"])
def test_ssim_of_an_image_with_itself_is_one(kind):
    x = {
        "random": random_pair(3, 20, 20)[0],
        "brain": brain_like(3, 20, 20),
        "zeros": torch.zeros(3, 1, 20, 20),
        "constant": torch.full((3, 1, 20, 20), 0.7),
    }[kind]
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(3))


def test_ssim_is_one_value_per_image_independent_of_batch():
    x, y = image_pairs("brain", 32, 32)
    together = metrics.ssim(x, y)
    alone = torch.cat([metrics.ssim(x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone)
    assert together.std() > 0  # distinct images really get distinct scores


@pytest.mark.parametrize(("h", "w"), [(16, 16), (30, 22)])
def test_ssim_map_matches_skimage_inside_the_border(h, w):
    x, y = image_pairs("brain", h, w)
    full = ssim_map_reference(x, y)
    assert full.shape == (4, h, w)
    inner = full[:, 3:-3, 3:-3]
    ours = metrics.ssim_map(x, y, dtype=torch.float64).numpy()
    assert ours.shape == inner.shape
    np.testing.assert_allclose(ours, inner, atol=1e-10)
    np.testing.assert_allclose(inner.mean(axis=(1, 2)), metrics.ssim_reference(x, y), atol=1e-12)


def test_foreground_mask_thresholds_the_image():
    x = torch.tensor([0.0, 0.01, 0.05, 0.06, 1.0]).view(1, 1, 1, 5)
    assert metrics.foreground_mask(x).view(-1).tolist() == [False, False, False, True, True]
    assert metrics.foreground_mask(x, threshold=0.0).view(-1).tolist() == [False] + [True] * 4


def test_masked_ssim_is_the_mean_of_the_map_over_the_mask_inside_the_border():
    real = brain_like(4, 40, 40)
    recon = degrade(real)
    mask = metrics.foreground_mask(real)
    full = ssim_map_reference(recon, real)[:, 3:-3, 3:-3]  # scikit-image, no border
    inner = mask[:, 0, 3:-3, 3:-3].numpy()
    expected = np.array([m[k].mean() for m, k in zip(full, inner, strict=True)])
    ours = metrics.masked_ssim(recon, real, mask)
    np.testing.assert_allclose(ours.double().numpy(), expected, atol=1e-4)
    # the black background flatters: over the brain only, the score is lower
    assert (ours < metrics.ssim(recon, real)).all()


def test_masked_ssim_with_a_full_mask_is_ssim_and_empty_masks_are_nan():
    x, y = image_pairs("brain", 20, 20)
    full = torch.ones_like(x, dtype=torch.bool)
    torch.testing.assert_close(metrics.masked_ssim(x, y, full), metrics.ssim(x, y))
    border_only = full.clone()
    border_only[:, :, 3:-3, 3:-3] = False
    empty = torch.zeros_like(full)
    mask = torch.stack([full[0], border_only[1], empty[2], full[3]])
    out = metrics.masked_ssim(x, y, mask)
    assert out[[1, 2]].isnan().all() and out[[0, 3]].isfinite().all()


# ---------------------------------------------------------------------------------------------
# SSIM between sets


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_pairwise_ssim_entries_are_the_ssim_of_each_pair(chunk):
    a = brain_like(3, 24, 20, seed=3)
    b = torch.cat([degrade(a), brain_like(2, 24, 20, seed=4)])  # (5, 1, 24, 20)
    table = metrics.pairwise_ssim(a, b, chunk=chunk)
    assert table.shape == (3, 5)
    for i in range(3):
        expected = metrics.ssim_reference(a[i : i + 1].expand(5, -1, -1, -1), b)
        np.testing.assert_allclose(table[i].double().numpy(), expected, atol=1e-5)


def test_nearest_ssim_finds_a_planted_near_duplicate():
    references = brain_like(30, 32, 32, seed=5)
    planted = torch.tensor([7, 21, 3])
    noise = 0.02 * torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    queries = (references[planted] + noise).clamp(0, 1)
    values, indices = metrics.nearest_ssim(queries, references, chunk=16)
    assert indices.tolist() == planted.tolist()
    torch.testing.assert_close(values, metrics.ssim(queries, references[planted]))
    unrelated, _ = metrics.nearest_ssim(brain_like(3, 32, 32, seed=7), references)
    assert (values > 0.9).all() and (unrelated < 0.9).all()


@pytest.mark.parametrize("chunk", [1, 8, 64])
def test_window_ssim_over_every_window_is_pairwise_ssim(chunk):
    a, b = brain_like(3, 24, 20, seed=3), brain_like(5, 24, 20, seed=4)
    table = metrics.window_ssim(a, b, chunk=chunk, stride=1)
    torch.testing.assert_close(table, metrics.pairwise_ssim(a, b), atol=1e-5, rtol=0)


def test_nearest_ssim_over_candidates_finds_the_planted_duplicates():
    references = brain_like(40, 32, 32, seed=5)
    planted = torch.tensor([7, 21, 3, 39])
    noise = 0.05 * torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    queries = (references[planted] + noise).clamp(0, 1)
    values, indices = metrics.nearest_ssim(queries, references, candidates=3)
    assert indices.tolist() == planted.tolist()
    torch.testing.assert_close(values, metrics.ssim(queries, references[planted]))


@pytest.mark.slow
@pytest.mark.parametrize("size, every", [(64, 3), (128, 12)])
def test_nearest_ssim_over_candidates_is_brute_force_on_the_demo_data(size, every):
    """mni152 slices at the demo's 64 px and at 128 px: validate slices, and slices with the
    defects samples show (blur, holes, a wedge, a shift), against the 1,152 train slices."""
    from vqgen import load_data
    from vqgen.realism.perturb import PERTURBATIONS

    train = load_data("mni152", "train", size=size).images
    validate = load_data("mni152", "validate", size=size).images[::every]  # 64 or 16 slices
    half = len(validate) // 2
    gen = torch.Generator().manual_seed(0)
    defects = [PERTURBATIONS[name](validate[:half], gen) for name in ("blur", "holes", "wedge")]
    queries = torch.cat([validate, *defects, PERTURBATIONS["shift"](validate[half:], gen)])
    exact, nearest = metrics.pairwise_ssim(queries, train).max(dim=1)
    values, indices = metrics.nearest_ssim(queries, train)
    assert torch.equal(indices, nearest)
    torch.testing.assert_close(values, exact, atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_mean_pairwise_ssim_averages_distinct_pairs(chunk):
    x = torch.cat([brain_like(4, 20, 20, seed=8), random_pair(1, 20, 20)[0]])
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    first = torch.stack([x[i] for i, _ in pairs])
    second = torch.stack([x[j] for _, j in pairs])
    expected = metrics.ssim_reference(first, second).mean()
    assert metrics.mean_pairwise_ssim(x, chunk=chunk) == pytest.approx(expected, abs=1e-5)


def test_identical_sets_have_mean_pairwise_ssim_one():
    x = brain_like(1, 16, 16).expand(4, -1, -1, -1)
    assert metrics.mean_pairwise_ssim(x) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_match_cpu():
    a, b = image_pairs("brain", 32, 32)
    torch.testing.assert_close(metrics.ssim(a.cuda(), b.cuda()).cpu(), metrics.ssim(a, b))
    table = metrics.pairwise_ssim(a.cuda(), b, chunk=5)
    assert table.device.type == "cuda"
    torch.testing.assert_close(table.cpu(), metrics.pairwise_ssim(a, b), atol=1e-5, rtol=0)
    windows = metrics.window_ssim(a.cuda(), b, chunk=5)
    torch.testing.assert_close(windows.cpu(), metrics.window_ssim(a, b), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# PSNR, MSE


def test_psnr_and_mse_match_numpy_and_skimage():
    x, y = image_pairs("brain", 24, 24)
    expected_mse = ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(metrics.mse(x, y).double(), expected_mse, rtol=1e-5, atol=0)
    expected = [
        peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0)
        for a, b in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(metrics.psnr(x, y).numpy(), expected, atol=1e-4)


def test_psnr_of_identical_images_is_inf():
    x = brain_like(2, 16, 16)
    y = x.clone()
    y[1] = 1 - y[1]
    out = metrics.psnr(x, y)
    assert out[0] == math.inf and out[1].isfinite()


# ---------------------------------------------------------------------------------------------
# codebook statistics


def test_uniform_usage_has_perplexity_k():
    codes = torch.arange(16).repeat(5).view(5, 4, 4)
    fraction, perplexity = metrics.codebook_usage(codes, 16)
    assert fraction == 1.0
    assert perplexity == pytest.approx(16.0)


def test_a_single_code_has_perplexity_one():
    codes = torch.full((3, 8, 8), 5, dtype=torch.int16)
    fraction, perplexity = metrics.codebook_usage(codes, 32)
    assert fraction == pytest.approx(1 / 32)
    assert perplexity == pytest.approx(1.0)


def test_half_the_codebook_used_evenly():
    codes = np.array([0, 2, 4, 6] * 10)
    assert metrics.codebook_usage(codes, 8) == pytest.approx((0.5, 4.0))


def test_entropy_bits_of_a_known_distribution():
    codes = torch.tensor([0, 0, 1, 2] * 25)  # p = 1/2, 1/4, 1/4
    assert metrics.entropy_bits(codes, 8) == pytest.approx(1.5)
    assert metrics.entropy_bits(torch.arange(8), 8) == pytest.approx(metrics.uniform_bits(8))
    assert metrics.uniform_bits(512) == pytest.approx(9.0)
    _, perplexity = metrics.codebook_usage(codes, 8)
    assert math.log2(perplexity) == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: metrics.ssim(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8)), "x and y"),
        (lambda: metrics.ssim(torch.rand(2, 8, 8), torch.rand(2, 8, 8)), "x must"),
        (lambda: metrics.ssim(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)), "x must"),
        (lambda: metrics.ssim(torch.rand(2, 1, 6, 8), torch.rand(2, 1, 6, 8)), "at least 7"),
        (lambda: metrics.ssim_reference(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 9, 8))), "x and y"),
        (
            lambda: metrics.ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), torch.int64),
            "dtype",
        ),
        (lambda: metrics.psnr(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 9)), "x and y"),
        (lambda: metrics.mse(torch.rand(2, 1, 8, 8), torch.rand(1, 8, 8)), "y must"),
        (
            lambda: metrics.masked_ssim(
                torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), torch.ones(1, 1, 8, 9)
            ),
            "mask",
        ),
        (lambda: metrics.foreground_mask(torch.rand(1, 1, 8, 8), threshold=1.5), "threshold"),
        (lambda: metrics.pairwise_ssim(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 9, 8)), "a and b"),
        (lambda: metrics.pairwise_ssim(torch.rand(2, 8, 8), torch.rand(3, 1, 8, 8)), "a must"),
        (
            lambda: metrics.pairwise_ssim(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8), chunk=0),
            "chunk",
        ),
        (
            lambda: metrics.nearest_ssim(torch.rand(2, 1, 8, 8), torch.rand(0, 1, 8, 8)),
            "references",
        ),
        (lambda: metrics.mean_pairwise_ssim(torch.rand(1, 1, 8, 8)), "x must hold"),
        (lambda: metrics.codebook_usage(torch.tensor([0, 8]), 8), "codes"),
        (lambda: metrics.codebook_usage(torch.tensor([-1, 2]), 8), "codes"),
        (lambda: metrics.codebook_usage(torch.tensor([0.0, 1.0]), 8), "codes"),
        (lambda: metrics.codebook_usage(torch.tensor([], dtype=torch.long), 8), "codes"),
        (lambda: metrics.entropy_bits(torch.tensor([0, 1]), 0), "codebook_size"),
        (lambda: metrics.uniform_bits(0), "codebook_size"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
