"""The report's sections as typed dicts: what vqgen.evaluate writes to report.json (key for
key, in this nesting) and vqgen.report_text reads. Plain dicts at run time, so report.json is
the JSON of these very values. (No `from __future__ import annotations`: evaluated, the
annotations give each class its true __optional_keys__.)

    report["reconstruction"]["ssim"]["mean"]        # always there
    report["samples"]["per_label"]["AD"]["memorised"]  # a prior's; per label for a label prior
    report["realism"]["samples"]["c2st"]["full"]["accuracy"]   # absent where realism was "skipped"
"""

import sys

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # a dependency of torch's
    from typing_extensions import NotRequired, TypedDict

# -- reconstruction ----------------------------------------------------------------------------

# Per-image scores summarised (evaluate.summary); "frac_ge_0.6" is no identifier, hence the form.
Summary = TypedDict(
    "Summary",
    {"mean": float, "std": float, "min": float, "p5": float, "frac_ge_0.6": float},
)


class CodebookUsage(TypedDict):
    fraction_used: float  # of the codebook, on the split
    perplexity: float  # exp(entropy) of the code histogram


class ReconstructionSection(TypedDict):
    ssim: Summary  # per slice, scikit-image's SSIM
    brain_ssim_mean: float  # SSIM within the brain's mask
    psnr_mean: float  # dB, over the finite values
    mse_mean: float
    codebook: CodebookUsage  # of the bottom level, or the only one
    codebook_top: NotRequired[CodebookUsage]  # of a two-level VQ-VAE's top level


# -- prior and samples -------------------------------------------------------------------------


class PriorSection(TypedDict):
    nll_bits: float  # per code, on the split: over both levels for a two-level run
    level_nll_bits: NotRequired[dict[str, float]]  # "top", "bottom": each level's, per code
    uniform_bits: float  # log2 of the codebook size
    unigram_bits: float  # entropy of the train split's code histogram
    condition: str  # none | label | slice


class MeanStd(TypedDict):
    mean: float
    std: float


class SampleScores(TypedDict):
    """SSIM of samples to real slices, to train slices (memorisation) and among themselves."""

    n: int
    nearest_real_ssim: MeanStd  # to the nearest slice of the split
    nearest_train_ssim_max: float
    memorised: int  # samples above evaluate.MEMORISED_SSIM to a train slice
    diversity_pairwise_ssim: float  # among the samples
    real_pairwise_ssim: float  # among as many slices of the split


class SamplesSection(SampleScores):
    temperature: float
    top_k: int | None
    guidance: float  # classifier-free guidance scale; 1: none
    # a label prior's, per class with 2 samples and 2 slices of the split at least
    per_label: NotRequired[dict[str, SampleScores]]


# -- realism -----------------------------------------------------------------------------------


class C2STScores(TypedDict):
    """vqgen.realism.C2ST as a dict."""

    accuracy: float
    ci_low: float
    ci_high: float
    accuracy_std: float
    auc: float
    auc_std: float
    n_real: int
    n_other: int
    folds: int
    rounds: float
    side: int


class C2STScales(TypedDict):
    """The C2ST at the slices' own resolution (noise, texture) and after a 2x average-pool
    (anatomy); reconstructions are paired with their real slices."""

    full: C2STScores
    half: C2STScores
    paired: bool


class SetScores(TypedDict):
    """How far one set (samples, reconstructions or the floor) is from the real reference."""

    c2st: C2STScales
    kid: float
    kid_std: float
    fid: float
    precision: float
    recall: float
    density: float
    coverage: float
    k: int  # PRDC's nearest neighbours
    kid_subset_size: int
    sharpness: float  # high-frequency power relative to real


class Reference(TypedDict):
    """The real slices that samples and the floor are compared with: the split, with mni152's
    evaluation subjects beside validate and test."""

    slices: int
    subjects: int
    evaluation_subjects: int  # of those, the mni152 evaluation subjects (0 for real data)


class MsSsimSection(TypedDict):
    """MS-SSIM of random pairs within each set, and within the split's slices."""

    samples: NotRequired[float]  # where there are samples
    reconstructions: float
    floor: float
    real: float


class OutlineScores(TypedDict):
    """One set's brain outlines against the reference's (vqgen.realism.outline)."""

    atypical: float  # share of slices whose outline real slices of the level rarely have
    ci_low: float  # its 95% interval (Wilson)
    ci_high: float
    topology: float  # share with rare (components, holes)
    solidity: float  # share with a rarely low solidity: a cut or ragged outline
    components: float  # mean per slice
    holes: float  # mean per slice
    excess: float  # mean pieces and holes that differ from the nearest real outline of the level
    n: int


class OutlineSection(TypedDict):
    """The outline measure of the samples and of the floor, both against the reference."""

    samples: OutlineScores
    floor: OutlineScores  # the realism floor's real train slices, compared the same way
    by_level: bool  # against real slices of the same level; else of any level (unknown)
    window: float  # slice positions this close are one level
    rare: float  # an outline fewer real slices of the level have is atypical


class RealismSection(TypedDict):
    """Either "skipped" (why), or the scores of each set; "ms_ssim" for slices of 44 px and
    more; "outline" where there are samples; "per_label" (the same, class by class) in the
    report's top section of a label prior."""

    skipped: NotRequired[str]
    samples: NotRequired[SetScores]  # where there are samples
    reconstructions: NotRequired[SetScores]
    floor: NotRequired[SetScores]  # real train slices: what a perfect model would score
    reference: NotRequired[Reference]  # the real slices the sets are compared with
    ms_ssim: NotRequired[MsSsimSection]
    outline: NotRequired[OutlineSection]  # where there are samples; not per label
    per_label: NotRequired[dict[str, "RealismSection"]]


# -- the whole -----------------------------------------------------------------------------------


class Report(TypedDict):
    run: str
    split: str
    data: str  # DataConfig.source
    kind: str  # DataConfig.kind
    images: int  # slices of the split
    reconstruction: ReconstructionSection
    prior: NotRequired[PriorSection]  # a run with a prior
    samples: NotRequired[SamplesSection]  # a run with a prior
    realism: RealismSection
