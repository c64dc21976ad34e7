"""Realism of generated slices, from plain tensors: (N, 1, S, S) float images in [0, 1].

Whole-image SSIM cannot see blur on a black background, so the report scores samples with:

    c2st(real, real.subjects, fake, None, seed)   # can a small CNN tell them apart? 0.5 = no
    c2st(real, real.subjects, recon, None, seed, paired=True, scale=2)   # recon[i] from real[i]
    net = cached_feature_net(train_set, key)      # trained on the train split, never downloaded
    feature_distances(extract_features(net, real), extract_features(net, fake))
                                                  # KID, FID, precision/recall/density/coverage
    sharpness_ratio(fake, real)                   # high-frequency energy; blur < 1 < noise
    ms_ssim_diversity(fake)                       # mean MS-SSIM of random pairs; high = alike
    outline.rarity(outline.outline_features(fake), levels, real_outline, real.positions)
                                                  # pieces, holes, solidity rare at that level

Each figure means something only beside the same figure for two disjoint real sets of the data
(`real_floor`, or c2st/feature_distances between the test split and train slices). `perturb`
holds known defects (blur, holes, ...) to test that a measure sees them. Everything is
seeded and repeatable; compute runs on the CPU unless a `device` is given.
"""

from vqgen.realism.diversity import MS_SSIM_BETAS, ms_ssim_diversity
from vqgen.realism.features import (
    FeatureNet,
    FeatureNetConfig,
    cached_feature_net,
    extract_features,
    feature_distances,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)
from vqgen.realism.spectrum import (
    Spectrum,
    power_spectrum,
    radial_power_spectrum,
    sharpness_ratio,
)
from vqgen.realism.two_sample import (
    C2ST,
    HeldOut,
    assign_folds,
    c2st,
    c2st_summary,
    held_out_scores,
    real_floor,
)

__all__ = [
    "C2ST",
    "MS_SSIM_BETAS",
    "FeatureNet",
    "FeatureNetConfig",
    "HeldOut",
    "Spectrum",
    "assign_folds",
    "c2st",
    "c2st_summary",
    "cached_feature_net",
    "extract_features",
    "feature_distances",
    "held_out_scores",
    "load_feature_net",
    "ms_ssim_diversity",
    "power_spectrum",
    "radial_power_spectrum",
    "real_floor",
    "save_feature_net",
    "sharpness_ratio",
    "train_feature_net",
]
