"""The `evaluate` verb: how well a run reconstructs, how it uses its codebook, how good its
prior and samples are. Everything is computed on one split (test by default), over the whole
split.

    report = evaluate(LoadedRun.load(Path("run")), EvalConfig(sampling=eval_sampling(64)))
    report["samples"]["nearest_real_ssim"]["mean"]   # the sections of vqgen.report

Writes run/report.json, run/report.md and figures under run/figures/. This module scores the
reconstructions, the prior and the samples' SSIMs; vqgen.evaluate_realism the realism
sections. A label prior's samples and realism are scored class by class too ("per_label").
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqgen import conditioning, fileio, metrics, plots
from vqgen.config import EVAL_SPLITS, EvalConfig, SampleConfig
from vqgen.data import SPLITS, SliceDataset
from vqgen.errors import CheckpointError, DataError, UsageError
from vqgen.evaluate_realism import FIGURE_SAMPLES, realism_report
from vqgen.inference import CodeSet, baselines_bits, make_output_dir, mean_bits, nll_bits, note
from vqgen.loaded import LoadedRun
from vqgen.progress import Phase, Phases, no_phase
from vqgen.report import (
    PriorSection,
    ReconstructionSection,
    Report,
    SampleScores,
    SamplesSection,
    Summary,
)
from vqgen.report_text import render_markdown
from vqgen.rundir import RunDir

FIGURE_NAME = re.compile(r"eval_\w+\.png")  # the figures `evaluate` draws
STAGES = ("vqvae", "prior")
MEMORISED_SSIM = 0.95  # a sample this close to a training slice counts as memorised
SSIM_PAIRS = {"cpu": 64, "cuda": 4096}  # pairs per block: near a CPU's cache, a GPU wants many
assert EVAL_SPLITS == SPLITS, "EvalConfig checks --split against vqgen.data's splits"


def evaluate(run: LoadedRun, cfg: EvalConfig = EvalConfig(), out: Path | None = None) -> Report:
    """Score a loaded run on `cfg.split`; returns the report that is also written as JSON (to
    `out`, default run/report.json) and Markdown beside it. The `cfg.sampling.n` samples are
    drawn as `sample` draws them with `cfg.sampling`."""
    if out is not None and out.suffix != ".json":
        raise UsageError(
            f"--out {out}: the report is JSON, name it *.json (the .md goes beside it)"
        )
    out = out or run.dir.report
    if cfg.split == "train":
        warnings.warn(
            "--split train scores the slices the run was trained on: reconstruction and NLL "
            "flatter it, and the realism floor compares the train split with itself",
            stacklevel=2,
        )
    make_output_dir(out.parent, "--out")  # before the slow part
    check_output(run.dir, out)
    with run.dir.lock("evaluate", enabled=into_run(run.dir, out)):
        start = time.perf_counter()
        report = _evaluate(run, cfg, out)
        note(f"evaluate: scored in {time.perf_counter() - start:.0f} s")
        return report


def _evaluate(run: LoadedRun, cfg: EvalConfig, out: Path) -> Report:
    """Score the run section by section, write report.json and report.md."""
    if run.prior is None:  # a run without a prior is scored on reconstruction only
        warnings.warn(
            f"{run.dir} has no prior ({run.dir.meta('prior').name}): the report leaves out the "
            "prior's NLL and samples; train one with `vqgen train-prior`",
            stacklevel=2,
        )
    dataset = run.split(cfg.split)
    if len(dataset) < 2:  # one slice has no spread, no pairs and no median
        raise DataError(
            f"the {cfg.split} split of {run.data_config.source} holds {len(dataset)} slice; "
            "evaluate needs at least 2: choose another --split or give the data more slices"
        )
    note(f"evaluate: scoring {len(dataset)} slices of the {cfg.split} split (takes minutes)")
    figures = run.dir.eval_figures(out)
    staged = figures.parent / f".{figures.name}.new-{os.getpid()}"  # figures not yet committed
    groups = []
    if run.prior is not None:
        label_names = (run.prior_meta or {}).get("label_names", [])
        groups = conditioning.groups(run.prior.cfg.condition, label_names)
    phases = 1 + (8 if run.prior is not None else 3) + len(groups)  # those `phase` names below
    try:
        with Phases("evaluate", phases) as phase:
            report = _sections(run, cfg, dataset, groups, staged, phase)
        commit(report, out, staged, figures)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return report


def into_run(run: RunDir, out: Path) -> bool:
    """Whether the report (or its figures) goes into the run: only then is its lock held, so
    that a run on a read-only disk is scored into a folder elsewhere."""
    return run.contains(out) or run.contains(run.eval_figures(out))


def check_output(run: RunDir, out: Path) -> None:
    """Refuse, before any work, an --out that would write over what `evaluate` did not write:
    a file of the run's own (vqvae.json, prior.json, ...), or a JSON, Markdown file or figures
    folder of someone else's. The run's own report.json is always evaluate's to replace."""
    if out.resolve() == run.report.resolve():
        return
    reserved = {run.meta(stage, last).resolve() for stage in STAGES for last in (False, True)}
    figures = run.eval_figures(out)
    foreign = [out] if out.resolve() in reserved else []
    if out.exists() and not is_report(out):
        foreign.append(out)
    md = out.with_suffix(".md")
    if md.exists() and not (
        md.is_file() and md.read_text(errors="replace").startswith("# vqgen report")
    ):
        foreign.append(md)
    if figures.exists():
        others = (
            [f for f in figures.iterdir() if not FIGURE_NAME.fullmatch(f.name)]
            if figures.is_dir()
            else [figures]
        )
        foreign += others[:1]
    if foreign:
        raise UsageError(
            f"--out {out}: {foreign[0]} is not a report that `vqgen evaluate` wrote; "
            "move it or choose another --out"
        )


