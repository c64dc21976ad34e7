"""The `train-vqvae` verb: train the stage-1 VQ-VAE on a dataset's train split, select it on
the validate split.

    result = train_vqvae(DataConfig(source="mni152"), VQVAEConfig(), TrainConfig(), Path("run"))

The loss (reconstruction and quantizer terms) is vqgen.losses'.

The test split is never read here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vqgen import checkpoint, distributed, metrics, plots
from vqgen.config import DataConfig, TrainConfig, VQLossConfig, VQVAEConfig, to_dict
from vqgen.data import SliceDataset, load_data, resolve
from vqgen.device import resolve_device
from vqgen.errors import UsageError
from vqgen.inference import reconstruct
from vqgen.losses import VQLoss
from vqgen.models.vqvae import VQVAE
from vqgen.overwrite import training
from vqgen.rundir import RunDir
from vqgen.train import Stage, fit, resume_trains

FIGURE_SLICES = 8  # fixed validation slices shown in the reconstruction figure


@dataclass
class VQVAEResult:
    checkpoint: Path
    val_ssim: float
    val_psnr: float
    codebook_used: float
    perplexity: float
    steps: int
    seconds: float


def reconstruction_metrics(model: VQVAE, dataset: SliceDataset) -> dict[str, float]:
    """Mean SSIM (data_range 1; the batched torch SSIM, tested equal to scikit-image's),
    PSNR, MSE and codebook usage (of each level) over a split."""
    images = dataset.images
    recon, codes = reconstruct(model, images)
    used, perplexity = metrics.codebook_usage(codes[-1], model.cfg.codebook_size)
    scores = {
        "val_ssim": float(metrics.ssim(images, recon).mean()),
        "val_psnr": metrics.finite_mean(metrics.psnr(images, recon)),
        "val_mse": float(metrics.mse(images, recon).mean()),
        "val_codebook_used": used,
        "val_perplexity": perplexity,
    }
    if len(codes) == 2:  # the top level's usage too
        used, perplexity = metrics.codebook_usage(codes[0], model.cfg.codebook_size)
        scores |= {"val_codebook_used_top": used, "val_perplexity_top": perplexity}
    return scores


def figure_indices(n: int, count: int = FIGURE_SLICES) -> list[int]:
    """Evenly spread, fixed indices so the figure shows the same slices every epoch."""
    return torch.linspace(0, n - 1, min(count, n)).round().long().tolist()


def write_figures(model: VQVAE, val_set: SliceDataset, run: RunDir) -> None:
    """Loss curves and input | reconstruction | error for fixed validation slices."""
    figures = run.figures
    plots.training_curves(
        run.metrics_log("vqvae"),
        figures / "vqvae_curves.png",
        "mse",
        ["val_ssim", "val_perplexity"],
    )
    images, recon = figure_reconstructions(model, val_set)
    caption = "validate split"
    plots.reconstruction_figure(images, recon, figures / "vqvae_reconstructions.png", caption)


def figure_reconstructions(model: VQVAE, val_set: SliceDataset) -> tuple[Tensor, Tensor]:
    """The figure's fixed validation slices and their reconstructions, on the CPU."""
    images = val_set.images[figure_indices(len(val_set))]
    return images, reconstruct(model, images)[0]


def preview(model: VQVAE, val_set: SliceDataset) -> Tensor:
    """The live log's images: the figure's validation slices over their reconstructions."""
    return torch.cat(figure_reconstructions(model, val_set))  # (2N, 1, H, W)


def resolve_data(data: DataConfig) -> DataConfig:
    """Fix the dataset kind and make a path absolute, so later verbs find the same data."""
    kind = resolve(data.source, data.kind)[0]  # a --data that does not fit --kind fails here
    source = data.source if kind == "mni152" else str(Path(data.source).expanduser().resolve())
    return DataConfig(source=source, kind=kind, seed=data.seed, strict=data.strict)


def configs(
    data: DataConfig,
    model_cfg: VQVAEConfig,
    loss: VQLossConfig,
    run: RunDir,
    resume: bool,
    moved_to: str | None = None,
) -> tuple[DataConfig, VQVAEConfig, VQLossConfig]:
    """The data, model and loss settings to train with: the run's own when resuming, with its
    data at `moved_to` if it has moved since."""
    if resume:
        meta = checkpoint.read_meta(run, "vqvae", last=True)
        where = run.meta("vqvae", last=True)
        if checkpoint.trained_adversarially(meta):
            raise UsageError(
                f"{where}: this VQ-VAE was trained with --adversarial, which vqgen no longer "
                "has, so it cannot be continued; it still samples and evaluates, or train "
                "one anew with --overwrite"
            )
        return checkpoint.run_data(run, meta, moved_to), *checkpoint.vqvae_configs(meta, where)
    return resolve_data(data), model_cfg, loss


def train_vqvae(
    data: DataConfig,
    model_cfg: VQVAEConfig,
    train: TrainConfig,
    run_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    loss: VQLossConfig | None = None,
    moved_to: str | None = None,
) -> VQVAEResult:
    """Train stage 1 into `run_dir` with `loss` (default: MSE and the quantizer's), holding
    the run's lock. A run that already holds a VQ-VAE needs `resume` (continue it, with its own
    configs, its data at `moved_to` if it has moved) or `overwrite` (replace it)."""
    if train.ema:  # its EMA codebook would be averaged with codes restarted moments ago
        raise UsageError("ema: a moving average of weights is for the prior, not the VQ-VAE")
    run = RunDir(run_dir)
    device = distributed.init(resolve_device(train.device))
    # a bad --data fails first
    data, model_cfg, loss = configs(data, model_cfg, loss or VQLossConfig(), run, resume, moved_to)
    trains = not resume or resume_trains("vqvae", train, run)  # else the VQ-VAE stays as it is
    with training(run, "vqvae", resume, overwrite, trains):
        return _train(data, model_cfg, VQLoss(loss), train, run, device, resume)


def _train(
    data: DataConfig,
    model_cfg: VQVAEConfig,
    loss: VQLoss,
    train: TrainConfig,
    run: RunDir,
    device: torch.device,
    resume: bool,
) -> VQVAEResult:
    with distributed.main_first():  # rank 0 fills the data cache, the others then read it
        size = model_cfg.size
        train_set, val_set = load_data(data, "train", size), load_data(data, "validate", size)
    torch.manual_seed(train.seed)  # the initial weights too
    # NHWC weights and inputs: 15-35% faster training on the CPU (docs/decisions.md, nhwc)
    model = VQVAE(model_cfg).to(memory_format=torch.channels_last)
    stage = Stage(
        name="vqvae",
        model=model,
        train_set=train_set,
        step=loss.step,
        validate=lambda m: reconstruction_metrics(m, val_set),
        monitor="val_ssim",
        higher_is_better=True,
        meta={"model": to_dict(model_cfg), "loss": to_dict(loss.cfg), "data": to_dict(data)},
        after_epoch=lambda m: write_figures(m, val_set, run),
        preview=lambda m: preview(m, val_set),
    )
    start = time.perf_counter()
    result = fit(stage, train, run, device, resume)
    best = checkpoint.read_meta(run, "vqvae")["metrics"]
    return VQVAEResult(
        checkpoint=result.checkpoint,
        val_ssim=best["val_ssim"],
        val_psnr=best["val_psnr"],
        codebook_used=best["val_codebook_used"],
        perplexity=best["val_perplexity"],
        steps=result.step,
        seconds=time.perf_counter() - start,
    )
