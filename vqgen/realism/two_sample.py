"""Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017, https://arxiv.org/abs/1610.06545):
can a small CNN tell two sets of slices apart on subjects it never saw?

    c2st(real, real.subjects, samples, None)               # samples: their own random folds
    c2st(real, real.subjects, recon, None, paired=True)     # recon[i] is made from real[i]
    c2st(real, real.subjects, recon, None, paired=True, scale=2)   # after a 2x average-pool
    full, half = held_out_scores(real, real.subjects, samples, None, scales=(1, 2))
    c2st_summary(half, keep)        # from every slice's held-out score: the C2ST of a part

k-fold cross-validation by subject: each fold's classifier trains on the other folds (early
stopped on a fifth of their subjects) and scores its own fold, so every slice is scored once,
by a classifier that never saw its subject. A set derived from the real slices (`paired`) goes
to the folds with its real subjects: a perfect reconstruction then scores 0.5, never below.
At full scale the classifier sees noise and texture; after a 2x pool (`scale=2`), anatomy.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen.device import autocast
from vqgen.realism.images import Device, at_size, check_images, random_flip, seeded

MAX_SIDE = 128  # larger slices are area-resized to this first: the cost grows with the area
FOLDS = 3  # outer folds by subject
VALIDATION_FOLDS = 5  # a fifth of each training part's subjects early-stops the classifier
ROUND_SLICES = 1024  # 64 px slices per round of training, half of each set; then it validates
MAX_ROUNDS = 12
PATIENCE = 2  # rounds without a better validation loss before training stops
MIN_GAIN = 0.02  # nats of validation loss that count as better
BATCH = 64
RECALIBRATION_SLICES = 256  # training slices that set the batch-norm statistics each round
LR = 3e-3
_INIT_LOCK = threading.Lock()  # the classifiers' seeded init uses torch's global generator

T = TypeVar("T")


class C2ST(NamedTuple):
    accuracy: float  # balanced accuracy over all slices, each scored once; 0.5 = alike
    ci_low: float  # 95% interval of the accuracy, subjects as clusters (_interval)
    ci_high: float
    accuracy_std: float  # spread of the folds' accuracies
    auc: float  # ROC AUC of all the held-out scores
    auc_std: float  # spread of the folds' AUCs
    n_real: int  # slices scored, of each set
    n_other: int
    folds: int
    rounds: float  # mean rounds of ROUND_SLICES of the folds' kept classifiers
    side: int  # pixels of the slices the classifier saw


def assign_folds(groups: Sequence[str], k: int, seed: int) -> Tensor:
    """The fold (0..k-1) of each item, whole groups (subjects) in one fold: groups in a seeded
    order, largest first, each to the fold that holds the fewest items so far."""
    counts = Counter(groups)
    if len(counts) < k:
        raise ValueError(f"groups must name at least {k} distinct groups, got {len(counts)}")
    names = sorted(counts)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    fold_of, sizes = {}, [0] * k
    for name in sorted(shuffled, key=lambda n: -counts[n]):  # stable: ties keep the seeded order
        fold = int(np.argmin(sizes))
        fold_of[name], sizes[fold] = fold, sizes[fold] + counts[name]
    return torch.tensor([fold_of[g] for g in groups])


DETAIL_GAIN = 8.0


def with_detail(x: Tensor) -> Tensor:
    """(N, 1, S, S) -> (N, 2, S, S): the slice beside its fine detail (the slice minus its 3x3
    mean, amplified): noise and texture are a few grey levels, which the first layer would
    otherwise find only slowly beside the brain's contrast. Made once per C2ST, not in every
    batch of every round: it commutes with the left-right flips of training."""
    detail = x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return torch.cat([x, DETAIL_GAIN * detail], 1)


def _classifier(width: int = 16) -> nn.Sequential:
    """On `with_detail`'s two channels: a 4x4 stride-2 conv that sees every pixel (noise,
    texture), then four stride-2 stages (receptive field ~90 px) and a linear logit over the
    pooled features."""
    layers: list[nn.Module] = [nn.Conv2d(2, width, 4, 2, 1), nn.ReLU()]
    for c_in, c_out in ((1, 2), (2, 4), (4, 4), (4, 4)):
        layers += [nn.Conv2d(width * c_in, width * c_out, 3, 2, 1), nn.BatchNorm2d(width * c_out)]
        layers += [nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 4, 1))


def _logits(net: nn.Module, x: Tensor, device: Device) -> Tensor:
    with torch.no_grad():
        return torch.cat([net(b.to(device))[:, 0].cpu() for b in x.split(256)])


def _mean_bce(logits: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy with each class weighing half, however many slices it has."""
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return torch.stack([loss[y == c].mean() for c in (0, 1) if (y == c).any()]).mean()


