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
from vqgen.data import SliceDataset, load_split
from vqgen.realism import features, two_sample

LADDER = ("real", "blur1", "blur2", "noise")  # most to least realistic


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return gaussian_blur(x, kernel_size=2 * round(3 * sigma) + 1, sigma=sigma)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SliceDataset]:
    """The three mni152 splits at 64 px, loaded once into a cache of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
        return {s: load_split("mni152", s, size=64) for s in ("train", "validate", "test")}


@pytest.fixture(scope="module")
def ladder(splits: dict[str, SliceDataset]) -> dict[str, torch.Tensor]:
    other = splits["validate"].images
    noise = torch.rand(other.shape, generator=torch.Generator().manual_seed(0))
    return dict(zip(LADDER, (other, blur(other, 1.0), blur(other, 2.0), noise), strict=True))


@pytest.fixture(scope="module")
def net(splits: dict[str, SliceDataset]) -> realism.FeatureNet:
    return realism.train_feature_net(splits["train"], seed=0, steps=300)


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


# --- subject split -------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.9])
def test_group_split_keeps_each_subject_on_one_side(splits, fraction):
    subjects = splits["train"].subjects
    train, test = realism.group_split(subjects, seed=3, fraction=fraction)
    seen_train = {subjects[i] for i in train}
    seen_test = {subjects[i] for i in test}
    assert not seen_train & seen_test
    assert sorted(torch.cat([train, test]).tolist()) == list(range(len(subjects)))
    assert len(seen_train) == round(fraction * 48)
    again = realism.group_split(subjects, seed=3, fraction=fraction)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)


def test_c2st_splits_real_slices_by_subject(splits, monkeypatch):
    calls = []
    real_split = realism.group_split

    def spy(groups, seed, fraction=0.5):
        calls.append(list(groups))
        return real_split(groups, seed, fraction)

    monkeypatch.setattr(two_sample, "group_split", spy)
    test = splits["test"]
    realism.c2st(test.images[:96], test.subjects[:96], test.images[96:], None, seed=0, steps=2)
    assert calls == [test.subjects[:96]]  # real split by its subjects, the groupless set not


def test_group_split_needs_two_subjects():
    with pytest.raises(ValueError, match="at least 2 distinct groups"):
        realism.group_split(["a"] * 5, seed=0)


# --- classifier two-sample test ------------------------------------------------------------


@pytest.mark.slow
def test_c2st_accuracy_rises_with_blur(splits, ladder):
    test, validate = splits["test"], splits["validate"]
    result = {
        name: realism.c2st(test.images, test.subjects, x, validate.subjects, seed=0)
        for name, x in ladder.items()
    }
    acc = [result[name].accuracy for name in LADDER]
    assert acc[0] < 0.7 and result["real"].ci_low < 0.55  # validate vs test: near chance
    assert result["blur1"].ci_low > result["real"].ci_high  # a 1-pixel blur is seen
    assert acc[0] < acc[1] <= acc[2] <= acc[3] and acc[3] > 0.95
    assert result["blur1"].auc > 0.95


@pytest.mark.slow
def test_c2st_floor_for_halves_of_one_split(splits):
    """Two halves of the train split, 24 subjects each: at chance, over three subject splits.
    One split alone strays by ~0.05 (which subjects fall in which half), more than the
    binomial interval says; split by slice instead, the CNN would learn the subjects."""
    train = splits["train"]
    floors = [realism.real_floor(train.images, train.subjects, seed=s) for s in range(3)]
    assert abs(np.mean([f.accuracy for f in floors]) - 0.5) < 0.06
    assert abs(np.mean([f.auc for f in floors]) - 0.5) < 0.08


def test_c2st_is_seeded_and_balanced(splits):
    test = splits["test"]
    args = (test.images[:96], test.subjects[:96], blur(test.images[96:150], 1.0), None)
    first = realism.c2st(*args, seed=1, steps=20)
    assert first == realism.c2st(*args, seed=1, steps=20)
    assert first.n_test == 2 * 27  # the smaller held-out half, once per class
    assert first.ci_low <= first.accuracy <= first.ci_high


# --- feature network -----------------------------------------------------------------------


@pytest.mark.parametrize("split", ["validate", "test"])
def test_feature_net_refuses_held_out_splits(splits, split):
    with pytest.raises(ValueError, match="train split only"):
        realism.train_feature_net(splits[split], steps=1)


def test_feature_net_records_what_it_was_trained_on(splits):
    net = realism.train_feature_net(splits["train"], steps=1)
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
def test_feature_distances_order_the_ladder(splits, ladder, net):
    real = realism.extract_features(net, splits["test"].images)
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
def test_kid_is_near_zero_for_disjoint_real_subjects(splits, ladder, net):
    train = splits["train"]
    half_a, half_b = realism.group_split(train.subjects, seed=0)
    features = realism.extract_features(net, train.images)
    floor = realism.feature_distances(features[half_a], features[half_b])
    real = realism.extract_features(net, splits["test"].images)
    blurred = realism.feature_distances(real, realism.extract_features(net, ladder["blur1"]))
    assert abs(floor["kid"]) < 0.15 * blurred["kid"]
    assert floor["precision"] > 0.7 and floor["recall"] > 0.7


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


def test_sharpness_ratio_falls_with_blur(splits, ladder):
    real = splits["test"].images
    ratio = {name: realism.sharpness_ratio(x, real) for name, x in ladder.items()}
    assert 0.8 < ratio["real"] < 1.25
    assert ratio["real"] > ratio["blur1"] > ratio["blur2"] and ratio["blur1"] < 0.5
    assert ratio["noise"] > 2  # noise is all high frequencies


def test_radial_spectrum_of_white_noise_is_flat():
    x = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    freqs, power = realism.radial_power_spectrum(x)
    assert freqs[0] == 0 and freqs[-1] == 0.5 and len(freqs) == len(power) == 17
    assert np.allclose(power[1:], 1 / 12, rtol=0.15)  # variance of U(0, 1) at every frequency


def test_ms_ssim_diversity_moves_away_from_real_along_the_ladder(splits, ladder):
    own = realism.ms_ssim_diversity(splits["test"].images, seed=0)
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


def test_ms_ssim_diversity_is_seeded(splits):
    x = splits["test"].images
    assert realism.ms_ssim_diversity(x, 64, seed=5) == realism.ms_ssim_diversity(x, 64, seed=5)
    with pytest.raises(ValueError, match="at least 44 px"):
        realism.ms_ssim_diversity(torch.rand(4, 1, 32, 32))


def test_copies_of_training_slices_are_flagged_as_memorised():
    from vqgen.evaluate import sample_report

    g = torch.Generator().manual_seed(0)
    train, split = torch.rand(20, 1, 32, 32, generator=g), torch.rand(10, 1, 32, 32, generator=g)
    samples = torch.cat([train[[3, 7, 11]], torch.rand(5, 1, 32, 32, generator=g)])
    report, _, _ = sample_report(samples, split, train, seed=0)
    assert report["memorised"] == 3
    assert report["nearest_train_ssim_max"] == pytest.approx(1.0)
