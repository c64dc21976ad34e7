"""Realism metrics on real mni152 slices: each orders real > blurred (sigma 1) > blurred
(sigma 2) > noise, sits at its floor for two disjoint real sets, agrees with the library it
wraps and repeats under a seed. Real = the test split; the ladder is built from validate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchvision.transforms.functional import gaussian_blur

from vqgen import realism
from vqgen.data import SliceDataset
from vqgen.realism import features

LADDER = ("real", "blur1", "blur2", "noise")  # most to least realistic


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return gaussian_blur(x, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)


@pytest.fixture(scope="module")
def ladder(mni152_64: dict[str, SliceDataset]) -> dict[str, torch.Tensor]:
    other = mni152_64["validate"].images
    noise = torch.rand(other.shape, generator=torch.Generator().manual_seed(0))
    return dict(zip(LADDER, (other, blur(other, 1.0), blur(other, 2.0), noise), strict=True))


# session, not module: pytest tears a module's fixtures down whenever a worker runs another
# module's test in between, and the net (~30 s) was then trained twice in one run
@pytest.fixture(scope="session")
def net(mni152_64: dict[str, SliceDataset]) -> realism.FeatureNet:
    return realism.train_feature_net(mni152_64["train"], seed=0, steps=300)


def small_train_set(n: int = 32, positions: bool = True, labels: bool = False) -> SliceDataset:
    g = torch.Generator().manual_seed(0)
    return SliceDataset(
        pixels=torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=g),
        subjects=[f"s{i // 4}" for i in range(n)],
        labels=torch.arange(n) % 2 if labels else torch.full((n,), -1),
        positions=torch.rand(n, generator=g) if positions else torch.full((n,), float("nan")),
        paths=[f"x{i}" for i in range(n)],
        kind="toy",
        split="train",
    )


# --- feature network -----------------------------------------------------------------------


@pytest.mark.parametrize("split", ["validate", "test"])
def test_feature_net_refuses_held_out_splits(mni152_64, split):
    with pytest.raises(ValueError, match="train split only"):
        realism.train_feature_net(mni152_64[split], steps=1)


@pytest.mark.slow
def test_feature_net_records_what_it_was_trained_on(mni152_64):
    net = realism.train_feature_net(mni152_64["train"], steps=1)
    assert net.cfg.trained_on == {
        "kind": "mni152",
        "split": "train",
        "slices": 1152,
        "subjects": 48,
    }
    assert net.cfg.tasks == ("position",)  # mni152 has positions, no labels


@pytest.mark.parametrize(
    ("positions", "labels", "tasks"),
    [
        (True, False, ("position",)),
        (True, True, ("position", "label")),
        (False, False, ("rotation",)),
    ],
)
def test_feature_net_side_task_follows_the_data(positions, labels, tasks):
    net = realism.train_feature_net(small_train_set(positions=positions, labels=labels), steps=2)
    assert net.cfg.tasks == tasks
    assert realism.extract_features(net, torch.rand(3, 1, 32, 32)).shape == (3, 128)


def test_feature_net_round_trips_and_is_seeded(tmp_path):
    data = small_train_set()
    net = realism.train_feature_net(data, seed=4, steps=3)
    realism.save_feature_net(net, tmp_path / "net.safetensors")
    loaded = realism.load_feature_net(tmp_path / "net.safetensors")
    x = torch.rand(5, 1, 32, 32)
    assert loaded.cfg == net.cfg
    assert torch.equal(realism.extract_features(loaded, x), realism.extract_features(net, x))
    again = realism.train_feature_net(data, seed=4, steps=3)
    assert torch.equal(realism.extract_features(again, x), realism.extract_features(net, x))


def test_cached_feature_net_retrains_only_when_the_key_changes(vqgen_cache, monkeypatch):
    trained = []
    train = realism.train_feature_net
    monkeypatch.setattr(
        features, "train_feature_net", lambda *a, **k: trained.append(1) or train(*a, **k)
    )
    data = small_train_set()
    first = realism.cached_feature_net(data, "key-a" * 4, steps=2)
    second = realism.cached_feature_net(data, "key-a" * 4, steps=2)
    assert len(trained) == 1 and second.cfg == first.cfg
    assert len(list(vqgen_cache.glob("featurenet-*.safetensors"))) == 1
    realism.cached_feature_net(data, "key-b" * 4, steps=2)
    assert len(trained) == 2


# --- feature distances ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("feature_net")  # one worker trains the module's net
def test_feature_distances_order_the_ladder(mni152_64, ladder, net):
    real = realism.extract_features(net, mni152_64["test"].images)
    scores = {
        n: realism.feature_distances(real, realism.extract_features(net, x))
        for n, x in ladder.items()
    }
    for key in ("kid", "fid"):
        values = [scores[name][key] for name in LADDER]
        assert values == sorted(values), key
    for key in ("precision", "recall", "density", "coverage"):
        values = [scores[name][key] for name in LADDER]
        assert values[0] > values[1] >= values[2] >= values[3], key


@pytest.mark.slow
@pytest.mark.xdist_group("feature_net")  # one worker trains the module's net
def test_kid_is_near_zero_for_disjoint_real_subjects(mni152_64, ladder, net):
    """Halves of the train split's 48 subjects, four ways: one split alone strays from 0 to
    0.34 (which subjects fall in which half), a 1-pixel blur scores ~2.2."""
    train = mni152_64["train"]
    features = realism.extract_features(net, train.images)
    floors = []
    for seed in range(4):
        half = realism.assign_folds(train.subjects, 2, seed=seed) == 0
        floors.append(realism.feature_distances(features[half], features[~half]))
    real = realism.extract_features(net, mni152_64["test"].images)
    blurred = realism.feature_distances(real, realism.extract_features(net, ladder["blur1"]))
    assert abs(np.mean([f["kid"] for f in floors])) < 0.15 * blurred["kid"]
    assert min(f["precision"] for f in floors) > 0.7 and min(f["recall"] for f in floors) > 0.7


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`")
def test_kid_and_fid_agree_with_torchmetrics_on_images():
    """torchmetrics runs the feature net itself; feature_distances gets its features."""
    net = realism.FeatureNet(realism.FeatureNetConfig(size=32)).eval()  # untrained is enough
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 1, 32, 32, generator=g), torch.rand(30, 1, 32, 32, generator=g) ** 2
    ours = realism.feature_distances(
        realism.extract_features(net, real), realism.extract_features(net, fake), subsets=20, seed=7
    )
    kid = KernelInceptionDistance(feature=net, subsets=20, subset_size=15)
    fid = FrechetInceptionDistance(feature=net)
    for metric in (kid, fid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        kid_mean, kid_std = kid.compute()
    assert ours["kid"] == pytest.approx(float(kid_mean), rel=1e-4, abs=1e-6)
    assert ours["kid_std"] == pytest.approx(float(kid_std), rel=1e-4, abs=1e-6)
    assert ours["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)


def test_fid_matches_its_formula():
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 sqrtm(C_a C_b)), with scipy's matrix square root."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 8, generator=g, dtype=torch.float64)
    b = (
        0.7
        * torch.randn(200, 8, generator=g, dtype=torch.float64)
        @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    )
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    cross = scipy.linalg.sqrtm(ca @ cb).real
    fid = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(ca + cb - 2 * cross)
    assert realism.feature_distances(a, b)["fid"] == pytest.approx(fid, rel=1e-6)


def test_feature_distances_work_at_small_n_and_repeat():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(6, 16, generator=g), torch.randn(5, 16, generator=g) + 1
    out = realism.feature_distances(real, fake, seed=2)
    assert out["k"] == 3 and out["kid_subset_size"] == 2  # k clipped to n - 2, subsets of n / 2
    assert out == realism.feature_distances(real, fake, seed=2)
    with pytest.raises(ValueError, match="at least 4"):
        realism.feature_distances(real[:3], fake)


# --- sharpness and diversity ---------------------------------------------------------------


def test_sharpness_ratio_falls_with_blur(mni152_64, ladder):
    real = mni152_64["test"].images
    ratio = {name: realism.sharpness_ratio(x, real) for name, x in ladder.items()}
    assert 0.8 < ratio["real"] < 1.25
    assert ratio["real"] > ratio["blur1"] > ratio["blur2"] and ratio["blur1"] < 0.5
    assert ratio["noise"] > 2  # noise is all high frequencies


def test_radial_spectrum_of_white_noise_is_flat():
    x = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    freqs, power = realism.radial_power_spectrum(x)
    assert freqs[0] == 0 and freqs[-1] == 0.5 and len(freqs) == len(power) == 17
    assert np.allclose(power[1:], 1 / 12, rtol=0.15)  # variance of U(0, 1) at every frequency


@pytest.mark.slow
def test_ms_ssim_diversity_moves_away_from_real_along_the_ladder(mni152_64, ladder):
    own = realism.ms_ssim_diversity(mni152_64["test"].images, seed=0)
    gap = [abs(realism.ms_ssim_diversity(ladder[name], seed=0) - own) for name in LADDER]
    assert gap == sorted(gap) and gap[0] < 0.05


@pytest.mark.parametrize("size", [64, 128])
def test_ms_ssim_diversity_equals_torchmetrics_on_a_pair(size):
    g = torch.Generator().manual_seed(size)
    pair = torch.rand(2, 1, size, size, generator=g)
    pair[1] = 0.5 * pair[0] + 0.5 * pair[1]
    expected = multiscale_structural_similarity_index_measure(
        pair[:1], pair[1:], data_range=1.0, betas=realism.MS_SSIM_BETAS
    )
    assert realism.ms_ssim_diversity(pair, pairs=1) == pytest.approx(float(expected), abs=1e-6)
    assert realism.ms_ssim_diversity(pair[[0, 0]], pairs=1) == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_diversity_is_seeded(mni152_64):
    x = mni152_64["test"].images
    assert realism.ms_ssim_diversity(x, 64, seed=5) == realism.ms_ssim_diversity(x, 64, seed=5)
    with pytest.raises(ValueError, match="at least 44 px"):
        realism.ms_ssim_diversity(torch.rand(4, 1, 32, 32))


def test_copies_of_training_slices_are_flagged_as_memorised():
    from vqgen.evaluate import nearest_train_ssim, sample_report

    g = torch.Generator().manual_seed(0)
    train, split = torch.rand(20, 1, 32, 32, generator=g), torch.rand(10, 1, 32, 32, generator=g)
    samples = torch.cat([train[[3, 7, 11]], torch.rand(5, 1, 32, 32, generator=g)])
    train_ssim = nearest_train_ssim(samples, train, torch.device("cpu"))
    report, _, _ = sample_report(samples, split, train_ssim, seed=0)
    assert report["memorised"] == 3
    assert report["nearest_train_ssim_max"] == pytest.approx(1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sample_report_on_the_gpu_agrees_with_the_cpu():
    from vqgen.evaluate import nearest_train_ssim, sample_report

    g = torch.Generator().manual_seed(1)
    train, split = torch.rand(30, 1, 32, 32, generator=g), torch.rand(12, 1, 32, 32, generator=g)
    samples = torch.cat([train[[2, 5]], torch.rand(6, 1, 32, 32, generator=g)])
    cuda = torch.device("cuda")
    cpu, cpu_ssim, cpu_idx = sample_report(
        samples, split, nearest_train_ssim(samples, train, torch.device("cpu")), 0
    )
    gpu, gpu_ssim, gpu_idx = sample_report(
        samples, split, nearest_train_ssim(samples, train, cuda), 0, cuda
    )
    assert gpu["memorised"] == cpu["memorised"] == 2 and torch.equal(gpu_idx, cpu_idx)
    torch.testing.assert_close(gpu_ssim, cpu_ssim, atol=1e-4, rtol=0)
    for key in ("diversity_pairwise_ssim", "real_pairwise_ssim"):
        assert gpu[key] == pytest.approx(cpu[key], abs=1e-4)
