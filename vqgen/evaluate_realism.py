"""The realism sections of the report: can a classifier, a feature net and the outline measure
tell the reconstructions and samples from real slices? Each figure stands beside its floor,
the same figure for real train slices; vqgen.realism holds the measures themselves.

    section = realism_report(recon, samples, cond, split, reference, train, groups, seed, ...)
    section["samples"]["c2st"]["half"]["accuracy"]          # as vqgen.report types it
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

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
    "per_label", its slices of the same sets against its slices of the split, scored by the
    same classifiers and features: every group, skipped where it has too few slices. `phase`
    names each part as it runs (vqgen.progress.Phases)."""
    with phase("the feature net"):
        net = feature_net(train_set, device)
    short = too_small(dataset, train_set, samples)
    if short:
        return {"skipped": short}
    sets = measure_sets(
        recon, samples, cond, dataset, reference, train_set, net, seed, device, phase
    )
    section = realism_section(sets, seed, figures=figures)
    if samples is not None:
        with phase("the outline measure"):
            section["outline"] = outline_section(samples, cond, train_set, reference, seed, figures)
    if groups:
        assert samples is not None and cond is not None, "groups come with a prior's samples"
        per_label = {}
        for group in groups:
            with phase(f"realism of {group.name}"):
                per_label[group.name] = label_section(sets, group, train_set, seed)
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


class Measured(NamedTuple):
    """One set (samples, reconstructions or the floor) as the report measures it, whole: every
    part of it (one label's slices) is scored from these without training again."""

    images: Tensor  # (N, 1, S, S)
    labels: Tensor  # (N,) the label of each slice's subject, or of each sample's condition
    features: Tensor  # (N, F) of the train split's feature net
    c2st: dict[str, realism.HeldOut]  # held-out C2ST scores at "full" and "half" scale
    paired: bool  # against the split's slices it was made from, else against the reference


class Sets(NamedTuple):
    """The measured sets and the real slices they are compared with."""

    measured: dict[str, Measured]  # "samples" (where there are any), "reconstructions", "floor"
    reference: SliceDataset  # what samples and the floor are compared with
    split: SliceDataset  # what the reconstructions are made from
    features: dict[str, Tensor]  # of "reference" and "split"


def measure_sets(
    recon: Tensor,
    samples: Tensor | None,
    cond: Tensor | None,
    dataset: SliceDataset,
    reference: SliceDataset,
    train_set: SliceDataset,
    net: realism.FeatureNet,
    seed: int,
    device: torch.device,
    phase: Phase = no_phase,
) -> Sets:
    """The C2STs at two scales and the features of the samples, the reconstructions and the
    floor: as many real train slices as there are samples (or split slices), spread over as
    many subjects as the train split has. Samples and the floor are compared with `reference`;
    the reconstructions with the split's slices they were made from, paired. `net` is the train
    split's `feature_net`. A sample's label is its condition `cond` where that is a class."""
    pick = spread_pick(train_set.subjects, len(dataset if samples is None else samples), seed)
    floor, floor_groups = train_set.images[pick], [train_set.subjects[i] for i in pick]
    sample_labels = cond if cond is not None and not cond.is_floating_point() else None
    tests = {  # each set's C2ST: against the reference, or paired with its own real slices
        "samples": (samples, sample_labels, reference, None, False),
        "reconstructions": (recon, dataset.labels, dataset, None, True),
        "floor": (floor, train_set.labels[pick], reference, floor_groups, False),
    }
    measured = {}
    for name, (images, labels, real, groups, paired) in tests.items():
        if images is None:  # no samples without a prior
            continue
        if labels is None:  # no classes: one label for all
            labels = torch.full((len(images),), -1, dtype=torch.long)
        with phase(f"realism of the {name}"):
            args = (real.images, real.subjects, images, groups, seed)
            full, half = realism.held_out_scores(*args, paired=paired, scales=(1, 2), device=device)
            held = {"full": full, "half": half}
            features = realism.extract_features(net, images, device)
            measured[name] = Measured(images, labels, features, held, paired)
    features = {"reference": realism.extract_features(net, reference.images, device)}
    features["split"] = realism.extract_features(net, dataset.images, device)
    return Sets(measured, reference, dataset, features)


