"""Realism of generated slices, from plain tensors: (N, 1, S, S) float images in [0, 1].

Whole-image SSIM cannot see blur on a black background, so the report scores samples with:

    c2st(real, real.subjects, fake, None, seed)   # can a small CNN tell them apart? 0.5 = no
    net = cached_feature_net(train_set, key)      # trained on the train split, never downloaded
    feature_distances(extract_features(net, real), extract_features(net, fake))
                                                  # KID, FID, precision/recall/density/coverage
    sharpness_ratio(fake, real)                   # high-frequency energy; blur < 1 < noise
    ms_ssim_diversity(fake)                       # mean MS-SSIM of random pairs; high = alike

Each figure means something only beside the same figure for two disjoint real sets of the data
(`real_floor`, or c2st/feature_distances between the validate and test splits). Everything is
seeded and repeatable; compute runs on the CPU unless a `device` is given.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen import checkpoint
from vqgen.data.dataset import SliceDataset, cache_dir
from vqgen.errors import CheckpointError

Device = str | torch.device
C2ST_SIZE = 64  # the classifier sees 64 px slices: cheap, and enough to see blur and anatomy
FEATURE_FORMAT = "vqgen-featurenet/1"
# MS-SSIM at 64 px: torchmetrics needs side // (scales - 1)^2 > kernel - 1, so the standard five
# scales need 176 px. Three scales with the standard 11 px Gaussian work from 44 px up; their
# weights are the first three standard ones (Wang et al. 2003), renormalised to sum to 1.
MS_SSIM_BETAS = tuple(b / (0.0448 + 0.2856 + 0.3001) for b in (0.0448, 0.2856, 0.3001))
MS_SSIM_KERNEL = 11


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG (weight init, torchmetrics' subsets) without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_images(name: str, x: Tensor, min_count: int = 1) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be images of shape (N, 1, H, W), got {tuple(x.shape)}")
    if len(x) < min_count:
        raise ValueError(f"{name} must hold at least {min_count} images, got {len(x)}")


# ---------------------------------------------------------------------------------------------
# classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017, https://arxiv.org/abs/1610.06545)


class C2ST(NamedTuple):
    accuracy: float  # on the held-out half; 0.5 = indistinguishable
    ci_low: float  # 95% Wilson interval of the accuracy
    ci_high: float
    auc: float  # ROC AUC of the held-out scores
    n_test: int  # held-out slices, half of each class


def group_split(groups: Sequence[str], seed: int, fraction: float = 0.5) -> tuple[Tensor, Tensor]:
    """Indices (train, test) with whole groups (subjects) on one side only; `fraction` of the
    groups, at least one and at most all but one, go to train."""
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(f"groups must name at least 2 distinct groups, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_train = min(max(1, round(fraction * len(names))), len(names) - 1)
    train = {names[i] for i in order[:n_train]}
    in_train = torch.tensor([g in train for g in groups])
    return in_train.nonzero()[:, 0], (~in_train).nonzero()[:, 0]


def _split(n: int, groups: Sequence[str] | None, seed: int) -> tuple[Tensor, Tensor]:
    """By group when there are groups (real slices), else a random half (generated ones)."""
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} images")
        return group_split(groups, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2].sort().values, order[n // 2 :].sort().values


def _balanced(a: Tensor, b: Tensor, idx_a: Tensor, idx_b: Tensor, gen: torch.Generator):
    """Equal numbers of a[idx_a] (label 0) and b[idx_b] (label 1): (x (2n, 1, S, S), y (2n,))."""
    n = min(len(idx_a), len(idx_b))
    pick_a = idx_a[torch.randperm(len(idx_a), generator=gen)[:n]]
    pick_b = idx_b[torch.randperm(len(idx_b), generator=gen)[:n]]
    x = torch.cat([a[pick_a], b[pick_b]])
    return x, torch.cat([torch.zeros(n), torch.ones(n)])


def _at_size(x: Tensor, size: int) -> Tensor:
    """Area-downsample slices larger than `size` (anti-aliased); smaller ones stay as they are."""
    x = x.float()
    return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] > size else x


def _flip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Mirror a random half left-right: a brain's halves look alike, so it stays realistic."""
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _classifier(width: int = 16) -> nn.Sequential:
    """Four stride-2 conv stages (64 -> 4 px, receptive field ~47 px) and a linear logit."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for c_in, c_out in ((1, 2), (2, 4), (4, 4), (4, 4)):
        layers += [nn.Conv2d(width * c_in, width * c_out, 3, 2, 1), nn.BatchNorm2d(width * c_out)]
        layers += [nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 4, 1))


def _fit_classifier(x: Tensor, y: Tensor, steps: int, seed: int, device: Device) -> nn.Module:
    """Adam on binary cross-entropy: `steps` batches of 32 in shuffled epochs, random flips."""
    gen = torch.Generator().manual_seed(seed)
    with _seeded(seed):
        net = _classifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    epochs = -(-steps * 32 // len(x))  # ceil
    order = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(epochs)])
    for batch in order[: steps * 32].split(32):
        xb = _flip(x[batch].to(device), gen)
        loss = F.binary_cross_entropy_with_logits(net(xb)[:, 0], y[batch].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def c2st(
    real: Tensor,
    real_groups: Sequence[str],
    other: Tensor,
    other_groups: Sequence[str] | None,
    seed: int = 0,
    steps: int = 300,
    device: Device = "cpu",
) -> C2ST:
    """Train a small CNN to tell `other` from `real` on one half of each, score the other half.

    Real slices are split by subject (`real_groups`): split by slice, the CNN would learn the
    subjects instead of realism. `other` is split by `other_groups` when given (another real
    set), else at random (generated slices). Both halves are balanced, so chance is 0.5; but
    with few real subjects the CNN partly learns its training subjects, and the floor moves
    (mni152 test, 8 subjects: ~0.58 against validate, ~0.41 against many-subject train
    slices). The interval is binomial over slices and leaves out that subject-level spread.
    """
    from scipy.stats import binomtest
    from sklearn.metrics import roc_auc_score

    _check_images("real", real, 4)
    _check_images("other", other, 4)
    real, other = _at_size(real, C2ST_SIZE), _at_size(other, C2ST_SIZE)
    if real.shape[-2:] != other.shape[-2:]:
        raise ValueError(f"real and other differ in size: {real.shape[-2:]} and {other.shape[-2:]}")
    real_train, real_test = _split(len(real), real_groups, seed)
    other_train, other_test = _split(len(other), other_groups, seed + 1)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = _balanced(real, other, real_train, other_train, gen)
    x_test, y_test = _balanced(real, other, real_test, other_test, gen)
    net = _fit_classifier(x_train, y_train, steps, seed, device)
    with torch.no_grad():
        scores = torch.cat([net(b.to(device))[:, 0].cpu() for b in x_test.split(256)])
    hits = int(((scores > 0) == y_test.bool()).sum())
    ci = binomtest(hits, len(y_test)).proportion_ci(0.95, method="wilson")
    auc = float(roc_auc_score(y_test.numpy(), scores.numpy()))
    return C2ST(hits / len(y_test), float(ci.low), float(ci.high), auc, len(y_test))


def real_floor(images: Tensor, groups: Sequence[str], seed: int = 0, **kwargs: Any) -> C2ST:
    """The C2ST between two disjoint halves of one real set, split by subject: what `c2st`
    scores when the other set is as real as can be. For generated samples the closer floor is
    c2st(real, real_groups, train_slices, train_subjects): many subjects, as samples have."""
    half_a, half_b = group_split(groups, seed)
    groups_a, groups_b = [groups[i] for i in half_a], [groups[i] for i in half_b]
    return c2st(images[half_a], groups_a, images[half_b], groups_b, seed, **kwargs)


# ---------------------------------------------------------------------------------------------
# feature network: trained here on the train split for a side task, never downloaded


@dataclass
class FeatureNetConfig:
    size: int = 64  # input side; larger or smaller slices are resized to it
    width: int = 16  # channels of the first stage; features = 8 * width
    tasks: tuple[str, ...] = ("position",)  # of "position", "label", "rotation"
    num_labels: int = 0
    trained_on: dict[str, Any] = field(default_factory=dict)  # kind, split, slices, subjects


class FeatureNet(nn.Module):
    """Small CNN: (N, 1, S, S) in [0, 1] -> (N, 8 * width) features, standardised on train.

    The features are the global means of all four stages, not only the last: early stages
    respond to edges and texture, so blur moves them even where the side task would not care.
    BatchNorm, not GroupNorm: normalising each image would scale blurred edges back up.
    """

    def __init__(self, cfg: FeatureNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        chans = [(1, w), (w, w), (w, 2 * w), (2 * w, 4 * w)]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, 1 if i == 0 else 2, 1), nn.BatchNorm2d(b), nn.ReLU())
            for i, (a, b) in enumerate(chans)
        )
        self.num_features = 8 * w  # read by torchmetrics
        self.register_buffer("mean", torch.zeros(self.num_features))
        self.register_buffer("std", torch.ones(self.num_features))
        self.position = nn.Linear(self.num_features, 1)
        self.label = nn.Linear(self.num_features, max(cfg.num_labels, 1))
        self.rotation = nn.Linear(self.num_features, 4)

    def raw(self, x: Tensor) -> Tensor:
        """Unstandardised features: (N, 1, S, S) -> (N, F)."""
        x = x.float()
        if x.shape[-2:] != (self.cfg.size, self.cfg.size):
            x = F.interpolate(x, size=(self.cfg.size,) * 2, mode="bilinear", antialias=True)
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, 1)

    def forward(self, x: Tensor) -> Tensor:
        return (self.raw(x) - self.mean) / self.std


def _task_loss(net: FeatureNet, x: Tensor, pos: Tensor, lab: Tensor, gen: torch.Generator):
    """Sum of the side-task losses on one batch (positions and labels where known)."""
    tasks, loss = net.cfg.tasks, x.new_zeros(())
    if "rotation" in tasks:  # RotNet (Gidaris et al. 2018): which of 0/90/180/270 degrees
        turns = torch.randint(0, 4, (len(x),), generator=gen).to(x.device)
        x = x.clone()
        for k in range(1, 4):
            x[turns == k] = x[turns == k].rot90(k, (2, 3))
        return F.cross_entropy(net.rotation(net.raw(x)), turns)
    feats = net.raw(_flip(x, gen))
    known = pos.isfinite()
    if "position" in tasks and known.any():
        loss = loss + 10 * F.mse_loss(net.position(feats)[known, 0], pos[known])
    if "label" in tasks and (lab >= 0).any():
        loss = loss + F.cross_entropy(net.label(feats)[lab >= 0], lab[lab >= 0])
    return loss


def train_feature_net(
    train_set: SliceDataset,
    seed: int = 0,
    steps: int = 500,
    batch_size: int = 64,
    size: int | None = None,
    device: Device = "cpu",
) -> FeatureNet:
    """Train a FeatureNet on the train split only; `cfg.trained_on` records what it saw.

    Side tasks: slice position and label where the data has them, else which rotation was
    applied. A validate or test split is refused: features fitted to the slices they later
    score would flatter those slices.
    """
    if train_set.split != "train":
        raise ValueError(f"the feature net trains on the train split only, got '{train_set.split}'")
    has_labels = bool((train_set.labels >= 0).any())
    tasks = ("position",) if bool(train_set.positions.isfinite().any()) else ()
    tasks = (*tasks, "label") if has_labels else tasks
    trained_on = {"kind": train_set.kind, "split": train_set.split, "slices": len(train_set)}
    trained_on["subjects"] = len(set(train_set.subjects))
    size = size or min(64, train_set.pixels.shape[-1])  # 64 px is enough to see blur, and cheap
    num_labels = int(train_set.labels.max()) + 1 if has_labels else 0
    cfg = FeatureNetConfig(size, 16, tasks or ("rotation",), num_labels, trained_on)
    with _seeded(seed):
        net = FeatureNet(cfg).to(device)
    gen = torch.Generator().manual_seed(seed)
    images = _at_size(train_set.images, size)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (batch_size,), generator=gen)
        x, pos, lab = (t[batch].to(device) for t in (images, train_set.positions, train_set.labels))
        loss = _task_loss(net, x, pos, lab, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    raw = extract_features(net.eval(), images, device, raw=True)
    net.mean.copy_(raw.mean(0))
    std = raw.std(0)
    net.std.copy_(std.clamp_min(0.1 * std.median()))  # a nearly dead unit is not amplified 1e6x
    return net


@torch.no_grad()
def extract_features(
    net: FeatureNet, images: Tensor, device: Device = "cpu", raw: bool = False
) -> Tensor:
    """Features of every image, in batches of 256: (N, 1, S, S) -> (N, F) float32 on the CPU."""
    _check_images("images", images)
    net = net.to(device).eval()
    run = net.raw if raw else net
    return torch.cat([run(b.to(device)).cpu() for b in images.split(256)])


def save_feature_net(net: FeatureNet, path: Path, **meta: Any) -> None:
    """Weights as safetensors, the config (and `meta`, e.g. a cache key) as JSON metadata."""
    payload = {"format": FEATURE_FORMAT, "config": asdict(net.cfg), **meta}
    checkpoint.save_tensors(path, net.state_dict(), payload)


def load_feature_net(path: Path) -> FeatureNet:
    """A FeatureNet rebuilt from its stored config, in eval mode on the CPU."""
    meta = checkpoint.load_tensor_meta(path)
    if meta.get("format") != FEATURE_FORMAT:
        raise CheckpointError(f"{path} is not a vqgen feature net ({FEATURE_FORMAT})")
    try:
        cfg = FeatureNetConfig(**meta["config"])
        cfg.tasks = tuple(cfg.tasks)
        net = FeatureNet(cfg)
        net.load_state_dict(checkpoint.load_tensors(path))
    except (KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: feature net does not match its config ({err})") from None
    return net.eval()


def cached_feature_net(
    train_set: SliceDataset, key: str, seed: int = 0, steps: int = 500, device: Device = "cpu"
) -> FeatureNet:
    """`train_feature_net(train_set)`, kept under cache_dir() for this `key` (the dataset's
    cache key): reused while key, seed and steps match, retrained otherwise."""
    size = train_set.pixels.shape[-1]
    path = cache_dir() / f"featurenet-{train_set.kind}-{size}px-{key[:16]}.safetensors"
    stamp = {"key": key, "seed": seed, "steps": steps}
    if path.is_file():
        with contextlib.suppress(CheckpointError):
            meta = checkpoint.load_tensor_meta(path)
            if {k: meta.get(k) for k in stamp} == stamp:
                return load_feature_net(path)
    net = train_feature_net(train_set, seed, steps, device=device).cpu()
    try:
        save_feature_net(net, path, **stamp)
    except OSError as err:  # a read-only cache costs a retrain next time, not the evaluation
        warnings.warn(f"could not cache the feature net at {path}: {err}", stacklevel=2)
    return net


# ---------------------------------------------------------------------------------------------
# distances between feature sets


class _Given(nn.Identity):
    """Passes features computed beforehand to torchmetrics as its `feature` module."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features  # FID reads it instead of probing with an image


