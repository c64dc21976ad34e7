"""The `train-vqvae` verb: train the stage-1 VQ-VAE on a dataset's train split, select it on
the validate split.

    result = train_vqvae(DataConfig(source="mni152"), VQVAEConfig(), TrainConfig(), Path("run"))

The test split is never read here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vqgen import checkpoint, distributed, metrics, plots, rundir
from vqgen.config import DataConfig, TrainConfig, VQVAEConfig, load_config, to_dict
from vqgen.data import SliceDataset, detect_kind, load_data
from vqgen.errors import UsageError
from vqgen.inference import reconstruct, resolve_device
from vqgen.models.discriminator import PatchDiscriminator
from vqgen.models.vqvae import VQVAE
from vqgen.train import Batch, Nets, OptimizerSettings, Stage, fit

FIGURE_SLICES = 8  # fixed validation slices shown in the reconstruction figure
# the discriminator's Adam: GAN betas as in VQGAN, and a tenth of --lr: at the VQ-VAE's 2e-3 its
# hinge loss hovered at 2 (chance) and above, so it taught the VQ-VAE nothing (bench/RESULTS.md)
DISC_OPTIMIZER = OptimizerSettings(lr_scale=0.1, betas=(0.5, 0.9))


@dataclass
class VQVAEResult:
    checkpoint: Path
    val_ssim: float
    val_psnr: float
    codebook_used: float
    perplexity: float
    steps: int
    seconds: float


def vqvae_step(nets: Nets, batch: Batch, step: int) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Reconstruction MSE (+ L1) plus the quantizer's codebook/commitment loss; with a
    discriminator in `nets`, from `disc_start` on also the adversarial loss and its own."""
    images = batch[0].contiguous(memory_format=torch.channels_last)  # like the weights
    vqvae = distributed.unwrap(nets["model"])
    cfg = vqvae.cfg
    recon, q = nets["model"](images)
    recon = recon.float()
    mse = F.mse_loss(recon, images)
    reconstruction = mse + cfg.l1_weight * F.l1_loss(recon, images) if cfg.l1_weight else mse
    loss = reconstruction + q.loss
    scalars = {"loss": loss.item(), "mse": mse.item(), "perplexity": q.perplexity.item()}
    if "disc" not in nets or step < cfg.disc_start:
        return {"model": loss}, scalars
    return adversarial_losses(nets, images, recon, loss, reconstruction, scalars)


