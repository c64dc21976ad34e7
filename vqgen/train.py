"""The training loop shared by both stages.

    stage = Stage("vqvae", model, train_set, step=loss.step, validate=..., monitor="val_ssim", ...)
    result = fit(stage, TrainConfig(epochs=10), RunDir(path), device, resume=False)

`fit` is the loop; the pieces it calls each do one job:
    Trainer       the model, its optimisers (vqgen.optim) and moving average, one step
    Plan          how many steps the run takes (vqgen.schedule: epochs, steps, time budget)
    Checkpointer  save the last and the best, restore for --resume (vqgen.checkpointer)
    Reporter      the progress bar or plain log lines, and the JSONL metrics log
                  (vqgen.progress)

`fit` runs AdamW (for a prior's gated blocks Muon, vqgen.optim) with a warm-up then cosine
learning rate, gradient clipping and bf16 autocast where the device computes bf16 natively
(CUDA, recent x86 CPUs); with `cfg.ema`, keeps a moving average of the model's weights, which
is then what is validated and saved; shows a rich progress bar; validates after every epoch;
keeps the best checkpoint (by `stage.monitor`) and the last one, with a train state
(optimisers, step, RNG) so that `resume=True` continues exactly where it stopped. Ctrl-C (or
SIGTERM) stops at the next check, saves and exits cleanly; a NaN or infinite loss stops with an
error naming its step and leaves the last good checkpoint untouched. Under torchrun the same
loop runs on every rank with DDP (see vqgen.distributed).

The host stays out of the device's way: the train split lives on the device as it is stored
(uint8 slices, int16 codes) and each epoch's batch order is copied there once; a step reads no
number back. Every `log_every` steps (and at an epoch's end) one check reads the steps' losses
and gradient norms, the logged scalars, the stop request and the time budget, agreed by every
rank; on a GPU that is the only time the host waits for the device.
"""

from __future__ import annotations

import copy
import itertools
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from vqgen import checkpoint, distributed
from vqgen.checkpointer import Checkpointer, Diverged
from vqgen.config import TrainConfig, load_config
from vqgen.device import autocast, computes_bf16, for_device, resolve_device
from vqgen.errors import Interrupted, TrainingError
from vqgen.inference import note
from vqgen.live import LiveLog
from vqgen.optim import build_optimizers, lr_scales
from vqgen.progress import Reporter
from vqgen.rundir import RunDir
from vqgen.schedule import (
    LoopState,
    Plan,
    epoch_batches,
    learning_rate,
    resume_settings,
    steps_left,
)

# images (B, ...) or each code level's grids [(B, h, w), ...], labels (B,), positions (B,)
Batch = tuple[Tensor | list[Tensor], Tensor, Tensor]
# (model as the step calls it, DDP-wrapped; batch; step) -> (loss, scalars to log: 0-d tensors
# left on the device, read only at a check)
StepFn = Callable[[nn.Module, Batch, int], tuple[Tensor, dict[str, Tensor]]]


class TrainSet(Protocol):
    """A train split that can live on the device and give a batch there (SliceDataset,
    inference.CodeSet)."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device) -> TrainSet: ...

    def batch(self, index: Tensor) -> Batch: ...


@dataclass
class Stage:
    """What `fit` needs to know about one stage."""

    name: str  # "vqvae" or "prior": names the checkpoint files
    model: nn.Module  # what is validated and saved as <name>.safetensors
    train_set: TrainSet
    step: StepFn
    validate: Callable[[nn.Module], dict[str, float]]  # model -> validation metrics
    monitor: str  # validation metric that picks the best checkpoint
    higher_is_better: bool
    meta: dict[str, Any]  # resolved configs, written beside the weights
    after_epoch: Callable[[nn.Module], None] | None = None  # e.g. refresh figures
    # images for the live log each epoch, (N, C, H, W) in [0, 1] drawn in two rows: e.g.
    # validate slices over their reconstructions
    preview: Callable[[nn.Module], Tensor] | None = None


@dataclass
class FitResult:
    best: float
    last: dict[str, float]
    step: int
    epoch: int
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)


class StopFlag:
    """Turns the first SIGINT (Ctrl-C) or SIGTERM (a scheduler, torchrun) into a request to
    stop after the current step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class Agreed(NamedTuple):
    """What a check found, the same on every rank."""

    stop: bool
    out_of_time: bool
    scalars: dict[str, float]  # the checked step's, averaged over ranks


def resumed_config(stage: str, cfg: TrainConfig, run: RunDir) -> TrainConfig:
    """The run's own training settings; only the device and time budget are new."""
    stored = checkpoint.read_meta(run, stage, last=True).get("train")
    if isinstance(stored, dict) and "bf16" not in stored:  # from before --bf16: bf16 on CUDA only
        stored = {**stored, "bf16": resolve_device(cfg.device).type == "cuda"}
    if isinstance(stored, dict):  # DataLoader workers, before the data lived on the device
        stored = {k: v for k, v in stored.items() if k != "workers"}
    stored = load_config(TrainConfig, stored, f"{run.meta(stage, last=True)} 'train'")
    state = checkpoint.train_state_info(run, stage)
    given = {"device": cfg.device, "max_minutes": cfg.max_minutes}
    given["tensorboard"] = cfg.tensorboard
    return resume_settings(stored, state, **given)