def feature_distances(
    features_real: Tensor, features_fake: Tensor, k: int = 5, subsets: int = 100, seed: int = 0
) -> dict[str, float]:
    """KID (mean and std over subsets), FID, and precision/recall/density/coverage.

    KID is torchmetrics' unbiased polynomial-kernel MMD^2 over `subsets` random subsets of
    half the smaller set (at most 1000), so it works, noisily, from 4 samples a side. FID is
    torchmetrics' too; it is biased upwards at small n. PRDC (Naeem et al. 2020) comes from
    the `prdc` package with k nearest neighbours, k clipped to n - 2 for small sets.
    """
    from prdc import compute_prdc
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = features_real.double().cpu(), features_fake.double().cpu()
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, F) with one F, got {real.shape} and {fake.shape}")
    n = min(len(real), len(fake))
    if n < 4:
        raise ValueError(f"need at least 4 feature vectors a side, got {len(real)}, {len(fake)}")
    subset_size, k = min(1000, n // 2), max(1, min(k, n - 2))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Metric `Kernel Inception Distance`", UserWarning)
        kid = KernelInceptionDistance(_Given(real.shape[1]), subsets, subset_size)
        fid = FrechetInceptionDistance(_Given(real.shape[1]))
    for metric in (kid, fid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with _seeded(seed):
        kid_mean, kid_std = kid.compute()
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        prdc = compute_prdc(real.float().numpy(), fake.float().numpy(), nearest_k=k)
    out = {"kid": float(kid_mean), "kid_std": float(kid_std), "fid": float(fid.compute())}
    out |= {name: float(value) for name, value in prdc.items()}
    return out | {"k": k, "kid_subset_size": subset_size}


# ---------------------------------------------------------------------------------------------
# sharpness


def _power_2d(images: Tensor) -> tuple[Tensor, Tensor]:
    """Mean power |FFT|^2 / pixels of the mean-subtracted images, and each frequency's radius
    in cycles per pixel (Nyquist = 0.5): (H, W), (H, W) float64."""
    _check_images("images", images)
    x = images.double().cpu()[:, 0]
    x = x - x.mean(dim=(1, 2), keepdim=True)
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().square().mean(0) / (h * w)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    return power, (fy[:, None].square() + fx[None, :].square()).sqrt()


def radial_power_spectrum(images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a set: (freqs, power), freqs in cycles per pixel
    from 0 to Nyquist (0.5) in steps of 1/side; plot power on a log scale."""
    power, radius = _power_2d(images)
    side = min(power.shape)
    ring = (radius * side).round().long().flatten()  # ring index of each frequency
    keep = ring <= side // 2
    total = torch.bincount(ring[keep], power.flatten()[keep], side // 2 + 1)
    count = torch.bincount(ring[keep], minlength=side // 2 + 1)
    return (torch.arange(side // 2 + 1) / side).numpy(), (total / count).numpy()


def sharpness_ratio(images: Tensor, real: Tensor, cutoff: float = 0.25) -> float:
    """Power above `cutoff` cycles per pixel (half Nyquist) of `images` over that of `real`:
    1 = as sharp as real, < 1 = blurred, > 1 = noisier than real."""
    if images.shape[-2:] != real.shape[-2:]:
        raise ValueError(f"images and real differ in size: {images.shape[-2:]}, {real.shape[-2:]}")
    power, radius = _power_2d(images)
    power_real, _ = _power_2d(real)
    high = radius > cutoff
    return float(power[high].sum() / power_real[high].sum())


# ---------------------------------------------------------------------------------------------
# diversity


def ms_ssim_diversity(images: Tensor, pairs: int = 256, seed: int = 0) -> float:
    """Mean MS-SSIM over `pairs` random pairs of distinct images: low = diverse. A set should
    score near the real data's own value; far above it means the samples look alike.

    Three scales with an 11 px Gaussian window (MS_SSIM_BETAS), data_range 1 and torchmetrics'
    default ReLU on negative terms: this works for slices of 44 px and more (64, 128, 256).
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    _check_images("images", images, 2)
    if min(images.shape[-2:]) < 44:
        raise ValueError(f"MS-SSIM needs slices of at least 44 px, got {tuple(images.shape[-2:])}")
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(0, len(images), (pairs,), generator=gen)
    second = (first + torch.randint(1, len(images), (pairs,), generator=gen)) % len(images)
    ms_ssim = functools.partial(
        multiscale_structural_similarity_index_measure,
        data_range=1.0, kernel_size=MS_SSIM_KERNEL, betas=MS_SSIM_BETAS, reduction="none",
    )  # fmt: skip
    x = images.float()
    chunks = zip(first.split(64), second.split(64), strict=True)
    return float(torch.cat([ms_ssim(x[i], x[j]) for i, j in chunks]).mean())
