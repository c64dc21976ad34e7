"""The report: how well a run reconstructs, how it uses its codebook, how good its prior and
samples are. Everything is computed on one split (test by default), over the whole split.

    report = evaluate(Path("run"), split="test", n_samples=64)

Writes run/report.json, run/report.md and figures under run/figures/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from rich.table import Table
from torch import Tensor

from vqgen import checkpoint, metrics, plots, rundir
from vqgen.config import DataConfig, SampleConfig, load_config
from vqgen.data import SPLITS, SliceDataset, load_data
from vqgen.errors import UsageError
from vqgen.inference import (
    CodeSet,
    build_condition,
    draw,
    make_output_dir,
    nll_bits,
    reconstruct,
    resolve_device,
    split_codes,
)
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import VQVAE

MEMORISED_SSIM = 0.95  # a sample this close to a training slice counts as memorised
FIGURE_SAMPLES = 8


def summary(values: np.ndarray) -> dict[str, float]:
    """Mean, std, min, 5th percentile and fraction >= 0.6 of per-image scores."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "min": float(np.min(values)),
        "p5": float(np.percentile(values, 5)),
        "frac_ge_0.6": float(np.mean(values >= 0.6)),
    }


def reconstruction_report(
    vqvae: VQVAE, images: Tensor, figures: Path, split: str
) -> tuple[dict, Tensor]:
    """Per-image SSIM (scikit-image), brain SSIM, PSNR, MSE, codebook usage; best/median/worst."""
    recon, codes = reconstruct(vqvae, images)
    ssim = metrics.ssim_reference(images, recon)
    brain = metrics.masked_ssim(images, recon, metrics.foreground_mask(images))
    used, perplexity = metrics.codebook_usage(codes, vqvae.cfg.codebook_size)
    order = np.argsort(ssim)
    picks = [int(order[-1]), int(order[len(order) // 2]), int(order[0])]
    caption = f"{split} split: best, median, worst SSIM " + ", ".join(
        f"{ssim[i]:.3f}" for i in picks
    )
    plots.reconstruction_figure(
        images[picks], recon[picks], figures / "eval_reconstructions.png", caption
    )
    plots.histogram(ssim, figures / "eval_ssim_hist.png", "SSIM per slice", f"{split} split")
    counts = torch.bincount(codes.flatten(), minlength=vqvae.cfg.codebook_size)
    plots.histogram(
        counts.float(), figures / "eval_code_usage.png", "uses per code", f"{split} split"
    )
    report = {
        "ssim": summary(ssim),
        "brain_ssim_mean": float(torch.nanmean(brain)),
        "psnr_mean": metrics.finite_mean(metrics.psnr(images, recon)),
        "mse_mean": float(metrics.mse(images, recon).mean()),
        "codebook": {"fraction_used": used, "perplexity": perplexity},
    }
    return report, codes


def sample_report(
    samples: Tensor, split_images: Tensor, train_images: Tensor, seed: int
) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Realism, memorisation and diversity of generated slices, measured with SSIM."""
    real_ssim, real_idx = metrics.nearest_ssim(samples, split_images)
    train_ssim, _ = metrics.nearest_ssim(samples, train_images)
    generator = torch.Generator().manual_seed(seed)
    reference = split_images[torch.randperm(len(split_images), generator=generator)[: len(samples)]]
    report = {
        "n": len(samples),
        "nearest_real_ssim": {"mean": float(real_ssim.mean()), "std": float(real_ssim.std())},
        "nearest_train_ssim_max": float(train_ssim.max()),
        "memorised": int((train_ssim > MEMORISED_SSIM).sum()),
        "diversity_pairwise_ssim": metrics.mean_pairwise_ssim(samples),
        "real_pairwise_ssim": metrics.mean_pairwise_ssim(reference),
    }
    return report, real_ssim, real_idx


def evaluate(
    run_dir: Path,
    split: str = "test",
    n_samples: int = 64,
    out: Path | None = None,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Score a run on `split`; returns the report that is also written as JSON and Markdown."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got '{split}'")
    if n_samples < 2:
        raise UsageError(f"--n-samples must be at least 2 (diversity needs pairs), got {n_samples}")
    if out is not None and out.suffix != ".json":
        raise UsageError(
            f"--out {out}: the report is JSON, name it *.json (the .md goes beside it)"
        )
    checkpoint.check_run_dir(run_dir)
    out = out or run_dir / "report.json"
    make_output_dir(out.parent, "--out")  # before the slow part
    with rundir.lock(run_dir, "evaluate"):
        return _evaluate(run_dir, split, n_samples, out, resolve_device(device), seed)


def _evaluate(
    run_dir: Path, split: str, n_samples: int, out: Path, dev: torch.device, seed: int
) -> dict[str, Any]:
    vqvae, vqvae_meta = checkpoint.load_vqvae(run_dir, dev)
    data = load_config(DataConfig, vqvae_meta.get("data"), f"{run_dir}/vqvae.json 'data'")
    prior = None  # a run without a prior is scored on reconstruction only
    if (run_dir / "prior.json").is_file():  # loaded first: a bad prior fails before any output
        prior, prior_meta = checkpoint.load_prior(run_dir, dev, vqvae_cfg=vqvae.cfg)
    dataset = load_data(data, split)
    figures = run_dir / "figures"
    report: dict[str, Any] = {
        "run": str(run_dir),
        "split": split,
        "data": data.source,
        "kind": data.kind,
        "images": len(dataset),
    }
    report["reconstruction"], codes = reconstruction_report(vqvae, dataset.images, figures, split)
    if prior is not None:
        label_names = prior_meta.get("label_names", [])
        split_set = CodeSet(
            codes.to(torch.int16), dataset.labels, dataset.positions, tuple(label_names)
        )
        train_codes = split_codes(
            run_dir, "train", vqvae, data, checkpoint.sha256(run_dir / "vqvae.safetensors")
        )
        report["prior"] = {
            "nll_bits": nll_bits(prior, split_set),
            "uniform_bits": metrics.uniform_bits(prior.cfg.codebook_size),
            "unigram_bits": metrics.entropy_bits(train_codes.codes.long(), prior.cfg.codebook_size),
            "condition": prior.cfg.condition,
        }
        cfg = SampleConfig(n=n_samples, seed=seed)
        report["samples"] = samples_section(
            vqvae, prior, label_names, cfg, dataset, load_data(data, "train"), figures, dev
        )
    checkpoint.write_json(out, report)
    markdown = render_markdown(report)
    checkpoint.atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown))
    return report


def samples_section(
    vqvae: VQVAE,
    prior: GatedPixelCNN,
    label_names: list[str],
    cfg: SampleConfig,
    dataset: SliceDataset,
    train_set: SliceDataset,
    figures: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Draw `cfg.n` samples (through the classes or across the brain), score them against the
    split and the train split (memorisation), per label too, and draw the figure."""
    cond = build_condition(prior, label_names, cfg)
    samples, _ = draw(vqvae, prior, cond, cfg, device)
    images, train_images = dataset.images, train_set.images
    section, real_ssim, real_idx = sample_report(samples, images, train_images, cfg.seed)
    if prior.cfg.condition == "label":
        section["per_label"] = {
            name: sample_report(
                samples[cond == i], images[dataset.labels == i], train_images, cfg.seed
            )[0]
            for i, name in enumerate(label_names)
            if (cond == i).sum() >= 2 and (dataset.labels == i).sum() >= 2
        }
    # evenly spread, so that a slice-conditioned prior shows levels from bottom to top
    shown = np.linspace(0, cfg.n - 1, min(FIGURE_SAMPLES, cfg.n)).round().astype(int).tolist()
    plots.rows_figure(
        [("sample", samples[shown]), (f"nearest {dataset.split}", images[real_idx[shown]])],
        figures / "eval_samples_nearest.png",
        "SSIM to nearest real: " + "  ".join(f"{real_ssim[i]:.2f}" for i in shown),
    )
    return section


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown document."""
    rec = report["reconstruction"]
    lines = [
        f"# vqgen report: {report['run']}",
        "",
        f"Data: `{report['data']}` ({report['kind']}), **{report['split']}** split, "
        f"{report['images']} slices.",
        "",
        "## Reconstruction",
        "",
        "| SSIM mean | std | min | 5th pct | >= 0.6 | brain SSIM | PSNR dB | MSE |",
        "|---|---|---|---|---|---|---|---|",
        f"| {rec['ssim']['mean']:.3f} | {rec['ssim']['std']:.3f} | {rec['ssim']['min']:.3f} | "
        f"{rec['ssim']['p5']:.3f} | {rec['ssim']['frac_ge_0.6']:.0%} | "
        f"{rec['brain_ssim_mean']:.3f} | {rec['psnr_mean']:.2f} | {rec['mse_mean']:.5f} |",
        "",
        f"Codebook: {rec['codebook']['fraction_used']:.0%} of codes used, "
        f"perplexity {rec['codebook']['perplexity']:.1f}.",
    ]
    if "prior" in report:
        p = report["prior"]
        lines += [
            "",
            "## Prior",
            "",
            f"NLL {p['nll_bits']:.3f} bits/code (uniform {p['uniform_bits']:.2f}, "
            f"unigram {p['unigram_bits']:.2f}); condition: {p['condition']}.",
        ]
    if "samples" in report:
        s = report["samples"]
        lines += [
            "",
            "## Samples",
            "",
            "| n | nearest-real SSIM | max SSIM to train | memorised (> 0.95) | "
            "pairwise SSIM (samples) | pairwise SSIM (real) |",
            "|---|---|---|---|---|---|",
            f"| {s['n']} | {s['nearest_real_ssim']['mean']:.3f} ± "
            f"{s['nearest_real_ssim']['std']:.3f} | {s['nearest_train_ssim_max']:.3f} | "
            f"{s['memorised']} | {s['diversity_pairwise_ssim']:.3f} | "
            f"{s['real_pairwise_ssim']:.3f} |",
        ]
    return "\n".join(lines) + "\n"


def report_table(report: dict[str, Any]) -> Table:
    """The headline figures of a report, as the CLI prints them."""
    table = Table(
        title=f"{escape(report['run'])} on the {report['split']} split ({report['images']} slices)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rec = report["reconstruction"]
    table.add_row(
        "reconstruction SSIM (mean ± std)", f"{rec['ssim']['mean']:.3f} ± {rec['ssim']['std']:.3f}"
    )
    table.add_row("brain-region SSIM", f"{rec['brain_ssim_mean']:.3f}")
    table.add_row("PSNR (dB)", f"{rec['psnr_mean']:.2f}")
    table.add_row(
        "codes used / perplexity",
        f"{rec['codebook']['fraction_used']:.0%} / {rec['codebook']['perplexity']:.1f}",
    )
    if "prior" in report:
        p = report["prior"]
        table.add_row(
            "prior NLL (bits/code)",
            f"{p['nll_bits']:.3f}  (uniform {p['uniform_bits']:.2f}, "
            f"unigram {p['unigram_bits']:.2f})",
        )
    if "samples" in report:
        s = report["samples"]
        table.add_row("samples: nearest-real SSIM", f"{s['nearest_real_ssim']['mean']:.3f}")
        table.add_row("samples: memorised (> 0.95 to train)", str(s["memorised"]))
        table.add_row(
            "pairwise SSIM: samples / real",
            f"{s['diversity_pairwise_ssim']:.3f} / {s['real_pairwise_ssim']:.3f}",
        )
    return table
