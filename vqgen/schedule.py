"""How long training runs and in what order: the learning-rate schedule, each epoch's batches,
and the plan: the steps a run takes, which a time budget may cut.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DistributedSampler

from vqgen import distributed
from vqgen.config import TrainConfig
from vqgen.errors import UsageError

RATE_PROBE_STEPS = 20  # steps timed before fitting the schedule to --max-minutes
FIT_SHARE = 0.95  # of the time left that a fit plans steps for: the rest is for the last save
UNBOUNDED_STEPS = 10**9  # the plan of a run limited by time alone, until the probe


def learning_rate(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    warmup = min(cfg.warmup_steps, max(total // 10, 1))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """This process's share of every batch of one epoch of range(n).

    A seeded shuffle, the same for the same (seed, epoch), cut into global batches of
    `batch_size`; under torchrun each of the W ranks gets batch_size / W samples of each batch
    (DistributedSampler), so the steps are those of a single process.
    """
    world = distributed.world_size()
    if batch_size % world:
        raise UsageError(f"--batch-size {batch_size} is not divisible by the {world} processes")
    sampler = DistributedSampler(
        range(n), num_replicas=world, rank=distributed.rank(), seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    batches = list(BatchSampler(sampler, batch_size // world, drop_last=False))
    if len(batches) > 1 and len(batches[-1]) < batch_size // world:
        batches.pop()  # a ragged last batch would give the epoch's noisiest step
    return batches


def planned_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Steps until the first of --epochs and --max-steps; a time limit is fitted later."""
    limits = [UNBOUNDED_STEPS]
    if cfg.epochs is not None:
        limits.append(steps_per_epoch * cfg.epochs)
    if cfg.max_steps is not None:
        limits.append(cfg.max_steps)
    return min(limits)


def resume_settings(stored: TrainConfig, state: dict[str, Any], **given: Any) -> TrainConfig:
    """The settings a run continues with: its own `stored` ones with the `given` device and
    time budget. A run limited by time alone continues to the steps its budget
    fitted (its train state's `state`), which become its --max-steps: it ends without a new
    --max-minutes."""
    if stored.epochs is None and stored.max_steps is None:
        fitted = state.get("fitted")
        given["max_steps"] = fitted if fitted is not None else state["total"]
    return dataclasses.replace(stored, **given)


def steps_left(cfg: TrainConfig, state: dict[str, Any]) -> bool:
    """Whether a run stopped where its train state's `state` says has steps left under its
    settings `cfg` (those of `resume_settings`): the end `Plan` continues to."""
    if cfg.epochs is not None and state["epoch"] >= cfg.epochs:
        return False
    return cfg.max_steps is None or state["step"] < cfg.max_steps


class TimeBudget:
    """--max-minutes: after a few timed steps, the plan is cut to the steps that fit the time
    left, and fitted again after 2x, 4x, ... as many steps, from the rate over all of them
    (validations included): a probe slowed by a passing load must not cut the run short for
    good, and the last fit, with half the run behind it, leaves little time unused. Each fit
    plans for FIT_SHARE of the time left. Past the limit the run validates and saves."""

    def __init__(self, minutes: float | None, start_step: int, plan: int) -> None:
        self.seconds = None if minutes is None else 60.0 * minutes
        self.started = self.probe_started = time.perf_counter()
        self.start_step = start_step
        self.plan = plan  # the steps planned without the budget: never fitted beyond

    def spent(self) -> bool:
        return self.seconds is not None and time.perf_counter() - self.started > self.seconds

    def fitted_total(self, step: int) -> int | None:
        """The plan that fits, at the end of each probe; None at every other step."""
        if self.seconds is None:
            return None
        done = step - self.start_step
        now = time.perf_counter()
        if done == RATE_PROBE_STEPS // 4:
            self.probe_started = now  # the first steps are slow: time the ones after
        if done < RATE_PROBE_STEPS or not _probe_end(done):
            return None
        per_step = (now - self.probe_started) / (done - RATE_PROBE_STEPS // 4)
        fits = step + int(FIT_SHARE * (self.seconds - (now - self.started)) / per_step)
        return max(step, min(self.plan, fits))


def _probe_end(done: int) -> bool:
    """Whether `done` steps is RATE_PROBE_STEPS times a power of 2."""
    ratio, rest = divmod(done, RATE_PROBE_STEPS)
    return rest == 0 and ratio & (ratio - 1) == 0


class Plan:
    """The length of one run: `total`, the steps it takes. It starts as the first of --epochs
    and --max-steps; with --max-minutes, the time budget fits it to the measured rate (the
    least of every rank's fit, so that all stop together), and past the limit it ends at the
    current step. `fitted` is the budget's latest fit: what a resumed run limited by time
    alone continues to."""

    def __init__(self, cfg: TrainConfig, train_size: int, stage: str, device: torch.device):
        self.cfg, self.device = cfg, device
        self.steps_per_epoch = len(epoch_batches(train_size, cfg.batch_size, cfg.seed, 0))
        if self.steps_per_epoch == 0:
            raise UsageError(f"the {stage} training set is empty")
        self.total = planned_steps(cfg, self.steps_per_epoch)
        self.fitted: int | None = None
        self.budget: TimeBudget | None = None  # from `start`

    def resume(self, total: int, fitted: int | None) -> None:
        """Continue a run that stopped with these `total` and `fitted`: to its --epochs or
        --max-steps, or for a run limited by time alone to the steps its budget fitted."""
        self.fitted = fitted
        if self.total >= UNBOUNDED_STEPS:
            self.total = fitted if fitted is not None else total

    def start(self, step: int) -> None:
        """Start the clock at `step`."""
        self.budget = TimeBudget(self.cfg.max_minutes, step, self.total)

    def out_of_time(self) -> bool:
        assert self.budget is not None, "Plan.start first"
        return self.budget.spent()

    def after_step(self, step: int, out_of_time: bool) -> None:
        """Refit the plan where the budget measured a rate; end it now if time ran out (on any
        rank: `out_of_time` is agreed)."""
        assert self.budget is not None, "Plan.start first"
        fitted = self.budget.fitted_total(step)
        if fitted is not None:
            self.total = self.fitted = distributed.min_int(fitted, self.device)
        if out_of_time:
            self.total = step  # validate and save now

    def done(self, step: int) -> bool:
        return step >= self.total

    def known_total(self) -> int | None:
        """The steps planned, or None while a run limited by time alone has not fitted its
        budget yet (what a progress line shows as '?')."""
        return None if self.total >= UNBOUNDED_STEPS else self.total


@dataclass
class LoopState:
    """Where training stands; saved in the train state for --resume."""

    step: int = 0
    epoch: int = 0
    skip: int = 0  # steps of `epoch` already taken

    def where(self, total: int | None) -> str:
        """e.g. 'epoch 2 step 130/400': epochs counted from 1, a partial one as begun; 'step
        10/?' while the total is unknown (a time budget not yet fitted)."""
        epoch = self.epoch + (1 if self.skip else 0)
        return f"epoch {max(epoch, 1)} step {self.step}/{'?' if total is None else total}"
