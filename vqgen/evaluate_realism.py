"""The realism sections of the report: can a classifier, a feature net and the outline measure
tell the reconstructions and samples from real slices? Each figure stands beside its floor,
the same figure for real train slices; vqgen.realism holds the measures themselves.

    section = realism_report(recon, samples, cond, split, reference, train, groups, seed, ...)
    section["samples"]["c2st"]["half"]["accuracy"]          # as vqgen.report types it
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqgen import conditioning, plots, realism
from vqgen.data import SliceDataset
from vqgen.progress import Phase, no_phase
from vqgen.realism import outline
from vqgen.report import (
    C2STScales,
    C2STScores,
    OutlineSection,
    RealismSection,
    Reference,
    SetScores,
)

FEATURE_STEPS = 500  # the feature net's steps on a 1152-slice train split (~20 s on 2 cores)
REALISM_MIN_SLICES = 8  # a set smaller than this gives the C2ST nothing to learn from
MS_SSIM_MIN_SIDE = 44  # realism.ms_ssim_diversity's three scales need this many pixels
FIGURE_SAMPLES = 8  # the samples with the rarest outlines that the outline figure shows


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
    phase: Phase = no_phase,
) -> RealismSection:
    """The realism section of the whole split against `reference` (load_reference: the split,
    with mni152's evaluation subjects), with the spectrum figure; then of each group under
    "per_label", against the group's slices of the split: every group, skipped where it has
    too few slices. `phase` names each part as it runs (vqgen.progress.Phases)."""
    with phase("the feature net"):
        net = feature_net(train_set, device)
    realism_of = functools.partial(realism_section, net=net, seed=seed, device=device)
    section = realism_of(
        recon, samples, dataset, reference, train_set, figures=figures, phase=phase
    )
    if samples is not None and "skipped" not in section:
        with phase("the outline measure"):
            section["outline"] = outline_section(samples, cond, train_set, reference, seed, figures)
    if groups:
        assert samples is not None and cond is not None, "groups come with a prior's samples"
        per_label = {}
        for group in conditioning.group_sets(groups, samples, cond, dataset, train_set):
            with phase(f"realism of {group.name}"):
                split, train = group.split, group.train
                per_label[group.name] = realism_of(
                    recon[group.in_split], group.samples, split, split, train
                )
        section["per_label"] = per_label
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
    phase: Phase = no_phase,
) -> RealismSection:
    """Can reconstructions and samples be told from real slices? C2ST at two scales, KID, FID,
    precision/recall/density/coverage (features of a net trained on the train split), the
    sharpness ratio and MS-SSIM diversity (vqgen.realism), each beside its floor: the same
    figures for real train slices, as many as there are samples, spread over as many subjects
    as the train split has. Samples and the floor are compared with `reference`; the
    reconstructions with the split's slices they were made from, paired. `net` is the train
    split's `feature_net`. Writes the power-spectrum figure into `figures`, if given."""
    real = reference.images
    short = too_small(dataset, train_set, samples)
    if short:
        return {"skipped": short}
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

    tests = {  # each set's C2ST: against the reference, or paired with its own real slices
        "samples": (samples, reference, None, False),
        "reconstructions": (recon, dataset, None, True),
        "floor": (floor, reference, floor_groups, False),
    }
    sets: dict[str, tuple[Tensor, C2STScales]] = {}
    section: RealismSection = {}
    for name, (images, real_set, groups, paired) in tests.items():
        if images is None:  # no samples without a prior
            continue
        with phase(f"realism of the {name}"):
            sets[name] = (images, c2st_scales(real_set, images, groups, paired, seed, device))
            section[name] = score(*sets[name])
    section["reference"] = reference_summary(reference, dataset)
    images = {name: x for name, (x, _) in sets.items()}
    if min(real.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        diversity = {name: realism.ms_ssim_diversity(x, seed=seed) for name, x in images.items()}
        section["ms_ssim"] = {**diversity, "real": realism.ms_ssim_diversity(real, seed=seed)}
    if figures is not None:
        spectra = {"real": real, **images, "real train (floor)": images["floor"]}
        del spectra["floor"]
        spectra = {name: realism.radial_power_spectrum(x) for name, x in spectra.items()}
        plots.spectrum_figure(spectra, figures / "eval_spectrum.png", f"{dataset.split} split")
    return section


def too_small(dataset: SliceDataset, train_set: SliceDataset, samples: Tensor | None) -> str:
    """Why the realism of `dataset` (the split, or one label's slices of it) cannot be scored,
    naming each set that is short and by how much; "" when none is."""
    sets = {"split": len(dataset), "train split": len(train_set)}
    if samples is not None:
        sets["samples"] = len(samples)
    short = [f"{name}: {n}" for name, n in sets.items() if n < REALISM_MIN_SLICES]
    subjects = len(set(dataset.subjects))
    why = [f"{REALISM_MIN_SLICES} slices in each set ({', '.join(short)})"] if short else []
    if subjects < 2:
        why.append(f"slices of 2 subjects in the split (it has {subjects})")
    return f"needs {' and '.join(why)}" if why else ""


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
