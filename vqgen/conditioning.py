"""What a prior is told beside the codes drawn so far: nothing, the slice's class, or its level.

    "none"   an unconditional prior
    "label"  the class of the slice (ADNI: AD or NC), a long in [0, num_labels)
    "slice"  the slice's level in the volume, a float in [0, 1] (0 bottom, 1 top)

Every place that needs to know what a condition is asks this module:

    cond = from_batch(cfg.condition, labels, positions)   # training, the prior's NLL
    embedding = condition_embedding(cfg, channels)         # how the prior takes it in
    check_data(cfg.condition, labels, positions, source)   # train-prior: can the data give it?
    meta = metadata(label_names, positions)                # written to prior.json
    check_metadata(cfg, meta, path)                        # load_prior: does prior.json fit?
    cond = for_sampling(cfg, meta, sample_cfg)             # sample, evaluate: which to draw
    scale = guidance_scale(cfg, sample_cfg)                # and at which guidance
    TopCodesEmbedding(K, channels, factor)                 # a bottom prior's top codes
    for group in groups(cfg.condition, label_names): ...   # evaluate: scores per class
    for part in group_sets(groups, samples, cond, split): ...  # each class's share
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vqgen.config import GUIDANCE, PriorConfig, SampleConfig
from vqgen.data import SliceDataset
from vqgen.errors import CheckpointError, UsageError

SLICE_FREQUENCIES = 6  # Fourier features sin/cos(pi 2^f s), f < 6, for the slice position s
DEFAULT_SLICE_RANGE = (0.1, 0.9)  # for priors saved before prior.json held their "slice_range"


def from_batch(condition: str, labels: Tensor, positions: Tensor) -> Tensor | None:
    """The prior's condition for a batch of (codes, labels, positions): labels, slice
    positions, or nothing."""
    if condition == "label":
        return labels
    if condition == "slice":
        return positions
    return None


# -- how the prior takes a condition in ----------------------------------------------------------


class LabelEmbedding(nn.Embedding):
    """(B,) long class labels -> (B, C) embeddings."""

    def forward(self, labels: Tensor) -> Tensor:
        # the values' range is checked where they are read, not here: a check of a tensor's
        # values makes the host wait for the device at every step
        assert not (labels.dtype.is_floating_point or labels.dtype == torch.bool), labels.dtype
        return super().forward(labels.long())


class SliceEmbedding(nn.Sequential):
    """(B,) float slice positions in [0, 1] -> (B, C): Fourier features, then a small MLP."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Linear(2 * SLICE_FREQUENCIES + 1, channels), nn.SiLU(), nn.Linear(channels, channels)
        )
        freqs = math.pi * 2.0 ** torch.arange(SLICE_FREQUENCIES)
        self.register_buffer("slice_freqs", freqs, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        assert positions.dtype.is_floating_point, positions.dtype  # in [0, 1]: see above
        s = positions[:, None].to(self.slice_freqs.dtype)  # (B, 1)
        angles = s * self.slice_freqs  # (B, F)
        feats = torch.cat([s, angles.sin(), angles.cos()], dim=1)
        return super().forward(feats.to(self[0].weight.dtype))


class TopCodesEmbedding(nn.Module):
    """(B, gt, gt) top codes -> (B, C, g, g) map on the bottom grid, g = gt x factor, that a
    bottom prior adds inside every gate (section 2.3 of the gated PixelCNN paper, a spatial
    condition). The codes are embedded, mixed with their neighbours by a 3x3 convolution, and
    upsampled by a learned transposed convolution, so each bottom position under a top code
    gets its own view of it. The top codes are all known before the bottom grid is drawn, so
    the map may see all of them without breaking the bottom prior's causality."""

    def __init__(self, codebook_size: int, channels: int, factor: int):
        super().__init__()
        C = channels
        self.embedding = nn.Embedding(codebook_size, C)
        self.net = nn.Sequential(
            nn.Conv2d(C, C, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(C, C, factor, stride=factor),
            nn.ReLU(),
            nn.Conv2d(C, C, 3, padding=1),
        )

    def forward(self, top: Tensor) -> Tensor:
        assert not (top.dtype.is_floating_point or top.dtype == torch.bool), top.dtype
        return self.net(self.embedding(top.long()).permute(0, 3, 1, 2))  # via (B, gt, gt, C)


def condition_embedding(cfg: PriorConfig, channels: int) -> nn.Module | None:
    """The module that turns a (B,) condition into a (B, channels) embedding; None for none."""
    if cfg.condition == "label":
        assert cfg.num_labels >= 1, "a label prior needs num_labels"
        return LabelEmbedding(cfg.num_labels, channels)
    if cfg.condition == "slice":
        return SliceEmbedding(channels)
    return None


# -- what the data and the run must provide ----------------------------------------------------


def check_data(condition: str, labels: Tensor, positions: Tensor, source: str) -> None:
    """Refuse a condition the data cannot provide, naming the option."""
    if condition == "label" and (labels < 0).any():
        raise UsageError(f"--condition label needs labelled data (e.g. ADNI); {source} has none")
    if condition == "slice" and torch.isnan(positions).any():
        raise UsageError(f"--condition slice needs slice positions; {source} lacks some")


def slice_range(positions: Tensor) -> list[float] | None:
    """The lowest and highest slice position of the train split, where it has any: the
    levels that sampling goes across."""
    known = positions[~torch.isnan(positions)]
    return [float(known.min()), float(known.max())] if len(known) else None


def metadata(label_names: tuple[str, ...], positions: Tensor) -> dict[str, Any]:
    """What prior.json records for sampling to choose conditions: the class names and the
    train split's range of slice positions."""
    return {"label_names": list(label_names), "slice_range": slice_range(positions)}


def check_metadata(cfg: PriorConfig, meta: dict[str, Any], where: object) -> None:
    """Refuse a prior.json (at `where`) whose label names do not fit the prior's labels, a
    label prior without labels, or a slice range that is not two levels in [0, 1]."""
    if cfg.condition == "label" and cfg.num_labels < 1:
        raise CheckpointError(f"{where} 'model': a label prior needs num_labels of at least 1")
    levels = meta.get("slice_range")
    if levels is not None and not (
        isinstance(levels, list)
        and len(levels) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels)
        and 0 <= levels[0] <= levels[1] <= 1
    ):
        raise CheckpointError(
            f"{where}: 'slice_range' must be [low, high] in [0, 1] or null, got {levels!r}"
        )
    names = meta.get("label_names", [])
    if not (
        isinstance(names, list) and all(isinstance(n, str) and n.isprintable() for n in names)
    ) or (cfg.condition == "label" and len(names) != cfg.num_labels):
        raise CheckpointError(
            f"{where}: 'label_names' must list the prior's {cfg.num_labels} label names, "
            f"printable text, got {names!r}"
        )


# -- sampling ----------------------------------------------------------------------------------


def guidance_scale(cfg: PriorConfig, sampling: SampleConfig) -> float:
    """The classifier-free guidance scale `sampling` draws at: its --guidance, or where none
    was given GUIDANCE for a prior trained with --cond-dropout (what it was trained for) and 1
    for one without. Refuses guidance for a prior that has no unconditional half."""
    if sampling.guidance is None:
        return GUIDANCE if cfg.cond_dropout else 1.0
    if sampling.guidance != 1 and not cfg.cond_dropout:
        raise UsageError(
            f"--guidance {sampling.guidance}: this prior was trained without --cond-dropout, "
            "so it has no unconditional half to guide with"
        )
    return sampling.guidance


def for_sampling(cfg: PriorConfig, meta: dict[str, Any], sampling: SampleConfig) -> Tensor | None:
    """The condition tensor for `sampling.n` samples, refusing options the prior was not
    trained with. Without --label or --slice, samples go through the classes (`meta`
    "label_names"), or evenly across the slice positions the prior was trained on (`meta`
    "slice_range"): asked for a level it never saw, it draws black or near-empty slices."""
    condition, n = cfg.condition, sampling.n
    guidance_scale(cfg, sampling)  # refuses --guidance for a prior trained without a "none"
    if sampling.label is not None and condition != "label":
        raise UsageError(
            f"--label {sampling.label}: this prior was trained with --condition {condition}"
        )
    if sampling.slice_pos is not None and condition != "slice":
        raise UsageError(
            f"--slice {sampling.slice_pos}: this prior was trained with --condition {condition}"
        )
    if condition == "label":
        label_names = meta.get("label_names", [])
        if sampling.label is None:
            return torch.arange(n) % len(label_names)
        if sampling.label not in label_names:
            raise UsageError(
                f"--label {sampling.label} is unknown; this prior knows {', '.join(label_names)}"
            )
        return torch.full((n,), label_names.index(sampling.label), dtype=torch.long)
    if condition == "slice":
        if sampling.slice_pos is None:
            low, high = meta.get("slice_range") or DEFAULT_SLICE_RANGE
            return torch.linspace(float(low), float(high), n)
        low, high = meta.get("slice_range") or DEFAULT_SLICE_RANGE
        # the levels as the warning prints them: --slice 0.9 is inside "0.15 to 0.90"
        if not round(low, 2) <= sampling.slice_pos <= round(high, 2):
            warnings.warn(
                f"--slice {sampling.slice_pos} lies outside the levels this prior was trained on "
                f"({low:.2f} to {high:.2f}); its samples may be empty or not brain-like",
                stacklevel=3,
            )
        return torch.full((n,), float(sampling.slice_pos))
    return None


# -- evaluation --------------------------------------------------------------------------------


class Group(NamedTuple):
    """One class of a label-conditioned prior, as evaluate scores it."""

    name: str
    label: int

    def mask(self, labels: Tensor) -> Tensor:
        """Which of these labels (of real slices, or samples' conditions) are this class."""
        return labels == self.label


def groups(condition: str, label_names: list[str] | tuple[str, ...]) -> list[Group]:
    """The groups evaluate scores one by one: the classes of a label prior, else none."""
    if condition != "label":
        return []
    return [Group(name, i) for i, name in enumerate(label_names)]


class GroupSets(NamedTuple):
    """One group's share of the samples and of the split, as evaluate scores them."""

    name: str
    of_samples: Tensor  # (n,) bool: which samples were drawn with the group's condition
    samples: Tensor  # those samples
    split: SliceDataset  # the split's slices of the group


def group_sets(
    groups: list[Group], samples: Tensor, cond: Tensor, dataset: SliceDataset
) -> Iterator[GroupSets]:
    """Per group, its samples (by their condition `cond`) and its slices of the split: the
    per-label sample scores compare these as the whole section compares all."""
    for group in groups:
        of_samples = group.mask(cond)
        yield GroupSets(
            group.name, of_samples, samples[of_samples], dataset.subset(group.mask(dataset.labels))
        )
