"""Settings as dataclasses, one vocabulary shared by flags, code and run-directory JSON.

CLI flags fill these (the CLI reads its defaults from here); the resolved values are written
into the run directory so that every later verb rebuilds its models from the run alone. Each
dataclass checks what a user gives, once, naming the option; the models only assert their
internal invariants.

Runs survive upgrades: a field added in a later version takes its default when an older run
is read (`load_config`), while an unknown key or a value of the wrong type is refused by name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from vqgen.bounds import (
    MAX_CHANNELS,
    MAX_CODES,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_SAMPLES,
    MAX_SIZE,
    at_least,
    at_most,
    one_of,
    positive,
    seed_value,
    slice_size,
)
from vqgen.errors import CheckpointError, UsageError

QUANTIZERS = ("st", "ema")
CONDITIONS = ("none", "label", "slice")
PRIOR_KINDS = ("gated_pixelcnn",)  # vqgen.models.PRIORS builds each
OPTIMIZERS = ("adamw", "muon")  # vqgen.optim.build_optimizers


@dataclass
class DataConfig:
    """Where the slices come from. They are prepared at the VQ-VAE's size (VQVAEConfig.size),
    the one home of a run's slice size."""

    source: str = "mni152"  # a dataset path, or "mni152" for the embedded default
    kind: str = "auto"  # auto | oasis | adni | nifti | folder | mni152
    seed: int = 0  # seeds subject-level splits and the MNI152 virtual subjects
    strict: bool = False  # unreadable images are an error instead of a counted warning

    def __post_init__(self) -> None:
        seed_value("--data-seed", self.seed)


