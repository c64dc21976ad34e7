"""Figures. Each function reads files or tensors and writes one PNG; none of them trains.

Grids of slices are laid out by torchvision's `make_grid`; matplotlib adds axes and labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt
import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from vqgen.fileio import atomic_write


def _save(fig: plt.Figure, out: Path) -> Path:
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return out


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file, in order."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_grid(images: Tensor, out: Path, nrow: int = 8) -> Path:
    """A PNG grid of (N,1,H,W) images in [0,1]."""
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2)
    atomic_write(out, lambda tmp: save_image(grid, tmp, format="png"))
    return out


def training_curves(
    metrics_path: Path,
    out: Path,
    train_key: str,
    val_keys: list[str],
    baselines: dict[str, float] | None = None,
) -> Path:
    """Training loss per logged step beside validation metrics per epoch (and baselines)."""
    records = read_metrics(metrics_path)
    steps = [r for r in records if train_key in r]
    epochs = [r for r in records if any(k in r for k in val_keys)]
    fig, axes = plt.subplots(1, 1 + len(val_keys), figsize=(4.2 * (1 + len(val_keys)), 3.2))
    marker = "o" if len(steps) < 20 else None  # a short run still shows its points
    axes[0].plot([r["step"] for r in steps], [r[train_key] for r in steps], lw=1, marker=marker)
    axes[0].set(xlabel="step", ylabel=f"train {train_key}", yscale="log")
    for ax, key in zip(axes[1:], val_keys, strict=True):
        ax.plot([r["step"] for r in epochs], [r.get(key) for r in epochs], marker="o")
        ax.set(xlabel="step", ylabel=key)
        for (name, value), color in zip(
            (baselines or {}).items(), ("tab:red", "tab:gray"), strict=False
        ):
            ax.axhline(value, ls="--", color=color, label=name)
        if baselines:
            ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def rows_figure(rows: list[tuple[str, Tensor]], out: Path, caption: str = "") -> Path:
    """One labelled row of slices per (name, (N,1,H,W) images) pair, e.g. one row per split;
    (N,3,H,W) images are shown in colour."""
    n = max(row.shape[0] for _, row in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.6 * n, 1.8 * len(rows) + 0.4), squeeze=False)
    for ax, (name, row) in zip(axes[:, 0], rows, strict=True):
        grid = make_grid(row.detach().float().clamp(0, 1).cpu(), nrow=n, padding=2, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy())  # make_grid gives grey slices 3 channels
        ax.set_ylabel(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if caption:
        axes[-1, 0].set_xlabel(caption, fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def reconstruction_figure(images: Tensor, recon: Tensor, out: Path, caption: str = "") -> Path:
    """Rows: input, reconstruction, absolute error (doubled for visibility); a column per slice."""
    images, recon = images.detach().float().cpu(), recon.detach().float().clamp(0, 1).cpu()
    error = (2 * (images - recon).abs()).clamp(0, 1)
    rows = [("input", images), ("reconstruction", recon), ("|error| x2", error)]
    return rows_figure(rows, out, caption)


def histogram(values: Tensor | list[float], out: Path, xlabel: str, title: str = "") -> Path:
    """A histogram of per-item values, e.g. per-slice SSIM."""
    values = torch.as_tensor(values).float().flatten().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.hist(values, bins=30, color="tab:blue", alpha=0.8)
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def spectrum_figure(spectra: dict, out: Path, caption: str = "") -> Path:
    """Radially averaged power spectra, name -> (freqs, power), on a log scale: blur shows as
    a curve that falls below real's at high frequencies."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, (freqs, power) in spectra.items():
        ax.semilogy(freqs[1:], power[1:], label=name, lw=2 if name == "real" else 1.2)
    ax.axvline(0.25, color="grey", ls=":", lw=1)  # half Nyquist: the sharpness ratio's cut
    ax.set_xlabel("spatial frequency (cycles per pixel)")
    ax.set_ylabel("power")
    ax.set_title(caption or "power spectrum")
    ax.legend()
    return _save(fig, out)
