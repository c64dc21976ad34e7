"""Two changes to how the prior trains, tried and not kept (bench/RESULTS.md, "Two tricks for
a young prior"), applied as patches before bench/prior_variants.py or bench/demo_variants.py:

    .venv/bin/python bench/prior_tricks.py TRICK prior_variants RUN OUT --seeds 0,1
    .venv/bin/python bench/prior_tricks.py TRICK demo_variants RUN [--seed 1]

TRICK is `codebook` (each level's code embedding starts as a random projection of that
level's standardised codebook, so codes that decode alike start alike), `corrupt=R` (a share R
of the input codes is replaced by random codes while the targets stay clean, so the prior
learns to recover from its own sampling errors) or `none` (the scripts as they are).
"""

from __future__ import annotations

import importlib
import sys

import torch

import vqgen.train_prior as train_prior
from vqgen.models import prior_levels
from vqgen.models.vqvae import VQVAE


def embed_like_codebook(prior: torch.nn.Module, vqvae: VQVAE) -> torch.nn.Module:
    """Set each level's code embedding to its codebook, standardised and projected at random
    to the prior's channels (entries of about N(0, 1), as a fresh nn.Embedding's)."""
    for level, quantizer in zip(prior_levels(prior), vqvae.quantizers, strict=True):
        book = quantizer.codebook.detach().float().cpu()
        book = (book - book.mean(0)) / book.std(0).clamp_min(1e-8)
        projection = torch.randn(book.shape[1], level.cfg.channels) / book.shape[1] ** 0.5
        with torch.no_grad():
            level.embedding.weight.copy_(book @ projection)
    return prior


def patch_codebook() -> None:
    """Start every prior that train_prior builds from its run's VQ-VAE's codebook."""
    load_vqvae, build_prior = train_prior.checkpoint.load_vqvae, train_prior.build_prior
    loaded: list[VQVAE] = []

    def remember(*args, **kwargs):
        vqvae, meta = load_vqvae(*args, **kwargs)
        loaded.append(vqvae)
        return vqvae, meta

    train_prior.checkpoint.load_vqvae = remember  # train_prior loads its VQ-VAE first
    train_prior.build_prior = lambda *a: embed_like_codebook(build_prior(*a), loaded[-1])


def patch_corrupt(rate: float) -> None:
    """Train on inputs with a share `rate` of their codes replaced at random."""
    logits_of = train_prior.level_logits

    def noisy_logits(prior, codes, cond, drop=None):
        if prior.training:
            K = prior.cfg.codebook_size
            hit = [torch.rand_like(c, dtype=torch.float) < rate for c in codes]
            codes = [
                torch.where(h, torch.randint_like(c, K), c) for h, c in zip(hit, codes, strict=True)
            ]
        return logits_of(prior, codes, cond, drop)

    train_prior.level_logits = noisy_logits  # prior_step's targets stay the clean codes


def main() -> None:
    trick, script, *args = sys.argv[1:]
    if trick == "codebook":
        patch_codebook()
    elif trick.startswith("corrupt="):
        patch_corrupt(float(trick.removeprefix("corrupt=")))
    elif trick != "none":
        sys.exit(f"unknown trick {trick!r}: codebook, corrupt=R or none")
    print(f"# trick: {trick}")
    sys.argv = [script, *args]
    importlib.import_module(script).main()


if __name__ == "__main__":
    main()