def _balanced_stream(y: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """`n` indices into `y`, half of each class, alternating: each class's slices in shuffled
    passes, so a small class is seen as often as a large one and every slice comes round."""
    picks = []
    for cls in (0, 1):
        idx = (y == cls).nonzero()[:, 0]
        passes = -(-(n // 2) // len(idx))
        order = torch.cat([idx[torch.randperm(len(idx), generator=gen)] for _ in range(passes)])
        picks.append(order[: n // 2])
    return torch.stack(picks, 1).flatten()


def _fit(
    train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], seed: int, device: Device
) -> tuple[nn.Module, int]:
    """Adam on cross-entropy over batches drawn half from each class, with random flips,
    validated after each round of ROUND_SLICES slices (more where they are smaller), until
    the class-balanced validation loss has not improved by MIN_GAIN for PATIENCE rounds, or
    the net tells every validation slice apart at its lowest validation loss yet; returns the
    net of the round with the lowest validation loss, and that round."""
    (x, y), (x_val, y_val) = train, val
    gen = torch.Generator().manual_seed(seed)
    with _INIT_LOCK, seeded(seed):
        net = _classifier().to(device, memory_format=torch.channels_last)
    fused = torch.device(device).type in ("cpu", "cuda")  # one kernel for every parameter
    opt = torch.optim.Adam(net.parameters(), lr=LR, fused=fused or None)
    per_round = ROUND_SLICES * max(1, 64 // x.shape[-1])  # more of smaller slices
    best, best_state, kept, gained = float("inf"), copy.deepcopy(net.state_dict()), 0, 0
    for round_ in range(1, MAX_ROUNDS + 1):
        net.train()
        for batch in _balanced_stream(y, per_round, gen).split(BATCH):
            xb = random_flip(x[batch].to(device), gen)
            with autocast(device):  # trains in bf16 where the device computes it natively
                logits = net(xb.contiguous(memory_format=torch.channels_last))[:, 0]
            loss = _mean_bce(logits.float(), y[batch].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        _recalibrate(net, x[_balanced_stream(y, RECALIBRATION_SLICES, gen)], device)
        val_logits = _logits(net, x_val, device)
        val_loss = float(_mean_bce(val_logits, y_val))
        if val_loss < best - MIN_GAIN:
            gained = round_
        if val_loss < best:
            best, best_state, kept = val_loss, copy.deepcopy(net.state_dict()), round_
        told_apart = balanced_accuracy(val_logits, y_val) == 1.0 and val_loss == best
        if told_apart or round_ - gained >= PATIENCE:  # every validation slice right: no more
            break  # to show (docs/decisions.md, c2st-told-apart)
    net.load_state_dict(best_state)
    return net.eval(), kept


def _recalibrate(net: nn.Module, x: Tensor, device: Device) -> None:
    """Batch-norm statistics of the net as it is now, averaged over `x`, then eval mode. The
    running averages of training lag behind weights that still change fast: with them, whole
    validation folds came out as one class for the first epochs."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for batch in x.split(256):
            net(batch.to(device))
    for m in norms:
        m.momentum = 0.1
    net.eval()


def balanced_accuracy(scores: Tensor, y: Tensor) -> float:
    """Mean of the two classes' hit rates (logit > 0 means "other"): 0.5 = chance."""
    hits = (scores > 0) == y.bool()
    return float((hits[y == 0].float().mean() + hits[y == 1].float().mean()) / 2)


def _interval(scores: Tensor, y: Tensor, groups: Sequence[str]) -> tuple[float, float]:
    """95% interval of the balanced accuracy, with subjects as clusters. A subject's slices
    are right or wrong together far more often than independent slices would be, so an
    interval binomial over slices is too narrow: real against real strayed to 0.44 with a
    binomial interval of +-0.02 (docs/decisions.md, c2st-interval). Each class's hit rate
    takes the larger of its cluster-robust variance and its binomial one (Agresti-Coull, so
    that a perfect score still has a width)."""
    hits = ((scores > 0) == y.bool()).float()
    variance = 0.0
    for cls in (0, 1):
        mine = (y == cls).nonzero()[:, 0]
        n, rate = len(mine), float(hits[mine].mean())
        names = [groups[int(i)] for i in mine]
        index = {name: j for j, name in enumerate(dict.fromkeys(names))}
        cluster = torch.tensor([index[name] for name in names])
        h = torch.zeros(len(index)).index_add_(0, cluster, hits[mine])
        m = torch.zeros(len(index)).index_add_(0, cluster, torch.ones(n))
        clustered = float(((h - rate * m) ** 2).sum()) / n**2 * len(index) / max(len(index) - 1, 1)
        p = (float(hits[mine].sum()) + 2) / (n + 4)
        variance += max(clustered, p * (1 - p) / (n + 4))
    accuracy, half_width = balanced_accuracy(scores, y), 1.96 * variance**0.5 / 2
    return max(0.0, accuracy - half_width), min(1.0, accuracy + half_width)


def _auc(scores: Tensor, y: Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y.numpy(), scores.numpy()))


def _prepare(x: Tensor, scale: int) -> Tensor:
    x = at_size(x, MAX_SIDE)
    return F.avg_pool2d(x, scale) if scale > 1 else x


class HeldOut(NamedTuple):
    """Every slice's held-out score from `held_out_scores`: `c2st_summary` scores the two
    sets, or any part of them (one label's slices), from these without training again."""

    scores: Tensor  # (N,) logit of "other", from the fold's classifier that never saw the slice
    y: Tensor  # (N,) 0 real, 1 other
    fold: Tensor  # (N,) the slice's fold
    groups: list[str]  # the slice's subject ("real:NAME", "other:NAME"), the interval's clusters
    rounds: list[int]  # each fold's kept rounds of ROUND_SLICES
    side: int  # pixels of the slices the classifiers saw


def c2st(
    real: Tensor,
    real_groups: Sequence[str],
    other: Tensor,
    other_groups: Sequence[str] | None,
    seed: int = 0,
    *,
    paired: bool = False,
    scale: int = 1,
    device: Device = "cpu",
) -> C2ST:
    """Cross-validated C2ST of `other` against `real`, in FOLDS folds by subject.

    Real slices are grouped by `real_groups`: split by slice, the classifier would learn the
    subjects instead of realism. `other` is grouped by `other_groups` (another real set), by
    `real_groups` when `paired` (other[i] derived from real[i]: it shares real[i]'s fold), or
    else slice by slice (generated slices). The sets may differ in size: the loss weighs the
    classes equally and the accuracy is balanced, so chance is 0.5. `scale` average-pools the
    slices first (2: anatomy without the finest texture).
    """
    args = (real, real_groups, other, other_groups, seed)
    return c2st_summary(held_out_scores(*args, paired=paired, scales=(scale,), device=device)[0])


def held_out_scores(
    real: Tensor,
    real_groups: Sequence[str],
    other: Tensor,
    other_groups: Sequence[str] | None,
    seed: int = 0,
    *,
    paired: bool = False,
    scales: Sequence[int] = (1,),
    device: Device = "cpu",
) -> list[HeldOut]:
    """`c2st`'s classifiers, one per fold at each of `scales`, and every slice's score by the
    one that never saw its subject: real slices first, then `other`'s, each in its given
    order. Every classifier of every scale trains side by side (`side_by_side`)."""
    other_groups = _checked_groups(real, real_groups, other, other_groups, paired)
    k = min(FOLDS, len(set(real_groups)), len(set(other_groups)))
    real_fold = assign_folds(real_groups, k, seed)
    other_fold = real_fold if paired else assign_folds(other_groups, k, seed + 1)
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(other))])
    fold = torch.cat([real_fold, other_fold])
    groups = [f"real:{g}" for g in real_groups] + [
        f"{'real' if paired else 'other'}:{g}" for g in other_groups
    ]
    tasks, sides = [], []
    for scale in scales:
        a, b = _prepare(real, scale), _prepare(other, scale)
        if a.shape[-2:] != b.shape[-2:]:
            raise ValueError(f"real and other differ in size: {a.shape[-2:]} and {b.shape[-2:]}")
        x = with_detail(torch.cat([a, b])).contiguous(memory_format=torch.channels_last)
        sides.append(int(a.shape[-1]))
        for f in range(k):
            train, held = (fold != f).nonzero()[:, 0], (fold == f).nonzero()[:, 0]
            fit, val = _validation_split(train, y, groups, seed + 10 * f)
            tasks.append(_fold_task(x, y, fit, val, held, seed + f, device))
    done = side_by_side(tasks, device)
    results = []
    for i, side in enumerate(sides):
        scores, rounds = torch.zeros(len(y)), []
        for f in range(k):
            held_scores, n_rounds = done[i * k + f]
            scores[fold == f] = held_scores
            rounds.append(n_rounds)
        results.append(HeldOut(scores, y, fold, groups, rounds, side))
    return results


def _fold_task(
    x: Tensor, y: Tensor, fit: Tensor, val: Tensor, held: Tensor, seed: int, device: Device
) -> Callable[[], tuple[Tensor, int]]:
    """One fold's work: train on `fit` (early stopped on `val`), then score `held`."""

    def task() -> tuple[Tensor, int]:
        net, rounds = _fit((x[fit], y[fit]), (x[val], y[val]), seed, device)
        return _logits(net, x[held], device), rounds

    return task


def side_by_side(tasks: list[Callable[[], T]], device: Device) -> list[T]:
    """The tasks' results in order. On a CPU they run as many at a time as torch has threads,
    each on one thread: a small classifier gains little from a second thread and a second
    classifier nearly twice (docs/decisions.md, c2st-side-by-side); every task then computes
    alike on any CPU, however many cores it has. On a GPU, one after another."""
    if torch.device(device).type != "cpu":
        return [task() for task in tasks]
    threads = torch.get_num_threads()

    def one_thread(task: Callable[[], T]) -> T:
        torch.set_num_threads(1)  # this worker's own; torch keeps it per thread
        return task()

    pool = ThreadPoolExecutor(min(threads, len(tasks)), thread_name_prefix="c2st")
    try:
        return list(pool.map(one_thread, tasks))
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C: start no more
        torch.set_num_threads(threads)  # a thread started later takes torch's last setting


def c2st_summary(held: HeldOut, keep: Tensor | None = None) -> C2ST:
    """The C2ST of the slices where the boolean `keep` (N,) is set (default all), from their
    held-out scores: each was scored by a classifier that never saw its subject, so any part
    of the two sets scores 0.5 in expectation where its real and other slices are alike. A
    fold without slices of both classes in the part has no accuracy or AUC of its own."""
    keep = torch.ones(len(held.y), dtype=torch.bool) if keep is None else keep
    scores, y, fold = held.scores[keep], held.y[keep], held.fold[keep]
    n_other = int(y.sum())
    if not 0 < n_other < len(y):
        raise ValueError(f"a C2ST needs slices of both sets, got {len(y) - n_other} and {n_other}")
    groups = [g for g, kept in zip(held.groups, keep.tolist(), strict=True) if kept]
    accuracies, aucs = [], []
    for f in fold.unique().tolist():
        mine = fold == f
        if 0 < int(y[mine].sum()) < int(mine.sum()):
            accuracies.append(balanced_accuracy(scores[mine], y[mine]))
            aucs.append(_auc(scores[mine], y[mine]))
    low, high = _interval(scores, y, groups)
    return C2ST(
        balanced_accuracy(scores, y),
        low,
        high,
        float(np.std(accuracies)),
        _auc(scores, y),
        float(np.std(aucs)),
        len(y) - n_other,
        n_other,
        len(held.rounds),
        float(np.mean(held.rounds)),
        held.side,
    )


def _checked_groups(
    real: Tensor,
    real_groups: Sequence[str],
    other: Tensor,
    other_groups: Sequence[str] | None,
    paired: bool,
) -> Sequence[str]:
    """`other`'s groups as c2st uses them (real's when paired, one per slice when none),
    after checking both sets."""
    check_images("real", real, 4)
    check_images("other", other, 4)
    if len(real_groups) != len(real):
        raise ValueError(f"real_groups has {len(real_groups)} entries for {len(real)} images")
    if paired:
        if len(other) != len(real):
            raise ValueError(f"paired sets differ in size: {len(real)} and {len(other)}")
        return real_groups
    if other_groups is None:
        return [str(i) for i in range(len(other))]
    if len(other_groups) != len(other):
        raise ValueError(f"other_groups has {len(other_groups)} entries for {len(other)} images")
    return other_groups


def _validation_split(
    items: Tensor, y: Tensor, groups: Sequence[str], seed: int
) -> tuple[Tensor, Tensor]:
    """`items` as (fit, validate): per class, a fifth of its groups validate, or a fifth of its
    slices where the class has a single group here."""
    is_val = torch.zeros(len(items), dtype=torch.bool)
    for cls in (0, 1):
        mine = (y[items] == cls).nonzero()[:, 0]
        if len(mine) < 2:  # a single slice trains; the other class validates alone
            continue
        names = [groups[int(items[i])] for i in mine]
        if len(set(names)) < 2:
            names = [str(i) for i in range(len(mine))]
        k = min(VALIDATION_FOLDS, len(set(names)))
        is_val[mine] = assign_folds(names, k, seed + cls) == 0
    return items[~is_val], items[is_val]


def real_floor(images: Tensor, groups: Sequence[str], seed: int = 0, **kwargs: Any) -> C2ST:
    """The C2ST between two disjoint halves of one real set, split by subject: what `c2st`
    scores when the other set is as real as can be."""
    half = assign_folds(groups, 2, seed) == 0
    a, b = half.nonzero()[:, 0], (~half).nonzero()[:, 0]
    groups_a, groups_b = [groups[i] for i in a], [groups[i] for i in b]
    return c2st(images[a], groups_a, images[b], groups_b, seed, **kwargs)