def adversarial_losses(
    nets: Nets,
    images: Tensor,
    recon: Tensor,
    loss: Tensor,
    reconstruction: Tensor,
    scalars: dict[str, float],
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """VQGAN's hinge losses (Esser et al. 2021, eq. 7): the VQ-VAE adds -D(recon), weighted by
    disc_weight x |grad rec| / |grad gan| at the decoder's last layer; D learns
    relu(1 - D(real)) + relu(1 + D(recon)).

    The VQ-VAE's term goes through the unwrapped discriminator: that backward updates only
    the VQ-VAE, and DDP would wait for the discriminator's gradients.
    """
    vqvae = distributed.unwrap(nets["model"])
    generator = -distributed.unwrap(nets["disc"])(recon).mean()
    weight = vqvae.cfg.disc_weight * adaptive_weight(
        reconstruction, generator, vqvae.decoder.net[-1].weight
    )
    real, fake = nets["disc"](torch.cat([images, recon.detach()])).float().chunk(2)
    disc = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    scalars |= {"gan": generator.item(), "gan_weight": weight.item(), "disc": disc.item()}
    return {"model": loss + weight * generator, "disc": disc}, scalars


def adaptive_weight(reconstruction: Tensor, generator: Tensor, last: Tensor) -> Tensor:
    """The ratio of the two losses' gradient norms at `last` (VQGAN's lambda), in [0, 1e4]
    and detached: the adversarial term pulls as hard as the reconstruction, whatever the
    scale of the discriminator's logits."""
    grad_rec = torch.autograd.grad(reconstruction, last, retain_graph=True)[0]
    grad_gan = torch.autograd.grad(generator, last, retain_graph=True)[0]
    return (grad_rec.norm() / (grad_gan.norm() + 1e-4)).clamp(0, 1e4).detach()


def reconstruction_metrics(model: VQVAE, dataset: SliceDataset) -> dict[str, float]:
    """Mean SSIM (data_range 1; the batched torch SSIM, tested equal to scikit-image's),
    PSNR, MSE and codebook usage over a split."""
    images = dataset.images
    recon, codes = reconstruct(model, images)
    used, perplexity = metrics.codebook_usage(codes, model.cfg.codebook_size)
    return {
        "val_ssim": float(metrics.ssim(images, recon).mean()),
        "val_psnr": metrics.finite_mean(metrics.psnr(images, recon)),
        "val_mse": float(metrics.mse(images, recon).mean()),
        "val_codebook_used": used,
        "val_perplexity": perplexity,
    }


def figure_indices(n: int, count: int = FIGURE_SLICES) -> list[int]:
    """Evenly spread, fixed indices so the figure shows the same slices every epoch."""
    return torch.linspace(0, n - 1, min(count, n)).round().long().tolist()


def write_figures(model: VQVAE, val_set: SliceDataset, run_dir: Path) -> None:
    """Loss curves and input | reconstruction | error for fixed validation slices."""
    figures = run_dir / "figures"
    plots.training_curves(
        run_dir / "metrics-vqvae.jsonl",
        figures / "vqvae_curves.png",
        "mse",
        ["val_ssim", "val_perplexity"],
    )
    images = val_set.images[figure_indices(len(val_set))]
    model.eval()
    with torch.no_grad():
        recon, _ = model(images.to(next(model.parameters()).device))
    caption = "validate split"
    plots.reconstruction_figure(images, recon.cpu(), figures / "vqvae_reconstructions.png", caption)


def resolve_data(data: DataConfig) -> DataConfig:
    """Fix the dataset kind and make a path absolute, so later verbs find the same data."""
    kind = detect_kind(data.source) if data.kind == "auto" else data.kind
    source = data.source if kind == "mni152" else str(Path(data.source).expanduser().resolve())
    return DataConfig(source=source, kind=kind, size=data.size, seed=data.seed, strict=data.strict)


def configs(
    data: DataConfig, model_cfg: VQVAEConfig, run_dir: Path, resume: bool
) -> tuple[DataConfig, VQVAEConfig]:
    """The data and model settings to train with: the run's own when resuming."""
    if resume:
        meta = checkpoint.read_meta(run_dir, "vqvae", last=True)
        where = f"{run_dir}/vqvae-last.json"
        data = load_config(DataConfig, meta.get("data"), f"{where} 'data'")
        return data, load_config(VQVAEConfig, meta.get("model"), f"{where} 'model'")
    data = resolve_data(data)
    if data.size != model_cfg.size:
        raise UsageError(f"--size {model_cfg.size} differs from the data size {data.size}")
    return data, model_cfg


def train_vqvae(
    data: DataConfig,
    model_cfg: VQVAEConfig,
    train: TrainConfig,
    run_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
) -> VQVAEResult:
    """Train stage 1 into `run_dir`, holding its lock. A run that already holds a VQ-VAE needs
    `resume` (continue it, with its own configs) or `overwrite` (replace it)."""
    device = distributed.init(resolve_device(train.device))
    data, model_cfg = configs(data, model_cfg, run_dir, resume)  # a bad --data fails first
    with rundir.training(run_dir, "vqvae", resume, overwrite):
        return _train(data, model_cfg, train, run_dir, device, resume)


def _train(
    data: DataConfig,
    model_cfg: VQVAEConfig,
    train: TrainConfig,
    run_dir: Path,
    device: torch.device,
    resume: bool,
) -> VQVAEResult:
    with distributed.main_first():  # rank 0 fills the data cache, the others then read it
        train_set, val_set = load_data(data, "train"), load_data(data, "validate")
    torch.manual_seed(train.seed)  # the initial weights too
    # NHWC weights and inputs: 15-35% faster training on the CPU (bench/RESULTS.md)
    model = VQVAE(model_cfg).to(memory_format=torch.channels_last)
    helpers: dict[str, torch.nn.Module] = {}
    if model_cfg.adversarial:
        disc = PatchDiscriminator(model_cfg.disc_channels, model_cfg.disc_layers)
        helpers["disc"] = disc.to(memory_format=torch.channels_last)
    stage = Stage(
        name="vqvae",
        model=model,
        train_set=train_set,
        step=vqvae_step,
        validate=lambda m: reconstruction_metrics(m, val_set),
        monitor="val_ssim",
        higher_is_better=True,
        meta={"model": to_dict(model_cfg), "data": to_dict(data)},
        after_epoch=lambda m: write_figures(m, val_set, run_dir),
        helpers=helpers,
        optimizer={"disc": DISC_OPTIMIZER},
    )
    start = time.perf_counter()
    result = fit(stage, train, run_dir, device, resume)
    best = checkpoint.read_meta(run_dir, "vqvae")["metrics"]
    return VQVAEResult(
        checkpoint=result.checkpoint,
        val_ssim=best["val_ssim"],
        val_psnr=best["val_psnr"],
        codebook_used=best["val_codebook_used"],
        perplexity=best["val_perplexity"],
        steps=result.step,
        seconds=time.perf_counter() - start,
    )
