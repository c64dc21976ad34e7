"""Tiny settings and stand-ins that several test modules share, each defined once by name.

CLI argument lists are named for what they give, and combined by name, never sliced:
    [*VQVAE_32, *CPU]   a 32 px VQ-VAE with 16 codes of 8 dimensions, on the CPU
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import torch

from vqgen.config import DataConfig, PriorConfig, TrainConfig, VQLossConfig, VQVAEConfig, to_dict
from vqgen.data import SliceDataset
from vqgen.losses import VQLoss
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import VQVAE
from vqgen.train import Stage
from vqgen.train_vqvae import reconstruction_metrics

# -- CLI arguments -------------------------------------------------------------------------------

CPU = ["--device", "cpu"]
SIZE_32 = ["--size", "32"]
NARROW = ["--hidden", "16"]  # channels of the VQ-VAE's trunk
SMALL_CODEBOOK = ["--codebook-size", "16", "--code-dim", "8"]
VQVAE_32 = [*SIZE_32, *NARROW, *SMALL_CODEBOOK]  # 32 px, 16 codes of 8 dimensions
VQVAE_32_DEFAULT_CODEBOOK = [*SIZE_32, *NARROW]  # 32 px, the default codebook
# two levels: a 4x4 top grid over a 16x16 bottom grid
TWO_LEVELS = [*VQVAE_32, "--downsample", "2", "--levels", "2", "--top-downsample", "4"]
PRIOR_2X8 = ["--layers", "2", "--channels", "8"]
PRIOR_3X16 = ["--layers", "3", "--channels", "16"]

# -- a tiny prior --------------------------------------------------------------------------------

K, G = 8, 6  # its codebook size and grid side


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_prior(condition: str = "none", **kw) -> GatedPixelCNN:
    """A 3-layer, 16-channel prior over 6x6 grids of 8 codes, in float64 and eval mode (exact
    comparisons), undilated unless `kw` says otherwise; the same weights on every call."""
    torch.manual_seed(0)
    cfg = dict(
        codebook_size=K,
        grid=G,
        channels=16,
        layers=3,
        condition=condition,
        num_labels=3,
        dilation=1,
    )
    return GatedPixelCNN(PriorConfig(**{**cfg, **kw})).double().eval()


# -- in-process training -------------------------------------------------------------------------

CPU_DEVICE = torch.device("cpu")
TINY_VQVAE = VQVAEConfig(
    size=16, hidden=16, res_blocks=1, downsample=4, codebook_size=8, code_dim=4
)
vqvae_step = VQLoss(VQLossConfig(l1_weight=0.0)).step  # MSE and the quantizer's loss only


def blobs(n: int, size: int = 16, seed: int = 0) -> SliceDataset:
    """Smooth bright blobs on black: a stand-in for brain slices."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.rand(n, 2, generator=g) * size * 0.5 + size * 0.25
    radius = torch.rand(n, generator=g) * size * 0.2 + size * 0.15
    dist = ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2).sqrt()
    images = (1 - dist / radius[:, None, None]).clamp(0, 1)
    pixels = (images * 255).round().to(torch.uint8)[:, None]
    return SliceDataset(
        pixels=pixels,
        subjects=[f"s{i}" for i in range(n)],
        labels=torch.full((n,), -1),
        positions=torch.full((n,), float("nan")),
        paths=[f"blob{i}" for i in range(n)],
    )


def make_stage(run: Path, train_set: SliceDataset, val_set: SliceDataset, step=vqvae_step) -> Stage:
    torch.manual_seed(0)
    return Stage(
        name="vqvae",
        model=VQVAE(TINY_VQVAE),
        train_set=train_set,
        step=step,
        validate=lambda m: reconstruction_metrics(m, val_set),
        monitor="val_ssim",
        higher_is_better=True,
        meta={"model": to_dict(TINY_VQVAE), "data": to_dict(DataConfig())},
    )


def train_cfg(**overrides) -> TrainConfig:
    return TrainConfig(
        **{
            "epochs": 3,
            "batch_size": 4,
            "lr": 3e-3,
            "warmup_steps": 2,
            "device": "cpu",
            "log_every": 1,
            **overrides,
        }
    )


def interrupt_at(step_to_stop: int, signum: int = signal.SIGINT, loss=vqvae_step):
    """The training step `loss` that sends this process `signum` (Ctrl-C by default) at a
    given call."""
    calls = {"n": 0}

    def step(model, batch, step_index):
        calls["n"] += 1
        if calls["n"] == step_to_stop:
            os.kill(os.getpid(), signum)
        return loss(model, batch, step_index)

    return step


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder`: relative path -> SHA-256, to prove that nothing changed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
