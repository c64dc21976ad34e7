"""What the verbs share once models exist: the device, images <-> code grids (the one path for
reconstructions), code grids of a split, the prior's NLL, and output folders.

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
from PIL import Image
from rich.console import Console
from torch import Tensor, nn
from torch.utils.data import Dataset

from vqgen import conditioning, distributed, fileio, metrics
from vqgen.data import SliceDataset
from vqgen.device import autocast
from vqgen.errors import CheckpointError, UsageError
from vqgen.models import code_nll, level_logits
from vqgen.models.vqvae import VQVAE
from vqgen.rundir import RunDir

LN2 = math.log(2)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)
BATCH = 64  # images or code grids per forward pass when scoring a whole split


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
def encode(vqvae: VQVAE, images: Tensor) -> list[Tensor]:
    """(N,1,S,S) images -> each level's (N,h,w) int16 code grids, coarse first, on the CPU.

    The encoder runs under bf16 autocast where the device computes bf16 natively, as the
    VQ-VAE trained there (the nearest-code search stays float32): 1.3-2.7x as fast on such a CPU,
    a few codes in a hundred flip between near-equal neighbours, and the reconstructions'
    SSIM stays the same (docs/decisions.md, vqvae-bf16-inference)."""
    vqvae.eval()
    device = next(vqvae.parameters()).device
    with autocast(device):
        batches = [
            vqvae.codes(images[i : i + BATCH].to(device)) for i in range(0, len(images), BATCH)
        ]
    return [torch.cat(level).cpu().to(torch.int16) for level in zip(*batches, strict=True)]


@torch.no_grad()
def decode(vqvae: VQVAE, codes: list[Tensor]) -> Tensor:
    """Each level's (N,h,w) code grids, coarse first -> (N,1,S,S) images in [0,1], on the CPU;
    the decoder under bf16 autocast where the device computes bf16 natively (`encode`)."""
    vqvae.eval()
    device = next(vqvae.parameters()).device
    with autocast(device):
        return torch.cat(
            [
                vqvae.decode_codes([c[i : i + BATCH].long().to(device) for c in codes])
                .float()
                .clamp(0, 1)
                .cpu()
                for i in range(0, len(codes[0]), BATCH)
            ]
        )


def reconstruct(vqvae: VQVAE, images: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Reconstructions in [0,1] and each level's code grids of (N,1,S,S) images, on the CPU:
    `decode(encode(images))`."""
    codes = [c.long() for c in encode(vqvae, images)]
    return decode(vqvae, codes), codes


