"""Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017, https://arxiv.org/abs/1610.06545):
can a small CNN, trained on half of two sets, tell them apart on the other half?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen.realism.images import Device, at_size, check_images, random_flip, seeded

C2ST_SIZE = 64  # the classifier sees 64 px slices: cheap, and enough to see blur and anatomy
CLASSIFIER_STEPS = 300  # Adam steps of the classifier, unless a caller gives its own


class C2ST(NamedTuple):
    accuracy: float  # on the held-out half; 0.5 = indistinguishable
    ci_low: float  # 95% Wilson interval of the accuracy
    ci_high: float
    auc: float  # ROC AUC of the held-out scores
    n_test: int  # held-out slices, half of each class


def group_split(groups: Sequence[str], seed: int, fraction: float = 0.5) -> tuple[Tensor, Tensor]:
    """Indices (train, test) with whole groups (subjects) on one side only; `fraction` of the
    groups, at least one and at most all but one, go to train."""
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(f"groups must name at least 2 distinct groups, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_train = min(max(1, round(fraction * len(names))), len(names) - 1)
    train = {names[i] for i in order[:n_train]}
    in_train = torch.tensor([g in train for g in groups])
    return in_train.nonzero()[:, 0], (~in_train).nonzero()[:, 0]


def _split(n: int, groups: Sequence[str] | None, seed: int) -> tuple[Tensor, Tensor]:
    """By group when there are groups (real slices), else a random half (generated ones)."""
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} images")
        return group_split(groups, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2].sort().values, order[n // 2 :].sort().values


def _balanced(a: Tensor, b: Tensor, idx_a: Tensor, idx_b: Tensor, gen: torch.Generator):
    """Equal numbers of a[idx_a] (label 0) and b[idx_b] (label 1): (x (2n, 1, S, S), y (2n,))."""
    n = min(len(idx_a), len(idx_b))
    pick_a = idx_a[torch.randperm(len(idx_a), generator=gen)[:n]]
    pick_b = idx_b[torch.randperm(len(idx_b), generator=gen)[:n]]
    x = torch.cat([a[pick_a], b[pick_b]])
    return x, torch.cat([torch.zeros(n), torch.ones(n)])


def _classifier(width: int = 16) -> nn.Sequential:
    """Four stride-2 conv stages (64 -> 4 px, receptive field ~47 px) and a linear logit."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for c_in, c_out in ((1, 2), (2, 4), (4, 4), (4, 4)):
        layers += [nn.Conv2d(width * c_in, width * c_out, 3, 2, 1), nn.BatchNorm2d(width * c_out)]
        layers += [nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 4, 1))


def _fit_classifier(x: Tensor, y: Tensor, steps: int, seed: int, device: Device) -> nn.Module:
    """Adam on binary cross-entropy: `steps` batches of 32 in shuffled epochs, random flips.

    The learning rate warms up and anneals (one-cycle, peak 2e-3). At a constant 2e-3 some
    seeds settled on a constant answer (accuracy 0.50 on samples that other seeds told apart
    every time), and the report's C2ST varied by +-0.2 over seeds (bench/RESULTS.md).
    """
    gen = torch.Generator().manual_seed(seed)
    with seeded(seed):
        net = _classifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    epochs = -(-steps * 32 // len(x))  # ceil
    order = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(epochs)])
    for batch in order[: steps * 32].split(32):
        xb = random_flip(x[batch].to(device), gen)
        loss = F.binary_cross_entropy_with_logits(net(xb)[:, 0], y[batch].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return net.eval()


def c2st(
    real: Tensor,
    real_groups: Sequence[str],
    other: Tensor,
    other_groups: Sequence[str] | None,
    seed: int = 0,
    steps: int | None = None,
    device: Device = "cpu",
) -> C2ST:
    """Train a small CNN to tell `other` from `real` on one half of each, score the other half.

    Real slices are split by subject (`real_groups`): split by slice, the CNN would learn the
    subjects instead of realism. `other` is split by `other_groups` when given (another real
    set), else at random (generated slices). Both halves are balanced, so chance is 0.5; but
    with few real subjects the CNN partly learns its training subjects, and the floor moves
    (mni152 test, 8 subjects: ~0.58 against validate, ~0.41 against many-subject train
    slices). The interval is binomial over slices and leaves out that subject-level spread.
    """
    from scipy.stats import binomtest
    from sklearn.metrics import roc_auc_score

    check_images("real", real, 4)
    check_images("other", other, 4)
    real, other = at_size(real, C2ST_SIZE), at_size(other, C2ST_SIZE)
    if real.shape[-2:] != other.shape[-2:]:
        raise ValueError(f"real and other differ in size: {real.shape[-2:]} and {other.shape[-2:]}")
    real_train, real_test = _split(len(real), real_groups, seed)
    other_train, other_test = _split(len(other), other_groups, seed + 1)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = _balanced(real, other, real_train, other_train, gen)
    x_test, y_test = _balanced(real, other, real_test, other_test, gen)
    steps = CLASSIFIER_STEPS if steps is None else steps
    net = _fit_classifier(x_train, y_train, steps, seed, device)
    with torch.no_grad():
        scores = torch.cat([net(b.to(device))[:, 0].cpu() for b in x_test.split(256)])
    hits = int(((scores > 0) == y_test.bool()).sum())
    ci = binomtest(hits, len(y_test)).proportion_ci(0.95, method="wilson")
    auc = float(roc_auc_score(y_test.numpy(), scores.numpy()))
    return C2ST(hits / len(y_test), float(ci.low), float(ci.high), auc, len(y_test))


def real_floor(images: Tensor, groups: Sequence[str], seed: int = 0, **kwargs: Any) -> C2ST:
    """The C2ST between two disjoint halves of one real set, split by subject: what `c2st`
    scores when the other set is as real as can be. For generated samples the closer floor is
    c2st(real, real_groups, train_slices, train_subjects): many subjects, as samples have."""
    half_a, half_b = group_split(groups, seed)
    groups_a, groups_b = [groups[i] for i in half_a], [groups[i] for i in half_b]
    return c2st(images[half_a], groups_a, images[half_b], groups_b, seed, **kwargs)