@dataclass
class VQVAEConfig:
    """Stage 1: encoder -> vector quantizer -> decoder."""

    size: int = 128
    hidden: int = 64  # channels of the conv trunk
    res_blocks: int = 2
    downsample: int = 4  # 2, 4 or 8: the (bottom) code grid is size/downsample on a side
    levels: int = 1  # 1, or 2 for VQ-VAE-2's top grid of codes above the bottom one
    top_downsample: int = 4  # 2 or 4: the top grid is the bottom grid / top_downsample
    codebook_size: int = 512
    code_dim: int = 8  # faster and sharper than wide codes (docs/decisions.md, code-dim)
    beta: float = 0.25  # weight of the commitment loss
    quantizer: str = "ema"  # "st": codebook loss; "ema": moving-average codebook updates
    decay: float = 0.99  # EMA decay
    dead_code_threshold: float = 1.0  # codes used fewer times than this (EMA, per batch) restart

    def __post_init__(self) -> None:
        if self.downsample not in (2, 4, 8):
            raise UsageError(f"--downsample must be 2, 4 or 8, got {self.downsample}")
        slice_size("--size", self.size)
        if self.size % self.downsample:
            raise UsageError(
                f"--size {self.size} is not divisible by --downsample {self.downsample}"
            )
        if self.levels not in (1, 2):
            raise UsageError(f"--levels must be 1 or 2, got {self.levels}")
        if self.top_downsample not in (2, 4):
            raise UsageError(f"--top-downsample must be 2 or 4, got {self.top_downsample}")
        if self.levels == 2 and self.grid % self.top_downsample:
            raise UsageError(
                f"--levels 2: the {self.grid}x{self.grid} code grid is not divisible by "
                f"--top-downsample {self.top_downsample}"
            )
        one_of("--quantizer", self.quantizer, QUANTIZERS)
        at_least("--codebook-size", self.codebook_size, 2)
        positive("--hidden", self.hidden)
        positive("--code-dim", self.code_dim)
        at_least("--res-blocks", self.res_blocks, 0)
        for option, value, high in (
            ("--codebook-size", self.codebook_size, MAX_CODES),
            ("--hidden", self.hidden, MAX_CHANNELS),
            ("--code-dim", self.code_dim, MAX_CHANNELS),
            ("--res-blocks", self.res_blocks, MAX_LAYERS),
        ):
            at_most(option, value, high)
        at_least("--beta", self.beta, 0)
        if not 0 <= self.decay < 1:
            raise UsageError(f"decay must lie in [0, 1), got {self.decay}")
        at_least("dead_code_threshold", self.dead_code_threshold, 0)

    @property
    def grid(self) -> int:
        """Side of the (bottom) code grid."""
        return self.size // self.downsample

    @property
    def grids(self) -> list[int]:
        """Side of each level's code grid, coarse first: [grid] or [top grid, grid]."""
        return [self.grid // self.top_downsample, self.grid][-self.levels :]


@dataclass
class VQLossConfig:
    """Stage 1's loss beside the MSE and the quantizer's (vqgen.losses). The "loss" section of
    vqvae.json."""

    l1_weight: float = 1.0  # sharper slices (docs/decisions.md, l1-weight)

    def __post_init__(self) -> None:
        at_least("--l1-weight", self.l1_weight, 0)


@dataclass
class PriorConfig:
    """Stage 2: an autoregressive prior over code grids, of a kind in PRIOR_KINDS."""

    kind: str = "gated_pixelcnn"
    codebook_size: int = 512  # taken from the VQ-VAE by train-prior
    grid: int = 32  # code grid side, taken from the VQ-VAE by train-prior
    channels: int = 64
    layers: int = 10
    kernel: int = 3
    dilation: int = 8  # 1, 2, 4, ..: layers after the first cycle through dilations up to this
    condition: str = "none"  # none | label | slice
    num_labels: int = 0  # number of classes when condition == "label", taken from the data
    dropout: float = 0.1  # in the gated blocks, while training: long runs overfit without it
    augment: int = 2  # extra copies of the train split to learn from (train_prior.training_codes)
    top_grid: int = 0  # side of the top code grid this (bottom) prior is told; 0: no top level
    cond_dropout: float = 0.0  # rate at which training hides the condition, for --guidance

    def __post_init__(self) -> None:
        one_of("prior kind", self.kind, PRIOR_KINDS)
        one_of("--condition", self.condition, CONDITIONS)
        if self.kernel % 2 == 0 or self.kernel < 3:
            raise UsageError(f"prior kernel must be odd and >= 3, got {self.kernel}")
        if self.dilation < 1 or self.dilation & (self.dilation - 1):
            raise UsageError(f"--dilation must be 1, 2, 4, 8, .., got {self.dilation}")
        positive("--channels", self.channels)
        positive("--layers", self.layers)
        at_least("codebook_size", self.codebook_size, 2)
        positive("grid", self.grid)
        for option, value, high in (
            ("--channels", self.channels, MAX_CHANNELS),
            ("--layers", self.layers, MAX_LAYERS),
            ("codebook_size", self.codebook_size, MAX_CODES),
            ("grid", self.grid, MAX_SIZE),
            ("prior kernel", self.kernel, MAX_KERNEL),
            ("--dilation", self.dilation, MAX_SIZE),
            ("num_labels", self.num_labels, MAX_CODES),
        ):
            at_most(option, value, high)
        at_least("--augment", self.augment, 0)
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must lie in [0, 1), got {self.dropout}")
        if not 0 <= self.cond_dropout < 1:
            raise UsageError(f"--cond-dropout must lie in [0, 1), got {self.cond_dropout}")
        if self.cond_dropout and self.condition == "none":
            raise UsageError("--cond-dropout needs a condition to hide: --condition label or slice")
        at_least("top_grid", self.top_grid, 0)
        if self.top_grid and (
            self.grid % self.top_grid or self.grid // self.top_grid not in (2, 4)
        ):
            raise UsageError(f"top_grid {self.top_grid} must be grid {self.grid} / 2 or / 4")


@dataclass
class TrainConfig:
    """The optimisation loop shared by both stages.

    Training stops after `epochs`, `max_steps` or `max_minutes`, whichever comes first; an
    unset limit does not count, and at least one must be set.
    """

    epochs: int | None = None  # passes over the train split
    max_steps: int | None = None  # optimiser steps
    max_minutes: float | None = None  # training time (the demo's budget)
    # global (under torchrun each process takes its share); None: the device's (for_device)
    batch_size: int | None = None
    lr: float | None = None  # peak; None: BASE_LR scaled to the batch (for_device)
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    log_every: int = 10  # steps between metrics-<stage>.jsonl lines
    tensorboard: bool | None = None  # a live TensorBoard log; None: if the package is installed
    bf16: bool | None = None  # bf16 autocast; None: where the device computes bf16 natively
    # decay of a moving average of the model's weights, which is what is validated and saved
    # (the raw weights go on training); 0: none
    ema: float = 0.0
    # adamw, or muon for a prior's gated blocks or a VQ-VAE's convolutions (vqgen.optim); a run
    # from before it was recorded trained with AdamW
    optimizer: str = "adamw"

    def __post_init__(self) -> None:
        if self.epochs is None and self.max_steps is None and self.max_minutes is None:
            raise UsageError("give --epochs, --max-steps or --max-minutes: training needs an end")
        for option, value in (
            ("--epochs", self.epochs),
            ("--max-steps", self.max_steps),
            ("--max-minutes", self.max_minutes),
            ("--batch-size", self.batch_size),
            ("--lr", self.lr),
        ):
            if value is not None:
                positive(option, value)
        seed_value("--seed", self.seed)
        at_least("weight_decay", self.weight_decay, 0)
        at_least("warmup_steps", self.warmup_steps, 0)
        positive("grad_clip", self.grad_clip)
        positive("log_every", self.log_every)
        if not 0 <= self.ema < 1:
            raise UsageError(f"--ema must lie in [0, 1), got {self.ema}")
        one_of("--optimizer", self.optimizer, OPTIMIZERS)


# Samples `evaluate` draws: the C2ST and KID need a few hundred a side to be stable.
EVAL_SAMPLES = 256

# Each stage's defaults; the CLI shows and uses these.
# Muon for the VQ-VAE's convolutions between pixels and codes: sharper reconstructions and a
# prior with a lower NLL on its codes, at 64 px and 128 px (docs/decisions.md, vqvae-muon)
VQVAE_TRAINING = TrainConfig(epochs=8, optimizer="muon")
# the prior's samples come from a moving average of its weights: lower KID, higher recall in
# 5 and 30 minutes of the demo (docs/decisions.md, ema); Muon for its gated blocks: a lower NLL
# and fewer atypical outlines at the same steps (docs/decisions.md, muon)
PRIOR_TRAINING = TrainConfig(epochs=20, ema=0.99, optimizer="muon")
# each optimiser's rate over the schedule's under "muon" (vqgen.optim.lr_scales): Muon's 0.02 at
# the prior's 2e-3; AdamW's beside it (embeddings, positional map, biases, head) 8e-3, for a
# validate NLL 0.08 bit lower on the demo's prior and 0.16 at 128 px (decisions, muon-adamw-rate);
# the VQ-VAE under Muon takes the same two (decisions, vqvae-muon)
MUON_LR_SCALE = 10.0
ADAMW_BESIDE_MUON_SCALE = 4.0


def with_options(defaults: TrainConfig, **given: Any) -> TrainConfig:
    """`defaults` with the options a user gave (None: not given).

    A step or time limit given without --epochs is the only limit, as in the HF Trainer and
    Lightning: `--max-steps 480` trains 480 steps, however many epochs that takes.
    """
    given = {k: v for k, v in given.items() if v is not None}
    if "epochs" not in given and ("max_steps" in given or "max_minutes" in given):
        given["epochs"] = None
    return dataclasses.replace(defaults, **given)


# the guidance scale of a prior trained with --cond-dropout, where --guidance is not given: in
# the demo 1.5 raised recall and lowered KID and C2ST at 5 and 30 minutes, and from 1.75 the KID
# rose (docs/decisions.md, guidance)
GUIDANCE = 1.5


@dataclass
class SampleConfig:
    """How `sample` draws code grids from the prior."""

    n: int = 16  # slices to generate
    temperature: float = 1.0  # softmax temperature; 0 takes the most likely code
    top_k: int | None = None  # keep only the k most likely codes at each position
    label: str | None = None  # class of a label-conditioned prior
    slice_pos: float | None = None  # slice position in [0, 1] of a slice-conditioned prior
    seed: int = 0
    # classifier-free guidance scale: 1 plain, > 1 closer to the condition; None: GUIDANCE for
    # a prior trained with --cond-dropout, 1 for one without (conditioning.guidance_scale)
    guidance: float | None = None

    def __post_init__(self) -> None:
        check_types(self, SAMPLE_OPTIONS)
        at_least("--n", self.n, 1)
        at_most("--n", self.n, MAX_SAMPLES)
        at_least("--temperature", self.temperature, 0)
        if self.guidance is not None:
            at_least("--guidance", self.guidance, 0)
        if self.top_k is not None:
            at_least("--top-k", self.top_k, 1)
        if self.slice_pos is not None and not 0 <= self.slice_pos <= 1:
            raise UsageError(f"--slice must lie in [0, 1], got {self.slice_pos}")
        seed_value("--seed", self.seed)


# each SampleConfig field as the CLI names it (and `Run.sample` as `label`, `slice`, ...)
SAMPLE_OPTIONS = {
    "n": "--n",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "label": "--label",
    "slice_pos": "--slice",
    "seed": "--seed",
    "guidance": "--guidance",
}


def check_types(cfg: Any, options: dict[str, str]) -> None:
    """Refuse a field of the wrong type (a float count, True for a number, a number for a
    name), naming its option: what reaches a config from Python is not parsed by the CLI."""
    hints = typing.get_type_hints(type(cfg))
    for field, option in options.items():
        value = getattr(cfg, field)
        if not _has_type(value, hints[field]):
            expected = getattr(hints[field], "__name__", str(hints[field]))
            raise UsageError(f"{option} must be {expected}, got {value!r}")


EVAL_SPLITS = ("train", "validate", "test")  # vqgen.data.SPLITS, which config may not import


def eval_sampling(n_samples: int = EVAL_SAMPLES, **options: Any) -> SampleConfig:
    """How `evaluate` draws its `n_samples` samples: as `sample` draws them with `options`
    (temperature, top_k, guidance, seed). Refuses fewer than 2, naming --n-samples."""
    if not (isinstance(n_samples, int) and not isinstance(n_samples, bool) and n_samples >= 2):
        raise UsageError(f"--n-samples must be at least 2 (diversity needs pairs), got {n_samples}")
    at_most("--n-samples", n_samples, MAX_SAMPLES)
    return SampleConfig(n=n_samples, **options)


@dataclass
class EvalConfig:
    """What `evaluate` scores, and how it draws its samples. `sampling.seed` also seeds the
    C2ST, KID's subsets and the floor's train slices."""

    split: str = "test"  # the split scored, whole
    sampling: SampleConfig = dataclasses.field(default_factory=eval_sampling)

    def __post_init__(self) -> None:
        one_of("--split", self.split, EVAL_SPLITS)
        eval_sampling(self.sampling.n)  # at least 2

    @property
    def seed(self) -> int:
        return self.sampling.seed


# -- run JSON -> config -----------------------------------------------------------------------

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type (`int`, `float`, `str`, `bool`, `X | None`).

    bool is not taken for a number (JSON true is no size), an int is taken for a float.
    """
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option in (int, str) and isinstance(value, option) and not isinstance(value, bool):
            return True
    return False


def load_config(cls: type[C], values: Any, where: str) -> C:
    """A config dataclass from one section of a run's JSON, checked before use.

    Fields the section lacks take their defaults (the run is from an older version). A section
    that is missing or not an object, an unknown key, a value of the wrong type and a value the
    config refuses are each a CheckpointError naming `where` and the key, so a hand-edited or
    foreign JSON never ends in a traceback deep inside a model.
    """
    if not isinstance(values, dict):
        found = "missing" if values is None else f"a JSON {type(values).__name__}, not an object"
        raise CheckpointError(f"{where} is {found}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise CheckpointError(f"{where}: unknown key '{unknown[0]}' for {cls.__name__}")
    for key, value in values.items():
        if not _has_type(value, hints[key]):
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise CheckpointError(f"{where}: '{key}' is {value!r}, expected {expected}")
    try:
        return cls(**values)
    except UsageError as err:  # e.g. downsample 5: the file is at fault, not a flag
        raise CheckpointError(f"{where}: {err}") from None
