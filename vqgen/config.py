"""Settings as dataclasses, one vocabulary shared by flags, code and run-directory JSON.

CLI flags fill these; the resolved values are written into the run directory so that every
later verb rebuilds its models from the run alone. Reading a dict with an unknown or missing
key is an error that names the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from vqgen.errors import CheckpointError, UsageError

QUANTIZERS = ("st", "ema")
CONDITIONS = ("none", "label", "slice")


@dataclass
class DataConfig:
    """Where the slices come from and how they are prepared."""

    source: str = "mni152"  # a dataset path, or "mni152" for the embedded default
    kind: str = "auto"  # auto | oasis | adni | nifti | folder | mni152
    size: int = 128  # slices are resized to size x size
    seed: int = 0  # seeds subject-level splits and the MNI152 virtual subjects
    strict: bool = False  # unreadable images are an error instead of a counted warning


@dataclass
class VQVAEConfig:
    """Stage 1: encoder -> vector quantizer -> decoder."""

    size: int = 128
    hidden: int = 64  # channels of the conv trunk
    res_blocks: int = 2
    downsample: int = 4  # 4 or 8: the code grid is size/downsample on a side
    codebook_size: int = 512
    code_dim: int = 64
    beta: float = 0.25  # weight of the commitment loss
    quantizer: str = "ema"  # "st": codebook loss; "ema": moving-average codebook updates
    decay: float = 0.99  # EMA decay
    dead_code_threshold: float = 1.0  # codes used fewer times than this (EMA, per batch) restart

    def __post_init__(self) -> None:
        if self.downsample not in (4, 8):
            raise UsageError(f"--downsample must be 4 or 8, got {self.downsample}")
        if self.size % self.downsample:
            raise UsageError(
                f"--size {self.size} is not divisible by --downsample {self.downsample}"
            )
        if self.quantizer not in QUANTIZERS:
            raise UsageError(f"--quantizer must be one of {', '.join(QUANTIZERS)}")
        if self.codebook_size < 2:
            raise UsageError(f"--codebook-size must be at least 2, got {self.codebook_size}")
        positive("--size", self.size)
        positive("--hidden", self.hidden)
        positive("--code-dim", self.code_dim)
        if self.beta < 0:
            raise UsageError(f"--beta must not be negative, got {self.beta}")

    @property
    def grid(self) -> int:
        """Side of the code grid."""
        return self.size // self.downsample


@dataclass
class PriorConfig:
    """Stage 2: gated PixelCNN over code grids."""

    codebook_size: int = 512  # taken from the VQ-VAE by train-prior
    grid: int = 32  # code grid side, taken from the VQ-VAE by train-prior
    channels: int = 64
    layers: int = 10
    kernel: int = 3
    condition: str = "none"  # none | label | slice
    num_labels: int = 0  # number of classes when condition == "label", taken from the data

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise UsageError(f"--condition must be one of {', '.join(CONDITIONS)}")
        if self.kernel % 2 == 0 or self.kernel < 3:
            raise UsageError(f"prior kernel must be odd and >= 3, got {self.kernel}")
        positive("--channels", self.channels)
        positive("--layers", self.layers)


@dataclass
class TrainConfig:
    """The optimisation loop shared by both stages."""

    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps, whichever comes first
    max_minutes: float | None = None  # or after this much training time (the demo's budget)
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    workers: int = 0
    log_every: int = 10  # steps between metrics-<stage>.jsonl lines

    def __post_init__(self) -> None:
        positive("--epochs", self.epochs)
        positive("--batch-size", self.batch_size)
        positive("--lr", self.lr)
        if self.max_steps is not None:
            positive("--max-steps", self.max_steps)
        if self.max_minutes is not None:
            positive("--max-minutes", self.max_minutes)
        if self.workers < 0:
            raise UsageError(f"--workers must not be negative, got {self.workers}")


def positive(option: str, value: float) -> None:
    """Refuse a zero or negative setting, naming its option."""
    if not value > 0:
        raise UsageError(f"{option} must be positive, got {value}")


C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], values: dict[str, Any], where: str = "config") -> C:
    """Build `cls` from `values`, refusing unknown or missing keys by name."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    missing = sorted(names - set(values))
    if unknown:
        raise CheckpointError(f"{where}: unknown key '{unknown[0]}' for {cls.__name__}")
    if missing:
        raise CheckpointError(f"{where}: missing key '{missing[0]}' for {cls.__name__}")
    return cls(**values)