def resume_trains(stage: str, cfg: TrainConfig, run: RunDir) -> bool:
    """Whether --resume has steps left to train, and so changes the stage's weights."""
    return steps_left(resumed_config(stage, cfg, run), checkpoint.train_state_info(run, stage))


def epoch_order(n: int, cfg: TrainConfig, epoch: int, skip: int, device: torch.device) -> Tensor:
    """This rank's batches of an epoch from its `skip`-th on, as one (steps, batch) index tensor
    on the device: one copy an epoch, none a step."""
    batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch)[skip:]
    return torch.tensor(batches, dtype=torch.long).to(device, non_blocking=True)


def fit(
    stage: Stage, cfg: TrainConfig, run: RunDir, device: torch.device, resume: bool = False
) -> FitResult:
    """Train `stage.model` on `device` (this rank's, from
    `distributed.init`); see the module docstring."""
    if resume:
        cfg = resumed_config(stage.name, cfg, run)
    cfg, chosen = for_device(cfg, device.type)
    run.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(stage, cfg, device)
    precision = "bf16 autocast" if trainer.bf16 else "float32"
    note(f"{stage.name}: {chosen}, {precision} on {device}")
    plan = Plan(cfg, len(trainer.data), stage.name, device)
    keeper = Checkpointer(run, stage, cfg, trainer)
    board = LiveLog.open(run.live_log(stage.name), cfg.tensorboard)
    report = Reporter(stage.name, run.metrics_log(stage.name), cfg.log_every, board)
    state = keeper.restore(plan) if resume else LoopState()
    report.begin(state.step if resume else None)
    plan.start(state.step)
    try:
        with StopFlag() as stop, report.live(plan.known_total(), state.step):
            while not plan.done(state.step):
                if train_epoch(trainer, state, plan, report, stop):  # Ctrl-C or SIGTERM
                    keeper.save(state, plan, best_too=False)
                    raise Interrupted(
                        f"interrupted at step {state.step}: saved "
                        f"{run.weights(stage.name, last=True)}; continue with --resume"
                    )
                end_epoch(trainer, state, plan, keeper, report)
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save
        raise Interrupted(
            f"stopped at once by a second Ctrl-C at step {state.step}; {keeper.kept()}"
        ) from None
    except Diverged as err:
        at = state.step if err.step is None else err.step
        raise TrainingError(f"{err} at step {at}; {keeper.kept()}; try a lower --lr") from None
    distributed.barrier()  # the other ranks may read what rank 0 has just written
    best = math.nan if keeper.best is None else keeper.best
    checkpoint_path = run.weights(stage.name)
    return FitResult(best, keeper.metrics, state.step, state.epoch, checkpoint_path, report.history)


def train_epoch(
    trainer: Trainer, state: LoopState, plan: Plan, report: Reporter, stop: StopFlag
) -> bool:
    """Steps until the epoch ends, the plan is done or a stop is asked; True if asked. Every
    rank checks at the same steps (`Trainer.check`): each `log_every`-th and the epoch's last."""
    trainer.train_mode()
    report.start_epoch()
    cfg, alone = trainer.cfg, not distributed.active()
    order = epoch_order(len(trainer.data), cfg, state.epoch, state.skip, trainer.device)
    for index in order:
        scalars = trainer.step(trainer.data.batch(index), state.step, plan.total)
        state.step, state.skip = state.step + 1, state.skip + 1
        checking = (
            state.step % cfg.log_every == 0
            or state.skip >= plan.steps_per_epoch
            or plan.done(state.step)
            or (alone and stop.requested)  # a single process may stop at once
        )
        outcome = trainer.check(stop.requested, plan.out_of_time(), scalars) if checking else None
        plan.after_step(state.step, outcome is not None and outcome.out_of_time)
        report.step(state, plan.known_total(), outcome and outcome.scalars, len(index))
        if outcome is not None and outcome.stop:
            return True
        if plan.done(state.step):
            break
    if state.skip >= plan.steps_per_epoch:  # the epoch ran to its end
        state.epoch, state.skip = state.epoch + 1, 0
    return False


def end_epoch(
    trainer: Trainer, state: LoopState, plan: Plan, keeper: Checkpointer, report: Reporter
) -> None:
    """Validate, log, keep the best, save; on ranks other than 0 only check the weights."""
    if not distributed.is_main():
        keeper.save(state, plan, best_too=False)
        return
    stage, model = trainer.stage, trainer.kept()
    metrics = stage.validate(model)
    report.log_epoch(state, metrics)
    report.preview(state, stage.preview, model)
    keeper.keep(state, plan, metrics)
    report.show_epoch(state, plan.known_total(), metrics)
    if stage.after_epoch is not None and report.figures_due(last=plan.done(state.step)):
        stage.after_epoch(model)


