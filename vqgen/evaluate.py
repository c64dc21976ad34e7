"""The report: how well a run reconstructs, how it uses its codebook, how good its prior and
samples are. Everything is computed on one split (test by default), over the whole split.

    report = evaluate(Path("run"), EvalConfig(split="test", sampling=eval_sampling(64)))
    report["samples"]["nearest_real_ssim"]["mean"]   # the sections of vqgen.report

Writes run/report.json, run/report.md and figures under run/figures/. A label prior's samples
and realism are scored class by class too ("per_label"), by one helper, `group_sets`.
"""

from __future__ import annotations

import functools
import hashlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from vqgen import checkpoint, conditioning, fileio, metrics, plots, realism
from vqgen.api import load_run
from vqgen.config import EVAL_SPLITS, DataConfig, EvalConfig, SampleConfig
from vqgen.data import SPLITS, SliceDataset, load_data, load_reference
from vqgen.errors import DataError, UsageError
from vqgen.inference import (
    CodeSet,
    baselines_bits,
    draw,
    make_output_dir,
    mean_bits,
    nll_bits,
    note,
    reconstruct,
    resolve_device,
    split_codes,
)
from vqgen.models.vqvae import VQVAE
from vqgen.realism import outline
from vqgen.report import (
    C2STScales,
    C2STScores,
    OutlineSection,
    PriorSection,
    RealismSection,
    ReconstructionSection,
    Reference,
    Report,
    SampleScores,
    SamplesSection,
    SetScores,
    Summary,
)
from vqgen.report_text import render_markdown
from vqgen.rundir import RunDir

MEMORISED_SSIM = 0.95  # a sample this close to a training slice counts as memorised
SSIM_PAIRS = {"cpu": 64, "cuda": 4096}  # pairs per block: near a CPU's cache, a GPU wants many
FIGURE_SAMPLES = 8
FEATURE_STEPS = 500  # the feature net's steps on a 1152-slice train split (~20 s on 2 cores)
REALISM_MIN_SLICES = 8  # a set smaller than this gives the C2ST nothing to learn from
MS_SSIM_MIN_SIDE = 44  # realism.ms_ssim_diversity's three scales need this many pixels
assert EVAL_SPLITS == SPLITS, "EvalConfig checks --split against vqgen.data's splits"