def is_report(path: Path) -> bool:
    """Whether `path` holds a report.json that `evaluate` wrote."""
    try:
        report = fileio.read_json(path)
    except CheckpointError:
        return False
    return {"run", "split", "reconstruction"} <= set(report)


def commit(report: Report, out: Path, staged: Path, figures: Path) -> None:
    """Put the report and its figures in place as one unit: the figures drawn in `staged`
    replace those of the last report in `figures` (and any it drew that this one did not),
    then the Markdown, then the JSON; Ctrl-C and SIGTERM wait until all are in place."""
    markdown, payload = render_markdown(report), fileio.to_json(report, indent=2) + "\n"
    with signals_held():
        figures.mkdir(parents=True, exist_ok=True)
        drawn = {f.name for f in staged.glob("eval_*.png")}
        for old in figures.glob("eval_*.png"):
            if old.name not in drawn:
                old.unlink()
        for name in sorted(drawn):
            os.replace(staged / name, figures / name)
        fileio.write_text(out.with_suffix(".md"), markdown)
        fileio.write_text(out, payload)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a few files are renamed into place; they take effect
    right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):  # no POSIX signal masks here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _sections(
    run: LoadedRun,
    cfg: EvalConfig,
    dataset: SliceDataset,
    groups: list[conditioning.Group],
    figures: Path,
    phase: Phase,
) -> Report:
    """Every section of the report, each phase named by `phase` as it runs."""
    report: Report = {
        "run": str(run.dir),
        "split": cfg.split,
        "data": run.data_config.source,
        "kind": run.data_config.kind,
        "images": len(dataset),
    }
    with phase(f"reconstructing {len(dataset)} slices"):
        report["reconstruction"], codes, recon = reconstruction_report(run, dataset, figures)
    train_set, samples, cond = run.split("train"), None, None
    if run.prior is not None:
        with phase("the prior's NLL"):
            report["prior"] = prior_section(run, codes, dataset)
        report["samples"], samples, cond = samples_section(
            run, groups, cfg.sampling, dataset, train_set, figures, phase
        )
    report["realism"] = realism_report(
        recon,
        samples,
        cond,
        dataset,
        run.reference(cfg.split),
        train_set,
        groups,
        cfg.seed,
        run.device,
        figures,
        phase,
    )
    return report


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
    run: LoadedRun, dataset: SliceDataset, figures: Path
) -> tuple[ReconstructionSection, list[Tensor], Tensor]:
    """Per-image SSIM (scikit-image), brain SSIM, PSNR, MSE, codebook usage; best/median/worst.
    Returns the section, each level's code grids and the reconstructions."""
    images, split = dataset.images, dataset.split
    recon, codes = run.reconstruct(images)
    ssim = metrics.ssim_reference(images, recon)
    brain = metrics.masked_ssim(images, recon, metrics.foreground_mask(images))
    K = run.vqvae.cfg.codebook_size
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


