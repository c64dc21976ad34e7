"""The `train-prior` verb: encode the data to code grids with the frozen VQ-VAE, then fit the
gated PixelCNN prior.

    result = train_prior(Path("run"), PriorConfig(layers=10), TrainConfig(epochs=20))

Code grids are cached in run/codes/<split>.safetensors and reused while they were made by the
VQ-VAE now in the run (checked by its SHA-256). Selection uses the validate split only.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from vqgen import checkpoint, conditioning, distributed, fileio, plots
from vqgen.config import DataConfig, PriorConfig, TrainConfig, VQVAEConfig, to_dict
from vqgen.data import SliceDataset, load_data, mni152
from vqgen.data.augment import augment_slices
from vqgen.device import resolve_device
from vqgen.errors import CheckpointError
from vqgen.inference import (
    LN2,
    CodeSet,
    baselines_bits,
    encode,
    level_keys,
    mean_bits,
    nll_bits,
    note,
    read_codes,
    split_codes,
)
from vqgen.models import build_prior, code_nll, level_logits
from vqgen.models.vqvae import VQVAE
from vqgen.overwrite import training
from vqgen.rundir import RunDir
from vqgen.train import Batch, Stage, fit


@dataclass
class PriorResult:
    checkpoint: Path
    val_bits: float
    uniform_bits: float
    unigram_bits: float
    steps: int
    seconds: float


def prior_step(prior: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of every code given those before it in raster order, at each level (the
    bottom one also given the top codes), summed over levels. With cond_dropout, that share
    of the batch has its condition hidden, so the prior also learns p(codes) for guidance."""
    codes, labels, positions = batch
    cfg = distributed.unwrap(prior).cfg
    cond = conditioning.from_batch(cfg.condition, labels, positions)
    drop = None
    if cfg.cond_dropout:
        drop = torch.rand(len(labels), device=labels.device) < cfg.cond_dropout
    logits = level_logits(prior, codes, cond, drop)
    losses = [code_nll(x, c) for x, c in zip(logits, codes, strict=True)]
    loss = sum(losses[1:], losses[0])
    sizes = [c[0].numel() for c in codes]
    nats = sum(x.detach() * n for x, n in zip(losses, sizes, strict=True)) / sum(sizes)
    scalars = {"loss": loss.detach(), "bits": nats / LN2}  # left on the device
    if len(losses) == 2:
        scalars["bits_top"] = losses[0].detach() / LN2
    return loss, scalars


MANY_COPIES = 50  # --augment beyond this is warned of, with its cost (the demo's 30 min: 12)
PROGRESS_SECONDS = 5.0  # encoding copies says how far it is at least this often


