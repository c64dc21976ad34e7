"""The `sample` verb: draw code grids from the prior, decode them, write PNG slices.

result = generate(Path("run"), n=16, temperature=1.0, seed=0)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vqgen import checkpoint, plots
from vqgen.errors import UsageError
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import VQVAE
from vqgen.sampling import sample_codes
from vqgen.train import resolve_device


@dataclass
class SampleResult:
    images: Tensor  # (n,1,S,S) in [0,1], on the CPU
    codes: Tensor  # (n,h,w)
    paths: list[Path]
    grid: Path
    seconds: float


def build_condition(
    prior: GatedPixelCNN, label_names: list[str], n: int, label: str | None, slice_pos: float | None
) -> Tensor | None:
    """The condition tensor for `n` samples, refusing options the prior was not trained with."""
    condition = prior.cfg.condition
    if label is not None and condition != "label":
        raise UsageError(f"--label {label}: this prior was trained with --condition {condition}")
    if slice_pos is not None and condition != "slice":
        raise UsageError(
            f"--slice {slice_pos}: this prior was trained with --condition {condition}"
        )
    if condition == "label":
        if label is None:
            # no label asked for: alternate through the classes
            return torch.arange(n) % len(label_names)
        if label not in label_names:
            raise UsageError(
                f"--label {label} is unknown; this prior knows {', '.join(label_names)}"
            )
        return torch.full((n,), label_names.index(label), dtype=torch.long)
    if condition == "slice":
        if slice_pos is None:
            return torch.linspace(0.1, 0.9, n)  # spread across the brain
        if not 0.0 <= slice_pos <= 1.0:
            raise UsageError(f"--slice must lie in [0, 1], got {slice_pos}")
        return torch.full((n,), float(slice_pos))
    return None


@torch.no_grad()
def draw(
    vqvae: VQVAE,
    prior: GatedPixelCNN,
    n: int,
    cond: Tensor | None,
    temperature: float,
    seed: int,
    device: torch.device,
    top_k: int | None = None,
) -> tuple[Tensor, Tensor]:
    """`n` decoded samples in [0,1] (on the CPU) and their code grids, seeded."""
    generator = torch.Generator(device=device).manual_seed(seed)
    codes = sample_codes(
        prior,
        n,
        cond=None if cond is None else cond.to(device),
        temperature=temperature,
        top_k=top_k,
        generator=generator,
        device=device,
    )
    images = vqvae.decode_codes(codes).float().clamp(0, 1).cpu()
    return images, codes.cpu()


def write_png(image: Tensor, path: Path) -> None:
    """One (1,H,W) image in [0,1] as an 8-bit grey PNG, written atomically."""
    pixels = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    checkpoint.atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def make_output_dir(folder: Path, option: str) -> None:
    """Create an output folder, or say in one line naming `option` why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission, a read-only disk
        raise UsageError(
            f"{option} {folder}: cannot create this folder ({err.strerror or err})"
        ) from None


def generate(
    run_dir: Path,
    n: int = 16,
    temperature: float = 1.0,
    label: str | None = None,
    slice_pos: float | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    device: str = "auto",
    top_k: int | None = None,
) -> SampleResult:
    """Sample `n` new slices from a trained run; PNGs go to `out_dir` (default run/samples)."""
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UsageError(
            f"--temperature must be 0 (most likely codes) or a finite number above, "
            f"got {temperature}"
        )
    checkpoint.check_run_dir(run_dir)
    dev = resolve_device(device)
    vqvae, _ = checkpoint.load_vqvae(run_dir, dev)
    prior, prior_meta = checkpoint.load_prior(run_dir, dev, vqvae_cfg=vqvae.cfg)
    cond = build_condition(prior, prior_meta.get("label_names", []), n, label, slice_pos)
    out_dir = out_dir or run_dir / "samples"
    make_output_dir(out_dir, "--out")  # before sampling, which may take minutes
    start = time.perf_counter()
    images, codes = draw(vqvae, prior, n, cond, temperature, seed, dev, top_k)
    seconds = time.perf_counter() - start
    paths = [out_dir / f"sample_{i:04d}.png" for i in range(n)]
    for image, path in zip(images, paths, strict=True):
        write_png(image, path)
    grid = plots.save_grid(images, out_dir / "grid.png", nrow=min(8, n))
    return SampleResult(images, codes, paths, grid, seconds)