class MovingAverage(nn.Module):
    """An exponential moving average of `model`'s weights and buffers (`update_parameters` after
    each step) that warms up: after n updates it keeps at most (1 + n) / (10 + n) of the average,
    so that a short run's average does not hold on to its first weights; the first update copies.
    Integer buffers are copied. Its count of updates stays on the device, so an update never
    makes the host wait; its state dict is that of torch's AveragedModel ('module.*',
    'n_averaged'), so train states saved with either load in both."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module, self.decay = copy.deepcopy(model), decay
        device = next(model.parameters()).device
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=device))

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        n = self.n_averaged
        keep = ((1 + n) / (10 + n)).clamp(max=self.decay) * (n > 0)  # 0 at first: a copy
        pairs = zip(
            itertools.chain(self.module.parameters(), self.module.buffers()),
            itertools.chain(model.parameters(), model.buffers()),
            strict=True,
        )
        for mean, value in pairs:
            if mean.is_floating_point():
                mean.lerp_(value, (1 - keep).to(mean.dtype))  # weight 1 gives `value` exactly
            else:
                mean.copy_(value)
        n += 1


class Trainer:
    """A stage's model on the device (DDP-wrapped for the step), its train split there, its
    optimisers (vqgen.optim) on the learning-rate schedule, the moving average of its weights
    (--ema), one optimiser step, and the check that reads back what the steps since the last
    one did."""

    def __init__(self, stage: Stage, cfg: TrainConfig, device: torch.device):
        self.stage, self.cfg, self.device = stage, cfg, device
        self.model = stage.model.to(device)
        self.net = distributed.wrap(self.model, device)
        self.data = stage.train_set.to(device)
        # by name, as the train state holds them: "model" (AdamW) and, with Muon, "muon"
        self.optimizers = build_optimizers(self.model, cfg, device)
        self.lr_scales = lr_scales(cfg.optimizer)  # each one's rate over the schedule's
        self.bf16 = computes_bf16(device) if cfg.bf16 is None else cfg.bf16
        self.autocast = autocast(device, self.bf16)
        self.average = None  # the moving average of the model's weights, with --ema
        if cfg.ema:
            self.average = MovingAverage(self.model, cfg.ema)
        self.unchecked: list[tuple[int, Tensor, Tensor]] = []  # (step, loss, gradient norm)

    def kept(self) -> nn.Module:
        """The model as validated and saved: the moving average of its weights, if kept."""
        return self.model if self.average is None else self.average.module

    def saved(self) -> dict[str, nn.Module]:
        """Every module whose state the train state holds for --resume."""
        models = {"model": self.model}
        return models if self.average is None else {**models, "ema": self.average}

    def train_mode(self) -> None:
        self.model.train()

    def step(self, batch: Batch, step: int, total: int) -> dict[str, Tensor]:
        """Optimiser step `step` of `total`, read back by nothing: its loss and gradient norm
        wait for the next `check`. Returns the step's scalars, still on the device."""
        rate = learning_rate(step, total, self.cfg)
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = rate * self.lr_scales[name]
        optimizers = self.optimizers.values()
        with self.autocast:
            loss, scalars = self.stage.step(self.net, batch, step)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.unchecked.append((step, loss.detach(), norm.detach()))
        for optimizer in optimizers:
            optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return scalars

    def check(self, stop: bool, out_of_time: bool, scalars: dict[str, Tensor]) -> Agreed:
        """The host's one read of the device since the last check, agreed by every rank in one
        all-reduce: a non-finite loss or gradient norm in any step since then ends training,
        naming the first such step (its weights are never saved); a stop request or a spent
        budget on any rank stops every rank; the last step's `scalars` are averaged."""
        steps = [step for step, _, _ in self.unchecked]
        read = [torch.stack([loss.float(), norm.float()]) for _, loss, norm in self.unchecked]
        read += [value.detach().float().reshape(1) for value in scalars.values()]
        numbers = torch.cat(read).cpu()  # the one read-back
        self.unchecked.clear()
        health = numbers[: 2 * len(steps)].view(-1, 2)  # (steps, 2): loss, gradient norm
        finite = health.isfinite().all(dim=1)
        flags = [float(not finite.all()), float(stop), float(out_of_time)]
        values = distributed.mean(flags + numbers[2 * len(steps) :].tolist(), self.device)
        if values[0] > 0:
            raise self.divergence(steps, health, finite)
        return Agreed(values[1] > 0, values[2] > 0, dict(zip(scalars, values[3:], strict=True)))

    def divergence(self, steps: list[int], health: Tensor, finite: Tensor) -> Diverged:
        """What went wrong first: the step whose loss (or else gradient) was not finite."""
        if finite.all():  # another rank's
            return Diverged(f"{self.stage.name} loss became non-finite on another process")
        first = int((~finite).nonzero()[0, 0])
        loss, norm = health[first].tolist()
        if not math.isfinite(loss):
            return Diverged(f"{self.stage.name} loss became {loss}", steps[first])
        return Diverged(f"{self.stage.name} gradient became {norm}", steps[first])