def training_codes(
    run: RunDir,
    vqvae: VQVAE,
    data: DataConfig,
    codes: CodeSet,
    copies: int,
    vqvae_hash: str,
    load_train: Callable[[], SliceDataset] | None = None,
) -> CodeSet:
    """The train split's code grids `codes` and those of `copies` more versions of it: for
    mni152 fresh virtual subjects of the train seed stream, else the train slices under small
    random affine and intensity changes (and left-right flips, except for a plain folder),
    encoded by the VQ-VAE. Kept in run/codes while made by this VQ-VAE. `load_train` reads
    the train split (default: from `data`)."""
    if not copies:
        return codes
    path = run.augmented_codes(copies)
    keys = level_keys(vqvae.cfg.levels)
    cached = read_codes(path, vqvae, vqvae_hash)
    if cached is not None:
        extra = cached[0]
    else:
        size = vqvae.cfg.size
        train = load_train() if load_train is not None else load_data(data, "train", size)
        subjects = len(set(train.subjects))
        announce_copies(copies, len(train), sum(g * g for g in vqvae.cfg.grids))
        sets = []  # each copy encoded as it is made: one copy's images in memory at a time
        start = said = time.perf_counter()
        for copy in range(copies):
            if data.kind == "mni152":
                fresh = mni152.fresh_train_subjects(subjects, copy * subjects, size, data.seed)
                sets.append((encode(vqvae, fresh.images), fresh.labels, fresh.positions))
            else:
                images = augment_slices(train.images, data.seed + copy, data.kind != "folder")
                sets.append((encode(vqvae, images), train.labels, train.positions))
            now = time.perf_counter()
            if copy == 0:
                warn_many_copies(copies, len(train), now - start)
            if (copy + 1) % max(copies // 10, 1) == 0 or now - said >= PROGRESS_SECONDS:
                note(f"--augment: encoded {copy + 1} of {copies} copies of the train split")
                said = now
        extra = {
            key: torch.cat(level)
            for key, level in zip(
                keys, zip(*[grids for grids, _, _ in sets], strict=True), strict=True
            )
        }
        extra["labels"] = torch.cat([labels for _, labels, _ in sets])
        extra["positions"] = torch.cat([positions for _, _, positions in sets])
        fileio.save_tensors(path, extra, {"vqvae_sha256": vqvae_hash, "copies": copies})
    levels = [torch.cat([c, extra[k].to(c.dtype)]) for c, k in zip(codes.levels, keys, strict=True)]
    return CodeSet(
        levels,
        torch.cat([codes.labels, extra["labels"]]),
        torch.cat([codes.positions, extra["positions"]]),
        codes.label_names,
    )


def announce_copies(copies: int, slices: int, codes_per_slice: int) -> None:
    """Say what --augment is about to make; warn when its code grids (every level's
    `codes_per_slice` codes) take gigabytes."""
    size = copies * slices * codes_per_slice * 2 / 1e9  # int16 codes
    if size >= 1:
        warnings.warn(
            f"--augment {copies}: {copies * slices} more code grids, {size:.1f} GB in memory "
            "and in run/codes",
            stacklevel=3,
        )
    note(f"--augment: making and encoding {copies} copies of the train split ({slices} slices)")


def warn_many_copies(copies: int, slices: int, first: float) -> None:
    """Warn of an --augment of more than MANY_COPIES copies, with what it costs: the time to
    make and encode them here (from the first copy's `first` seconds) and the grids it adds
    to every epoch."""
    if copies <= MANY_COPIES:
        return
    total = first * copies
    took = f"{total / 60:.0f} min" if total >= 90 else f"{total:.0f} s"
    warnings.warn(
        f"--augment {copies}: {copies} copies of the train split, about {took} to make and "
        f"encode here ({first:.2f} s a copy), and {copies * slices} more code grids to learn "
        f"from: every epoch {copies + 1} times as long as on the train split alone",
        stacklevel=3,
    )


def resumed_prior_config(run: RunDir, vqvae_hash: str) -> tuple[PriorConfig, PriorConfig | None]:
    """The interrupted prior's configs (bottom or only level, top level), refusing one trained
    on another VQ-VAE's codes."""
    meta = checkpoint.read_meta(run, "prior", last=True)
    path = run.meta("prior", last=True)
    if meta.get("vqvae_sha256") != vqvae_hash:
        raise CheckpointError(
            f"{path} was trained on codes of another VQ-VAE and cannot be continued; "
            "train it anew with --overwrite"
        )
    return checkpoint.prior_configs(meta, path)


def level_configs(
    prior: PriorConfig, vqvae: VQVAEConfig, num_labels: int
) -> tuple[PriorConfig, PriorConfig | None]:
    """The prior of each level as `prior` describes it, with the codebook, grid and labels of
    the VQ-VAE and the data: (the bottom or only level's, the top level's or None). The
    bottom prior of two levels is told the top codes."""
    top_grid, grid = vqvae.grids if vqvae.levels == 2 else (0, vqvae.grid)
    cfg = replace(
        prior,
        codebook_size=vqvae.codebook_size,
        grid=grid,
        num_labels=num_labels,
        top_grid=top_grid,
    )
    return cfg, replace(cfg, grid=top_grid, top_grid=0) if top_grid else None


def validate_levels(prior: torch.nn.Module, codes: CodeSet) -> dict[str, float]:
    """The validate NLL in bits per code over all levels, and of the top level apart."""
    bits = nll_bits(prior, codes)
    scores = {"val_bits": mean_bits(bits, codes)}
    if len(bits) == 2:
        scores["val_bits_top"] = bits[0]
    return scores


def train_prior(
    run_dir: Path,
    prior: PriorConfig,
    train: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    moved_to: str | None = None,
) -> PriorResult:
    """Fit the prior on the train split's codes, keep the best by validate NLL, holding the
    run's lock. A run that already holds a prior needs `resume` or `overwrite`.

    `prior` gives the network's size and condition; its codebook size, grid and number of
    labels are taken from the run's VQ-VAE and data. `moved_to` is the data's new place,
    where it moved since the VQ-VAE was trained.
    """
    run = RunDir(run_dir).check_exists()
    device = distributed.init(resolve_device(train.device))
    with training(run, "prior", resume, overwrite):
        return _train(run, prior, train, device, resume, moved_to)


def _train(
    run: RunDir,
    prior: PriorConfig,
    train: TrainConfig,
    device: torch.device,
    resume: bool,
    moved_to: str | None = None,
) -> PriorResult:
    vqvae, vqvae_meta = checkpoint.load_vqvae(run, device)
    size = vqvae.cfg.size
    # where the data is: checked only when slices are read, since cached code grids need none
    placed = functools.partial(checkpoint.run_data, run, vqvae_meta, moved_to)
    data = placed() if moved_to else checkpoint.data_config(vqvae_meta, run.meta("vqvae"))

    def loader(split: str) -> Callable[[], SliceDataset]:
        return lambda: load_data(placed(), split, size)

    vqvae_hash = fileio.sha256(run.weights("vqvae"))
    resumed = resumed_prior_config(run, vqvae_hash) if resume else None  # before any work
    with distributed.main_first():  # rank 0 encodes and caches the codes, the others read them
        split_train, val_codes = (
            split_codes(run, split, vqvae, vqvae_hash, loader(split))
            for split in ("train", "validate")
        )
    if resumed is not None:
        cfg, top_cfg = resumed
    else:
        cfg, top_cfg = level_configs(prior, vqvae.cfg, len(split_train.label_names))
    conditioning.check_data(cfg.condition, split_train.labels, split_train.positions, data.source)
    with distributed.main_first():
        train_codes = training_codes(
            run, vqvae, data, split_train, cfg.augment, vqvae_hash, loader("train")
        )
    baselines = baselines_bits(split_train, cfg.codebook_size)  # as `evaluate` reports them
    figure = run.figures / "prior_curves.png"
    torch.manual_seed(train.seed)  # the initial weights too
    stage = Stage(
        name="prior",
        model=build_prior(cfg, top_cfg),
        train_set=train_codes,
        step=prior_step,
        validate=lambda m: validate_levels(m, val_codes),
        monitor="val_bits",
        higher_is_better=False,
        meta={
            "model": to_dict(cfg),
            **({"top_model": to_dict(top_cfg)} if top_cfg else {}),
            "data": to_dict(data),
            "vqvae_sha256": vqvae_hash,
            **conditioning.metadata(train_codes.label_names, split_train.positions),
            "baselines_bits": baselines,
        },
        after_epoch=lambda m: plots.training_curves(
            run.metrics_log("prior"), figure, "bits", ["val_bits"], baselines
        ),
    )
    start = time.perf_counter()
    result = fit(stage, train, run, device, resume)
    return PriorResult(
        checkpoint=result.checkpoint,
        val_bits=result.best,
        uniform_bits=baselines["uniform"],
        unigram_bits=baselines["unigram"],
        steps=result.step,
        seconds=time.perf_counter() - start,
    )
