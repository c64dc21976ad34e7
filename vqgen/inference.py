"""What the verbs share once models exist: the device, code grids of a split, reconstructions,
the prior's NLL, drawing decoded samples, and output folders.

Nothing here imports training code, so `vqgen sample` and `vqgen evaluate` load neither DDP
nor the training loop.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import Dataset

from vqgen import conditioning, distributed, fileio
from vqgen.config import DataConfig, SampleConfig
from vqgen.data import load_data
from vqgen.errors import UsageError
from vqgen.models.vqvae import VQVAE
from vqgen.rundir import RunDir
from vqgen.sampling import sample_codes

LN2 = math.log(2)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)
BATCH = 64  # images or code grids per forward pass when scoring a whole split


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when there is one; asking for CUDA without one is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def note(text: str) -> None:
    """One line on stderr where a verb would otherwise be silent for long (rank 0 only)."""
    if distributed.is_main():
        stderr.print(text, markup=False)


def make_output_dir(folder: Path, option: str) -> None:
    """Create an output folder, or say in one line naming `option` why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission, a read-only disk
        raise UsageError(
            f"{option} {folder}: cannot create this folder ({err.strerror or err})"
        ) from None


def write_png(image: Tensor, path: Path) -> None:
    """One (1,H,W) image in [0,1] as an 8-bit grey PNG, written atomically."""
    pixels = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    fileio.atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


# -- stage 1: images <-> codes ----------------------------------------------------------------


@torch.no_grad()
def in_batches(fn: Callable[[Tensor], Tensor], x: Tensor, device: torch.device) -> Tensor:
    """`fn` over x in batches on `device`; the results concatenated on the CPU."""
    return torch.cat([fn(x[i : i + BATCH].to(device)).cpu() for i in range(0, len(x), BATCH)])


def encode(vqvae: VQVAE, images: Tensor) -> Tensor:
    """(N,1,S,S) images -> (N,h,w) int16 code grids, on the CPU."""
    vqvae.eval()
    device = next(vqvae.parameters()).device
    return in_batches(vqvae.codes, images, device).to(torch.int16)


def reconstruct(vqvae: VQVAE, images: Tensor) -> tuple[Tensor, Tensor]:
    """Reconstructions in [0,1] and code grids of (N,1,S,S) images, on the CPU."""
    codes = encode(vqvae, images).long()
    device = next(vqvae.parameters()).device
    recon = in_batches(lambda c: vqvae.decode_codes(c).float().clamp(0, 1), codes, device)
    return recon, codes


@dataclass
class CodeSet(Dataset):
    """Code grids of one split with what conditioning needs."""

    codes: Tensor  # (N, h, w) int16
    labels: Tensor  # (N,) long, -1 where unknown
    positions: Tensor  # (N,) float32, NaN where unknown
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.codes[i].long(), self.labels[i], self.positions[i]


def read_codes(path: Path, vqvae_hash: str) -> tuple[dict[str, Tensor], dict] | None:
    """The tensors and metadata of a code file in run/codes, if the VQ-VAE whose SHA-256 is
    `vqvae_hash` made it; None if it is missing or another VQ-VAE's."""
    if not path.is_file():
        return None
    meta = fileio.load_tensor_meta(path)
    if meta.get("vqvae_sha256") != vqvae_hash:
        return None
    return fileio.load_tensors(path), meta


def split_codes(
    run: RunDir, split: str, vqvae: VQVAE, data: DataConfig, vqvae_hash: str
) -> CodeSet:
    """The split's code grids: from run/codes when made by this VQ-VAE (its SHA-256 is
    `vqvae_hash`), else encoded now and saved there."""
    path = run.codes(split)
    cached = read_codes(path, vqvae_hash)
    if cached is not None:
        t, meta = cached
        return CodeSet(t["codes"], t["labels"], t["positions"], tuple(meta["label_names"]))
    dataset = load_data(data, split)
    start = time.perf_counter()
    note(f"encoding the {split} split ({len(dataset)} slices) to code grids")
    codes = CodeSet(
        encode(vqvae, dataset.images), dataset.labels, dataset.positions, tuple(dataset.label_names)
    )
    note(f"encoded the {split} split in {time.perf_counter() - start:.1f} s")
    tensors = {"codes": codes.codes, "labels": codes.labels, "positions": codes.positions}
    meta = {
        "vqvae_sha256": vqvae_hash,
        "split": split,
        "label_names": list(codes.label_names),
        "subjects": list(dataset.subjects),
    }
    fileio.save_tensors(path, tensors, meta)
    return codes


# -- stage 2: the prior -----------------------------------------------------------------------


@torch.no_grad()
def nll_bits(prior: nn.Module, codes: CodeSet) -> float:
    """Mean negative log-likelihood in bits per code over a whole split."""
    prior.eval()
    device = next(prior.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(codes), BATCH):
        grids = codes.codes[i : i + BATCH].long().to(device)
        cond = conditioning.from_batch(
            prior.cfg.condition,
            codes.labels[i : i + BATCH].to(device),
            codes.positions[i : i + BATCH].to(device),
        )
        logits = prior(grids, cond).float()
        total += F.cross_entropy(logits, grids, reduction="sum").item()
        count += grids.numel()
    return total / count / LN2


@torch.no_grad()
def draw(
    vqvae: VQVAE, prior: nn.Module, cond: Tensor | None, cfg: SampleConfig, device
) -> tuple[Tensor, Tensor]:
    """`cfg.n` decoded samples in [0,1] (on the CPU) and their code grids, seeded."""
    if cfg.top_k is not None and cfg.top_k >= prior.cfg.codebook_size:
        warnings.warn(
            f"--top-k {cfg.top_k} keeps all {prior.cfg.codebook_size} codes of this prior: "
            "it changes nothing",
            stacklevel=3,
        )
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    codes = sample_codes(
        prior,
        cfg.n,
        cond=None if cond is None else cond.to(device),
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        generator=generator,
        device=device,
    )
    images = vqvae.decode_codes(codes).float().clamp(0, 1).cpu()
    return images, codes.cpu()