def summary(values: np.ndarray) -> Summary:
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
) -> tuple[ReconstructionSection, Tensor, Tensor]:
    """Per-image SSIM (scikit-image), brain SSIM, PSNR, MSE, codebook usage; best/median/worst."""
    recon, codes = reconstruct(vqvae, images)
    ssim = metrics.ssim_reference(images, recon)
    brain = metrics.masked_ssim(images, recon, metrics.foreground_mask(images))
    K = vqvae.cfg.codebook_size
    used, perplexity = metrics.codebook_usage(codes[-1], K)
    order = np.argsort(ssim)
    picks = [int(order[-1]), int(order[len(order) // 2]), int(order[0])]
    caption = f"{split} split: best, median, worst SSIM " + ", ".join(
        f"{ssim[i]:.3f}" for i in picks
    )
    plots.reconstruction_figure(
        images[picks], recon[picks], figures / "eval_reconstructions.png", caption
    )
    plots.histogram(ssim, figures / "eval_ssim_hist.png", "SSIM per slice", f"{split} split")
    counts = torch.bincount(codes[-1].flatten(), minlength=K)
    plots.histogram(
        counts.float(), figures / "eval_code_usage.png", "uses per code", f"{split} split"
    )
    report: ReconstructionSection = {
        "ssim": summary(ssim),
        "brain_ssim_mean": float(torch.nanmean(brain)),
        "psnr_mean": metrics.finite_mean(metrics.psnr(images, recon)),
        "mse_mean": float(metrics.mse(images, recon).mean()),
        "codebook": {"fraction_used": used, "perplexity": perplexity},
    }
    if len(codes) == 2:
        used, perplexity = metrics.codebook_usage(codes[0], K)
        report["codebook_top"] = {"fraction_used": used, "perplexity": perplexity}
    return report, codes, recon


def sample_report(
    samples: Tensor,
    split_images: Tensor,
    train_images: Tensor,
    seed: int,
    device: torch.device = torch.device("cpu"),
) -> tuple[SampleScores, Tensor, Tensor]:
    """Realism, memorisation and diversity of generated slices, measured with SSIM.

    The SSIM of every sample against every real slice is most of `evaluate`'s time at 128 px
    (over 60% on a CPU), so it runs on `device`, in blocks of SSIM_PAIRS[device.type] pairs."""
    queries, chunk = samples.to(device), SSIM_PAIRS[device.type]
    real_ssim, real_idx = (t.cpu() for t in metrics.nearest_ssim(queries, split_images, chunk))
    train_ssim = metrics.nearest_ssim(queries, train_images, chunk)[0].cpu()
    generator = torch.Generator().manual_seed(seed)
    reference = split_images[torch.randperm(len(split_images), generator=generator)[: len(samples)]]
    report: SampleScores = {
        "n": len(samples),
        "nearest_real_ssim": {"mean": float(real_ssim.mean()), "std": float(real_ssim.std())},
        "nearest_train_ssim_max": float(train_ssim.max()),
        "memorised": int((train_ssim > MEMORISED_SSIM).sum()),
        "diversity_pairwise_ssim": metrics.mean_pairwise_ssim(queries, chunk),
        "real_pairwise_ssim": metrics.mean_pairwise_ssim(reference.to(device), chunk),
    }
    return report, real_ssim, real_idx


def evaluate(
    run_dir: Path, cfg: EvalConfig = EvalConfig(), out: Path | None = None, device: str = "auto"
) -> Report:
    """Score a run on `cfg.split`; returns the report that is also written as JSON (to `out`,
    default run/report.json) and Markdown beside it. The `cfg.sampling.n` samples are drawn
    as `sample` draws them with `cfg.sampling`."""
    if out is not None and out.suffix != ".json":
        raise UsageError(
            f"--out {out}: the report is JSON, name it *.json (the .md goes beside it)"
        )
    run = RunDir(run_dir).check_exists()
    out = out or run.report
    if cfg.split == "train":
        warnings.warn(
            "--split train scores the slices the run was trained on: reconstruction and NLL "
            "flatter it, and the realism floor compares the train split with itself",
            stacklevel=2,
        )
    make_output_dir(out.parent, "--out")  # before the slow part
    with run.lock("evaluate"):
        start = time.perf_counter()
        report = _evaluate(run, cfg, out, resolve_device(device))
        note(f"evaluate: scored in {time.perf_counter() - start:.0f} s")
        return report


def _evaluate(run: RunDir, cfg: EvalConfig, out: Path, dev: torch.device) -> Report:
    """Load the run, score it section by section, write report.json and report.md."""
    model = load_run(run.root, dev.type)  # a bad prior fails here, before any output
    vqvae, prior, prior_meta = model.vqvae, model.prior, model.prior_meta or {}
    data = checkpoint.run_data(run, model.vqvae_meta, cfg.data)
    if prior is None:  # a run without a prior is scored on reconstruction only
        warnings.warn(
            f"{run} has no prior ({run.meta('prior').name}): the report leaves out the prior's "
            "NLL and samples; train one with `vqgen train-prior`",
            stacklevel=2,
        )
    size = vqvae.cfg.size
    dataset = load_data(data, cfg.split, size)
    if len(dataset) < 2:  # one slice has no spread, no pairs and no median
        raise DataError(
            f"the {cfg.split} split of {data.source} holds {len(dataset)} slice; evaluate "
            "needs at least 2: choose another --split or give the data more slices"
        )
    note(f"evaluate: scoring {len(dataset)} slices of the {cfg.split} split (takes minutes)")
    figures = run.eval_figures(out)
    report: Report = {
        "run": str(run),
        "split": cfg.split,
        "data": data.source,
        "kind": data.kind,
        "images": len(dataset),
    }
    report["reconstruction"], codes, recon = reconstruction_report(
        vqvae, dataset.images, figures, cfg.split
    )
    train_set, samples, cond, groups = load_data(data, "train", size), None, None, []
    if prior is not None:
        report["prior"] = prior_section(run, vqvae, data, prior, prior_meta, codes, dataset)
        groups = prior_groups(prior, prior_meta)
        report["samples"], samples, cond = samples_section(
            vqvae, prior, prior_meta, groups, cfg.sampling, dataset, train_set, figures, dev
        )
    reference = load_reference(data, cfg.split, size)
    report["realism"] = realism_report(
        recon, samples, cond, dataset, reference, train_set, groups, cfg.seed, dev, figures
    )
    fileio.write_json(out, report)
    fileio.write_text(out.with_suffix(".md"), render_markdown(report))
    return report


def prior_section(
    run: RunDir,
    vqvae: VQVAE,
    data: DataConfig,
    prior: nn.Module,
    prior_meta: dict[str, Any],
    codes: list[Tensor],
    dataset: SliceDataset,
) -> PriorSection:
    """The prior's NLL on the split's `codes` (each level's, and over all levels), beside what
    a uniform prior and the train split's code histogram pay: a prior that learned nothing
    scores near those."""
    label_names = tuple(prior_meta.get("label_names", []))
    split_set = CodeSet(codes, dataset.labels, dataset.positions, label_names)
    train_codes = split_codes(run, "train", vqvae, data, fileio.sha256(run.weights("vqvae")))
    bits = nll_bits(prior, split_set)
    baselines = baselines_bits(train_codes, prior.cfg.codebook_size)
    section: PriorSection = {
        "nll_bits": mean_bits(bits, split_set),
        "uniform_bits": baselines["uniform"],
        "unigram_bits": baselines["unigram"],
        "condition": prior.cfg.condition,
    }
    if len(bits) == 2:
        section["level_nll_bits"] = {"top": bits[0], "bottom": bits[1]}
    return section


def prior_groups(prior: nn.Module, prior_meta: dict[str, Any]) -> list[conditioning.Group]:
    """The groups scored one by one: the classes of a label prior (prior.json's names), else
    none."""
    return conditioning.groups(prior.cfg.condition, prior_meta.get("label_names", []))


class GroupSets(NamedTuple):
    """One group's share of what evaluate scores."""

    name: str
    in_split: Tensor  # (N,) bool: which of the split's slices are the group's
    samples: Tensor  # the samples drawn with the group's condition
    split: SliceDataset  # the split's slices of the group
    train: SliceDataset  # the train split's slices of the group


def group_sets(
    groups: list[conditioning.Group],
    samples: Tensor,
    cond: Tensor,
    dataset: SliceDataset,
    train_set: SliceDataset,
) -> Iterator[GroupSets]:
    """Per group, its samples (by their condition `cond`), split slices and train slices:
    the per-label sections score these as the whole sections score all."""
    for group in groups:
        in_split = group.mask(dataset.labels)
        yield GroupSets(
            group.name,
            in_split,
            samples[group.mask(cond)],
            dataset.subset(in_split),
            train_set.subset(group.mask(train_set.labels)),
        )


def samples_section(
    vqvae: VQVAE,
    prior: nn.Module,
    prior_meta: dict[str, Any],
    groups: list[conditioning.Group],
    cfg: SampleConfig,
    dataset: SliceDataset,
    train_set: SliceDataset,
    figures: Path,
    device: torch.device,
) -> tuple[SamplesSection, Tensor, Tensor | None]:
    """Draw `cfg.n` samples (through the classes or across the brain), score them against the
    split and the train split (memorisation), per group too, and draw the figure. Returns the
    section, the samples and their condition. `prior_meta` is the prior's prior.json."""
    cond = conditioning.for_sampling(prior.cfg, prior_meta, cfg)
    samples, _ = draw(vqvae, prior, cond, cfg, device)
    images, train_images = dataset.images, train_set.images
    scores, real_ssim, real_idx = sample_report(samples, images, train_images, cfg.seed, device)
    section: SamplesSection = {
        **scores,
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "guidance": conditioning.guidance_scale(prior.cfg, cfg),
    }
    if groups:  # a group needs 2 samples and 2 real slices for its pairwise SSIM
        section["per_label"] = {
            group.name: sample_report(
                group.samples, group.split.images, train_images, cfg.seed, device
            )[0]
            for group in group_sets(groups, samples, cond, dataset, train_set)
            if len(group.samples) >= 2 and len(group.split) >= 2
        }
    # evenly spread, so that a slice-conditioned prior shows levels from bottom to top
    shown = np.linspace(0, cfg.n - 1, min(FIGURE_SAMPLES, cfg.n)).round().astype(int).tolist()
    plots.rows_figure(
        [("sample", samples[shown]), (f"nearest {dataset.split}", images[real_idx[shown]])],
        figures / "eval_samples_nearest.png",
        "SSIM to nearest real: " + "  ".join(f"{real_ssim[i]:.2f}" for i in shown),
    )
    return section, samples, cond


def realism_report(
    recon: Tensor,
    samples: Tensor | None,
    cond: Tensor | None,
    dataset: SliceDataset,
    reference: SliceDataset,
    train_set: SliceDataset,
    groups: list[conditioning.Group],
    seed: int,
    device: torch.device,
    figures: Path,
) -> RealismSection:
    """The realism section of the whole split against `reference` (load_reference: the split,
    with mni152's evaluation subjects), with the spectrum figure; then of each group under
    "per_label", against the group's slices of the split: every group, skipped where it has
    too few slices."""
    net = feature_net(train_set, device)
    realism_of = functools.partial(realism_section, net=net, seed=seed, device=device)
    section = realism_of(recon, samples, dataset, reference, train_set, figures=figures)
    if samples is not None and "skipped" not in section:
        section["outline"] = outline_section(samples, cond, train_set, reference, seed, figures)
    if groups:
        assert samples is not None and cond is not None, "groups come with a prior's samples"
        section["per_label"] = {
            group.name: realism_of(
                recon[group.in_split], group.samples, group.split, group.split, group.train
            )
            for group in group_sets(groups, samples, cond, dataset, train_set)
        }
    return section


def feature_net(train_set: SliceDataset, device: torch.device | str = "cpu") -> realism.FeatureNet:
    """The feature net of a train split, from the cache when trained on these very slices:
    it depends on the data alone, not on the run. Its steps scale with the split (500 for
    mni152's 1152 slices, at least 50)."""
    steps = min(FEATURE_STEPS, max(50, FEATURE_STEPS * len(train_set) // 1152))
    key = hashlib.sha256(train_set.pixels.numpy().tobytes()).hexdigest()
    return realism.cached_feature_net(train_set, key, steps=steps, device=device)


def spread_pick(subjects: list[str], n: int, seed: int) -> list[int]:
    """`n` slice indices spread over as many subjects as there are: one slice of each subject
    (in a seeded order) per round, each subject's slices in a seeded order too."""
    rng = np.random.default_rng(seed)
    by_subject: dict[str, list[int]] = {}
    for i, name in enumerate(subjects):
        by_subject.setdefault(name, []).append(i)
    queues = [rng.permutation(by_subject[name]).tolist() for name in sorted(by_subject)]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    picks: list[int] = []
    for round_ in range(max(map(len, queues), default=0)):
        picks += [queue[round_] for queue in queues if round_ < len(queue)]
    return picks[:n]


def c2st_scales(
    real: SliceDataset,
    images: Tensor,
    groups: list[str] | None,
    paired: bool,
    seed: int,
    device: torch.device,
) -> C2STScales:
    """The C2ST of `images` against `real` at full scale and after a 2x average-pool."""

    def at(scale: int) -> C2STScores:
        test = realism.c2st(
            real.images,
            real.subjects,
            images,
            groups,
            seed,
            paired=paired,
            scale=scale,
            device=device,
        )
        return test._asdict()  # type: ignore[return-value]

    return {"full": at(1), "half": at(2), "paired": paired}


def realism_section(
    recon: Tensor,
    samples: Tensor | None,
    dataset: SliceDataset,
    reference: SliceDataset,
    train_set: SliceDataset,
    net: realism.FeatureNet,
    seed: int,
    device: torch.device,
    figures: Path | None = None,
) -> RealismSection:
    """Can reconstructions and samples be told from real slices? C2ST at two scales, KID, FID,
    precision/recall/density/coverage (features of a net trained on the train split), the
    sharpness ratio and MS-SSIM diversity (vqgen.realism), each beside its floor: the same
    figures for real train slices, as many as there are samples, spread over as many subjects
    as the train split has. Samples and the floor are compared with `reference`; the
    reconstructions with the split's slices they were made from, paired. `net` is the train
    split's `feature_net`. Writes the power-spectrum figure into `figures`, if given."""
    real = reference.images
    subjects = len(set(dataset.subjects))
    smallest = min(len(dataset), len(train_set), len(dataset) if samples is None else len(samples))
    if subjects < 2 or smallest < REALISM_MIN_SLICES:
        return {
            "skipped": f"needs {REALISM_MIN_SLICES} slices a set and 2 subjects in the split; "
            f"got {smallest} slices and {subjects} subject(s)"
        }
    pick = spread_pick(train_set.subjects, len(dataset if samples is None else samples), seed)
    floor, floor_groups = train_set.images[pick], [train_set.subjects[i] for i in pick]
    features_of = {"reference": realism.extract_features(net, real, device)}
    features_of["split"] = realism.extract_features(net, dataset.images, device)

    def score(images: Tensor, c2st: C2STScales) -> SetScores:  # recon.: beside their own
        against = dataset.images if c2st["paired"] else real
        features = realism.extract_features(net, images, device)
        reals = features_of["split" if c2st["paired"] else "reference"]
        return {
            "c2st": c2st,
            **realism.feature_distances(reals, features, seed=seed),
            "sharpness": realism.sharpness_ratio(images, against),
        }

    sets = {
        "reconstructions": (recon, c2st_scales(dataset, recon, None, True, seed, device)),
        "floor": (floor, c2st_scales(reference, floor, floor_groups, False, seed, device)),
    }
    if samples is not None:
        sets = {
            "samples": (samples, c2st_scales(reference, samples, None, False, seed, device)),
            **sets,
        }
    section: RealismSection = {name: score(*pair) for name, pair in sets.items()}
    section["reference"] = reference_summary(reference, dataset)
    images = {name: x for name, (x, _) in sets.items()}
    if min(real.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        diversity = {name: realism.ms_ssim_diversity(x, seed=seed) for name, x in images.items()}
        section["ms_ssim"] = {**diversity, "real": realism.ms_ssim_diversity(real, seed=seed)}
    if figures is not None:
        spectrum_figure(real, images, figures / "eval_spectrum.png", f"{dataset.split} split")
    return section


def outline_section(
    samples: Tensor,
    cond: Tensor | None,
    train_set: SliceDataset,
    reference: SliceDataset,
    seed: int,
    figures: Path | None = None,
) -> OutlineSection:
    """The outline measure (vqgen.realism.outline) of the samples and of realism_section's
    floor (as many train slices, spread over the subjects) against `reference`: level by level
    where every slice position is known (a slice prior's `cond`), else against real slices of
    any level, the floor too. Draws the worst samples into `figures`, if given."""
    levels = cond if cond is not None and cond.is_floating_point() else None  # not a class
    pick = spread_pick(train_set.subjects, len(samples), seed)
    sets = {
        "samples": (samples, levels),
        "floor": (train_set.images[pick], train_set.positions[pick]),
    }
    by_level = outline.known(reference.positions, *(at for _, at in sets.values()))
    real = outline.outline_features(reference.images)
    found = {
        name: outline.rarity(
            outline.outline_features(x), at if by_level else None, real, reference.positions
        )
        for name, (x, at) in sets.items()
    }
    if figures is not None:
        out = figures / "eval_outline_worst.png"
        outline_figure(samples, found["samples"], levels if by_level else None, reference, out)
    return {
        "samples": outline.outline_scores(found["samples"]),
        "floor": outline.outline_scores(found["floor"]),
        "by_level": by_level,
        "window": outline.WINDOW,
        "rare": outline.RARE,
    }


def outline_figure(
    samples: Tensor,
    found: outline.Rarity,
    levels: Tensor | None,
    reference: SliceDataset,
    out: Path,
) -> None:
    """The samples with the rarest outlines, marked (outline green, holes red), above the real
    slices nearest their level where levels are known."""
    worst = outline.worst(found, FIGURE_SAMPLES)
    rows = [("rarest outlines", outline.marked(samples[worst]))]
    if levels is not None:
        nearest = (reference.positions[None, :] - levels[worst][:, None]).abs().argmin(1)
        rows.append(("real, same level", outline.marked(reference.images[nearest])))
    shape = found.outline
    caption = "pieces / holes / solidity: " + "   ".join(
        f"{shape.components[i]}/{shape.holes[i]}/{shape.solidity[i]:.2f}" for i in worst
    )
    plots.rows_figure(rows, out, caption)


def reference_summary(reference: SliceDataset, dataset: SliceDataset) -> Reference:
    """How many slices and subjects the reference has, and how many are not the split's."""
    subjects = set(reference.subjects)
    return {
        "slices": len(reference),
        "subjects": len(subjects),
        "evaluation_subjects": len(subjects - set(dataset.subjects)),
    }


def spectrum_figure(real: Tensor, images: dict[str, Tensor], out: Path, caption: str) -> None:
    """The radial power spectra of the real slices and of each set, in one figure."""
    spectra = {"real": real, **images}
    spectra["real train (floor)"] = spectra.pop("floor")
    spectra = {name: realism.radial_power_spectrum(x) for name, x in spectra.items()}
    plots.spectrum_figure(spectra, out, caption)
