"""A feature network trained here, on the train split, for a side task (never downloaded), and
the distances between feature sets: KID, FID, precision/recall/density/coverage."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen import fileio
from vqgen.data.cache import cache_dir
from vqgen.data.dataset import SliceDataset
from vqgen.errors import CheckpointError, OutputError, why
from vqgen.realism.images import Device, at_size, check_images, random_flip, seeded

FEATURE_FORMAT = "vqgen-featurenet/1"


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
        return squash((self.raw(x) - self.mean) / self.std)


KNEE = 3.0  # standardised features within this many train SDs are kept as they are


def squash(z: Tensor) -> Tensor:
    """Standardised features beyond +-KNEE bent smoothly towards +-2 KNEE (a tanh, slope 1 at
    the knee), within it unchanged. Slices unlike any of the train split (blank, saturated,
    noise) lift unbounded ReLU features hundreds of SDs, which KID's cubic kernel raised to
    1e10 and FID to 1e5 against a floor of 2; bounded, they stay far but on the floor's scale."""
    over = z.abs() - KNEE
    return torch.where(over > 0, z.sign() * (KNEE + KNEE * torch.tanh(over.clamp_min(0) / KNEE)), z)


def _task_loss(net: FeatureNet, x: Tensor, pos: Tensor, lab: Tensor, gen: torch.Generator):
    """Sum of the side-task losses on one batch (positions and labels where known)."""
    tasks, loss = net.cfg.tasks, x.new_zeros(())
    if "rotation" in tasks:  # RotNet (Gidaris et al. 2018): which of 0/90/180/270 degrees
        turns = torch.randint(0, 4, (len(x),), generator=gen).to(x.device)
        x = x.clone()
        for k in range(1, 4):
            x[turns == k] = x[turns == k].rot90(k, (2, 3))
        return F.cross_entropy(net.rotation(net.raw(x)), turns)
    feats = net.raw(random_flip(x, gen))
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
    with seeded(seed):  # channels_last: a little faster on a CPU (docs/decisions.md, features-nhwc)
        net = FeatureNet(cfg).to(device, memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)
    images = at_size(train_set.images, size).contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (batch_size,), generator=gen)
        x, pos, lab = (t[batch].to(device) for t in (images, train_set.positions, train_set.labels))
        loss = _task_loss(net, x, pos, lab, gen)  # float32: under bf16 it saw blur less well
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net = net.to(memory_format=torch.contiguous_format)  # as a loaded one: the same features
    raw = extract_features(net.eval(), images.contiguous(), device, raw=True)
    net.mean.copy_(raw.mean(0))
    std = raw.std(0)
    net.std.copy_(std.clamp_min(0.1 * std.median()))  # a nearly dead unit is not amplified 1e6x
    return net


@torch.no_grad()
def extract_features(
    net: FeatureNet, images: Tensor, device: Device = "cpu", raw: bool = False
) -> Tensor:
    """Features of every image, in batches of 256: (N, 1, S, S) -> (N, F) float32 on the CPU."""
    check_images("images", images)
    net = net.to(device).eval()
    run = net.raw if raw else net
    return torch.cat([run(b.to(device)).cpu() for b in images.split(256)])


def save_feature_net(net: FeatureNet, path: Path, **meta: Any) -> None:
    """Weights as safetensors, the config (and `meta`, e.g. a cache key) as JSON metadata."""
    payload = {"format": FEATURE_FORMAT, "config": asdict(net.cfg), **meta}
    fileio.save_tensors(path, net.state_dict(), payload)


def load_feature_net(path: Path) -> FeatureNet:
    """A FeatureNet rebuilt from its stored config, in eval mode on the CPU."""
    meta = fileio.load_tensor_meta(path)
    if meta.get("format") != FEATURE_FORMAT:
        raise CheckpointError(f"{path} is not a vqgen feature net ({FEATURE_FORMAT})")
    try:
        cfg = FeatureNetConfig(**meta["config"])
        cfg.tasks = tuple(cfg.tasks)
        net = FeatureNet(cfg)
        net.load_state_dict(fileio.load_tensors(path))
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
            meta = fileio.load_tensor_meta(path)
            if {k: meta.get(k) for k in stamp} == stamp:
                return load_feature_net(path)
    net = train_feature_net(train_set, seed, steps, device=device).cpu()
    try:
        save_feature_net(net, path, **stamp)
    except OSError as err:  # a read-only cache costs a retrain next time, not the evaluation
        reason = str(err).split(": ", 1)[-1] if isinstance(err, OutputError) else why(err)
        warnings.warn(f"could not cache the feature net at {path}: {reason}", stacklevel=2)
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
    with seeded(seed):
        kid_mean, kid_std = kid.compute()
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        prdc = compute_prdc(real.float().numpy(), fake.float().numpy(), nearest_k=k)
    out = {"kid": float(kid_mean), "kid_std": float(kid_std), "fid": float(fid.compute())}
    out |= {name: float(value) for name, value in prdc.items()}
    return out | {"k": k, "kid_subset_size": subset_size}
