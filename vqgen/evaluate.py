"""The report: how well a run reconstructs, how it uses its codebook, how good its prior and
samples are. Everything is computed on one split (test by default), over the whole split.

    report = evaluate(Path("run"), split="test", n_samples=64)

Writes run/report.json, run/report.md and figures under run/figures/.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vqgen import checkpoint, metrics, plots, realism, rundir
from vqgen.config import EVAL_SAMPLES, DataConfig, SampleConfig, load_config
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
from vqgen.report_text import render_markdown

MEMORISED_SSIM = 0.95  # a sample this close to a training slice counts as memorised
FIGURE_SAMPLES = 8
FEATURE_STEPS = 500  # the feature net's steps on a 1152-slice train split (~20 s on 2 cores)
REALISM_MIN_SLICES = 8  # a set smaller than this gives the C2ST nothing to learn from
MS_SSIM_MIN_SIDE = 44  # realism.ms_ssim_diversity's three scales need this many pixels


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
) -> tuple[dict, Tensor, Tensor]:
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
    return report, codes, recon


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
    n_samples: int = EVAL_SAMPLES,
    out: Path | None = None,
    device: str = "auto",
    seed: int = 0,
    temperature: float = SampleConfig.temperature,
    top_k: int | None = SampleConfig.top_k,
) -> dict[str, Any]:
    """Score a run on `split`; returns the report that is also written as JSON and Markdown.
    The `n_samples` samples are drawn at `temperature` and `top_k`, as `sample` draws them."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got '{split}'")
    if n_samples < 2:
        raise UsageError(f"--n-samples must be at least 2 (diversity needs pairs), got {n_samples}")
    if out is not None and out.suffix != ".json":
        raise UsageError(
            f"--out {out}: the report is JSON, name it *.json (the .md goes beside it)"
        )
    sampling = SampleConfig(n=n_samples, temperature=temperature, top_k=top_k, seed=seed)
    checkpoint.check_run_dir(run_dir)
    out = out or run_dir / "report.json"
    make_output_dir(out.parent, "--out")  # before the slow part
    with rundir.lock(run_dir, "evaluate"):
        return _evaluate(run_dir, split, sampling, out, resolve_device(device))


def _evaluate(
    run_dir: Path, split: str, sampling: SampleConfig, out: Path, dev: torch.device
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
    report["reconstruction"], codes, recon = reconstruction_report(
        vqvae, dataset.images, figures, split
    )
    train_set, samples = load_data(data, "train"), None
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
        report["samples"], samples, cond = samples_section(
            vqvae, prior, prior_meta, sampling, dataset, train_set, figures, dev
        )
    net = feature_net(train_set, dev)
    realism_of = functools.partial(realism_section, net=net, seed=sampling.seed, device=dev)
    report["realism"] = realism_of(recon, samples, dataset, train_set, figures=figures)
    if prior is not None and prior.cfg.condition == "label":  # the same, class by class
        report["realism"]["per_label"] = {
            name: realism_of(
                recon[dataset.labels == i],
                samples[cond == i],
                dataset.subset(dataset.labels == i),
                train_set.subset(train_set.labels == i),
            )
            for i, name in enumerate(label_names)
        }
    checkpoint.write_json(out, report)
    markdown = render_markdown(report)
    checkpoint.atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown))
    return report


def samples_section(
    vqvae: VQVAE,
    prior: GatedPixelCNN,
    prior_meta: dict[str, Any],
    cfg: SampleConfig,
    dataset: SliceDataset,
    train_set: SliceDataset,
    figures: Path,
    device: torch.device,
) -> tuple[dict[str, Any], Tensor, Tensor | None]:
    """Draw `cfg.n` samples (through the classes or across the brain), score them against the
    split and the train split (memorisation), per label too, and draw the figure. Returns the
    section, the samples and their condition. `prior_meta` is the prior's prior.json."""
    label_names = prior_meta.get("label_names", [])
    cond = build_condition(prior, prior_meta, cfg)
    samples, _ = draw(vqvae, prior, cond, cfg, device)
    images, train_images = dataset.images, train_set.images
    section, real_ssim, real_idx = sample_report(samples, images, train_images, cfg.seed)
    section |= {"temperature": cfg.temperature, "top_k": cfg.top_k}
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
    return section, samples, cond


def feature_net(train_set: SliceDataset, device: torch.device | str = "cpu") -> realism.FeatureNet:
    """The feature net of a train split, from the cache when trained on these very slices:
    it depends on the data alone, not on the run. Its steps scale with the split (500 for
    mni152's 1152 slices, at least 50)."""
    steps = min(FEATURE_STEPS, max(50, FEATURE_STEPS * len(train_set) // 1152))
    key = hashlib.sha256(train_set.pixels.numpy().tobytes()).hexdigest()
    return realism.cached_feature_net(train_set, key, steps=steps, device=device)


def realism_section(
    recon: Tensor,
    samples: Tensor | None,
    dataset: SliceDataset,
    train_set: SliceDataset,
    net: realism.FeatureNet,
    seed: int,
    device: torch.device,
    figures: Path | None = None,
) -> dict[str, Any]:
    """Can reconstructions and samples be told from the split's real slices? C2ST, KID, FID,
    precision/recall/density/coverage (features of a net trained on the train split), the
    sharpness ratio and MS-SSIM diversity (vqgen.realism), each beside its floor: the same
    figures for real train slices, as many as there are samples, from many subjects as samples
    are. `net` is the train split's `feature_net`. Writes the power-spectrum figure into
    `figures`, if given."""
    real, groups = dataset.images, dataset.subjects
    smallest = min(len(real), len(train_set), len(real) if samples is None else len(samples))
    if len(set(groups)) < 2 or smallest < REALISM_MIN_SLICES:
        return {
            "skipped": f"needs {REALISM_MIN_SLICES} slices a set and 2 subjects in the split; "
            f"got {smallest} slices and {len(set(groups))} subject(s)"
        }
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    pick = pick[: len(samples) if samples is not None else len(real)].tolist()
    floor, floor_groups = train_set.images[pick], [train_set.subjects[i] for i in pick]
    real_features = realism.extract_features(net, real, device)

    def score(images: Tensor, image_groups: list[str] | None) -> dict[str, Any]:
        c2st = realism.c2st(real, groups, images, image_groups, seed, device=device)
        features = realism.extract_features(net, images, device)
        return {
            "c2st": c2st._asdict(),
            **realism.feature_distances(real_features, features, seed=seed),
            "sharpness": realism.sharpness_ratio(images, real),
        }

    sets = {"reconstructions": (recon, groups), "floor": (floor, floor_groups)}
    if samples is not None:
        sets = {"samples": (samples, None), **sets}
    section: dict[str, Any] = {name: score(*pair) for name, pair in sets.items()}
    if min(real.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        diversity = {name: realism.ms_ssim_diversity(x, seed=seed) for name, (x, _) in sets.items()}
        section["ms_ssim"] = {**diversity, "real": realism.ms_ssim_diversity(real, seed=seed)}
    if figures is not None:
        spectra = {"real": real, **{name: x for name, (x, _) in sets.items()}}
        spectra["real train (floor)"] = spectra.pop("floor")
        spectra = {name: realism.radial_power_spectrum(x) for name, x in spectra.items()}
        plots.spectrum_figure(spectra, figures / "eval_spectrum.png", f"{dataset.split} split")
    return section