def prior_section(run: LoadedRun, codes: list[Tensor], dataset: SliceDataset) -> PriorSection:
    """The prior's NLL on the split's `codes` (each level's, and over all levels), beside what
    a uniform prior and the train split's code histogram pay: a prior that learned nothing
    scores near those."""
    assert run.prior is not None
    label_names = tuple((run.prior_meta or {}).get("label_names", []))
    split_set = CodeSet(codes, dataset.labels, dataset.positions, label_names)
    bits = nll_bits(run.prior, split_set)
    baselines = baselines_bits(run.codes("train"), run.prior.cfg.codebook_size)
    section: PriorSection = {
        "nll_bits": mean_bits(bits, split_set),
        "uniform_bits": baselines["uniform"],
        "unigram_bits": baselines["unigram"],
        "condition": run.prior.cfg.condition,
    }
    if len(bits) == 2:
        section["level_nll_bits"] = {"top": bits[0], "bottom": bits[1]}
    return section


def sample_report(
    samples: Tensor,
    split_images: Tensor,
    train_ssim: Tensor,
    seed: int,
    device: torch.device = torch.device("cpu"),
) -> tuple[SampleScores, Tensor, Tensor]:
    """Realism, memorisation and diversity of generated slices, measured with SSIM;
    `train_ssim`: each sample's SSIM to its nearest train slice (`nearest_train_ssim`).

    The SSIM of every sample against every real slice is most of `evaluate`'s time at 128 px
    (over 60% on a CPU), so it runs on `device`, in blocks of SSIM_PAIRS[device.type] pairs."""
    queries, chunk = samples.to(device), SSIM_PAIRS[device.type]
    real_ssim, real_idx = (t.cpu() for t in metrics.nearest_ssim(queries, split_images, chunk))
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


def nearest_train_ssim(samples: Tensor, train_images: Tensor, device: torch.device) -> Tensor:
    """Each sample's SSIM to its nearest train slice (memorisation), on the CPU: (N,)."""
    chunk = SSIM_PAIRS[device.type]
    return metrics.nearest_ssim(samples.to(device), train_images, chunk)[0].cpu()


def samples_section(
    run: LoadedRun,
    groups: list[conditioning.Group],
    cfg: SampleConfig,
    dataset: SliceDataset,
    train_set: SliceDataset,
    figures: Path,
    phase: Phase = no_phase,
) -> tuple[SamplesSection, Tensor, Tensor | None]:
    """Draw `cfg.n` samples (through the classes or across the brain), score them against the
    split and the train split (memorisation), per group too, and draw the figure. Returns the
    section, the samples and their condition."""
    with phase(f"drawing {cfg.n} samples"):
        samples, _, cond = run.draw(cfg)
    images, train_images = dataset.images, train_set.images
    with phase("the samples' nearest real slices"):
        train_ssim = nearest_train_ssim(samples, train_images, run.device)
        scores, real_ssim, real_idx = sample_report(
            samples, images, train_ssim, cfg.seed, run.device
        )
    section: SamplesSection = {
        **scores,
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "guidance": run.guidance(cfg),
    }
    if groups:  # a group needs 2 samples and 2 real slices for its pairwise SSIM
        assert cond is not None, "groups come with a label prior's condition"
        section["per_label"] = {
            group.name: sample_report(
                group.samples,
                group.split.images,
                train_ssim[group.of_samples],
                cfg.seed,
                run.device,
            )[0]
            for group in conditioning.group_sets(groups, samples, cond, dataset)
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