def realism_section(
    sets: Sets,
    seed: int,
    label: int | None = None,
    figures: Path | None = None,
) -> RealismSection:
    """Can reconstructions and samples be told from real slices? C2ST at two scales, KID, FID,
    precision/recall/density/coverage (features of a net trained on the train split), the
    sharpness ratio and MS-SSIM diversity (vqgen.realism), each beside its floor: the same
    figures for real train slices. Of every slice, or with `label` of that label's slices of
    each set and of the real ones. Writes the power-spectrum figure into `figures`, if given."""

    def kept(labels: Tensor) -> Tensor:
        return torch.ones(len(labels), dtype=torch.bool) if label is None else labels == label

    in_reference, in_split = kept(sets.reference.labels), kept(sets.split.labels)
    real = sets.reference.images[in_reference]
    spectra = {  # each set's power spectrum once, for its sharpness and the figure
        "reference": realism.power_spectrum(real),
        "split": realism.power_spectrum(sets.split.images[in_split]),
    }
    section: RealismSection = {}
    images = {}
    for name, m in sets.measured.items():
        mine = kept(m.labels)
        against, in_real = ("split", in_split) if m.paired else ("reference", in_reference)
        c2st = c2st_scales(m, torch.cat([in_real, mine]))  # the C2ST's order: real slices first
        images[name] = m.images[mine]
        spectra[name] = realism.power_spectrum(images[name])
        section[name] = {
            "c2st": c2st,
            **realism.feature_distances(
                sets.features[against][in_real], m.features[mine], seed=seed
            ),
            "sharpness": realism.sharpness_ratio(spectra[name], spectra[against]),
        }
    section["reference"] = reference_summary(
        sets.reference.subset(in_reference), sets.split.subset(in_split)
    )
    if min(real.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        diversity = {name: realism.ms_ssim_diversity(x, seed=seed) for name, x in images.items()}
        section["ms_ssim"] = {**diversity, "real": realism.ms_ssim_diversity(real, seed=seed)}
    if figures is not None:
        shown = {"real": "reference", **{name: name for name in images if name != "floor"}}
        shown["real train (floor)"] = "floor"
        radial = {
            label: realism.radial_power_spectrum(spectra[name]) for label, name in shown.items()
        }
        plots.spectrum_figure(radial, figures / "eval_spectrum.png", f"{sets.split.split} split")
    return section


def c2st_scales(m: Measured, keep: Tensor) -> C2STScales:
    """The C2ST of a set at full scale and after a 2x average-pool, of the slices `keep` sets
    (the real slices' first, then the set's, the order of its held-out scores)."""

    def at(scale: str) -> C2STScores:
        return realism.c2st_summary(m.c2st[scale], keep)._asdict()  # type: ignore[return-value]

    return {"full": at("full"), "half": at("half"), "paired": m.paired}


def label_section(
    sets: Sets, group: conditioning.Group, train_set: SliceDataset, seed: int
) -> RealismSection:
    """`realism_section` of one group's slices, or why it is skipped: too few of them."""
    in_split = group.mask(sets.split.labels)
    measured = sets.measured
    short = too_small(
        sets.split.subset(in_split),
        train_set.subset(group.mask(train_set.labels)),
        measured["samples"].images[group.mask(measured["samples"].labels)],
        floor=int(group.mask(measured["floor"].labels).sum()),
    )
    return {"skipped": short} if short else realism_section(sets, seed, group.label)


def too_small(
    dataset: SliceDataset,
    train_set: SliceDataset,
    samples: Tensor | None,
    floor: int | None = None,
) -> str:
    """Why the realism of `dataset` (the split, or one label's slices of it) cannot be scored,
    naming each set that is short and by how much; "" when none is. `floor`: how many of the
    floor's train slices are the label's."""
    sets = {"split": len(dataset), "train split": len(train_set)}
    if samples is not None:
        sets["samples"] = len(samples)
    if floor is not None:
        sets["floor"] = floor
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