@dataclass
class CodeSet(Dataset):
    """Code grids of one split, every level, with what conditioning needs."""

    levels: list[Tensor]  # each level's (N, h, w) int16 grids, coarse first
    labels: Tensor  # (N,) long, -1 where unknown
    positions: Tensor  # (N,) float32, NaN where unknown
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[list[Tensor], Tensor, Tensor]:
        return [c[i].long() for c in self.levels], self.labels[i], self.positions[i]

    def to(self, device: torch.device) -> CodeSet:
        """The grids on `device`, still as int16."""
        levels = [c.to(device) for c in self.levels]
        return CodeSet(levels, self.labels.to(device), self.positions.to(device), self.label_names)

    def batch(self, index: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """The grids at `index` (a tensor on their device) as long, with their labels and
        positions: what `__getitem__` gives, stacked."""
        return [c[index].long() for c in self.levels], self.labels[index], self.positions[index]


def level_keys(levels: int) -> list[str]:
    """The tensor names of each level's grids in a codes file, coarse first."""
    return ["codes_top", "codes"][-levels:]


def read_codes(path: Path, vqvae: VQVAE, vqvae_hash: str) -> tuple[dict[str, Tensor], dict] | None:
    """The tensors and metadata of a code file in run/codes, if the VQ-VAE whose SHA-256 is
    `vqvae_hash` made it and it holds what that VQ-VAE makes; None if it is missing or another
    VQ-VAE's, and, with a warning, if it is damaged (it is only a cache: it is made again)."""
    if not path.is_file():
        return None
    try:
        meta = fileio.load_tensor_meta(path)
        if meta.get("vqvae_sha256") != vqvae_hash:
            return None
        tensors = fileio.load_tensors(path)
        damage = codes_damage(tensors, meta, vqvae)
    except CheckpointError as err:
        damage = str(err)
    if damage:
        warnings.warn(f"{path} is damaged ({damage}); encoding its slices again", stacklevel=3)
        return None
    return tensors, meta


def codes_damage(tensors: dict[str, Tensor], meta: dict, vqvae: VQVAE) -> str | None:
    """What is wrong with a code file's tensors for `vqvae`, or None."""
    cfg, n = vqvae.cfg, None
    for key, grid in zip(level_keys(cfg.levels), cfg.grids, strict=True):
        codes = tensors.get(key)
        if codes is None or codes.dim() != 3 or codes.shape[1:] != (grid, grid):
            return f"'{key}' is not a stack of {grid}x{grid} grids"
        if codes.is_floating_point() or (
            len(codes) and not 0 <= codes.min() <= codes.max() < cfg.codebook_size
        ):
            return f"'{key}' holds codes outside [0, {cfg.codebook_size})"
        n = len(codes) if n is None else n
        if len(codes) != n:
            return "its levels hold different numbers of grids"
    if any(len(tensors.get(k, ())) != n for k in ("labels", "positions")):
        return "its labels or positions do not match its grids"
    if not isinstance(meta.get("label_names", []), list):
        return "'label_names' is not a list"
    return None


def split_codes(
    run: RunDir, split: str, vqvae: VQVAE, vqvae_hash: str, load: Callable[[], SliceDataset]
) -> CodeSet:
    """The split's code grids: from run/codes when made by this VQ-VAE (its SHA-256 is
    `vqvae_hash`), else encoded now from the slices `load()` gives and saved there."""
    path = run.codes(split)
    keys = level_keys(vqvae.cfg.levels)
    cached = read_codes(path, vqvae, vqvae_hash)
    if cached is not None:
        t, meta = cached
        levels = [t[k] for k in keys]
        return CodeSet(levels, t["labels"], t["positions"], tuple(meta["label_names"]))
    dataset = load()
    start = time.perf_counter()
    note(f"encoding the {split} split ({len(dataset)} slices) to code grids")
    codes = CodeSet(
        encode(vqvae, dataset.images), dataset.labels, dataset.positions, tuple(dataset.label_names)
    )
    note(f"encoded the {split} split in {time.perf_counter() - start:.1f} s")
    tensors = dict(zip(keys, codes.levels, strict=True))
    tensors |= {"labels": codes.labels, "positions": codes.positions}
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
def nll_bits(prior: nn.Module, codes: CodeSet, bf16: bool | None = None) -> list[float]:
    """Each level's mean negative log-likelihood in bits per code over a whole split, coarse
    first. The prior runs under bf16 autocast where the device computes bf16 natively (or as
    `bf16` says): 2-3x faster on such a CPU, 0.0002 bits from float32 (docs/decisions.md,
    nll-bf16); the cross-entropy itself is summed in float32."""
    prior.eval()
    device = next(prior.parameters()).device
    totals = [0.0] * len(codes.levels)
    for i in range(0, len(codes), BATCH):
        grids = [c[i : i + BATCH].long().to(device) for c in codes.levels]
        cond = conditioning.from_batch(
            prior.cfg.condition,
            codes.labels[i : i + BATCH].to(device),
            codes.positions[i : i + BATCH].to(device),
        )
        with autocast(device, bf16):
            logits_of_levels = level_logits(prior, grids, cond)
        for level, (logits, grid) in enumerate(zip(logits_of_levels, grids, strict=True)):
            totals[level] += code_nll(logits, grid, reduction="sum").item()
    return [total / c.numel() / LN2 for total, c in zip(totals, codes.levels, strict=True)]


def mean_bits(level_bits: list[float], codes: CodeSet) -> float:
    """Bits per code over all levels: each level's weighted by its number of codes."""
    sizes = [c[0].numel() for c in codes.levels]
    return sum(b * s for b, s in zip(level_bits, sizes, strict=True)) / sum(sizes)


def baselines_bits(codes: CodeSet, codebook_size: int) -> dict[str, float]:
    """What a uniform prior and the split's own code histogram (per level) pay per code: a
    prior that learned nothing scores near these."""
    unigram = [metrics.entropy_bits(c.long(), codebook_size) for c in codes.levels]
    return {"uniform": metrics.uniform_bits(codebook_size), "unigram": mean_bits(unigram, codes)}
