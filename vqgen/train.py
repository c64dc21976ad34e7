"""The training loop shared by both stages.

    stage = Stage("vqvae", model, train_set, step=loss.step, validate=..., monitor="val_ssim", ...)
    result = fit(stage, TrainConfig(epochs=10), RunDir(path), device, resume=False)

`fit` is the loop; the pieces it calls each do one job:
    Trainer       the model, its AdamW optimiser and moving average, one optimiser step
    Plan          how many steps the run takes (vqgen.schedule: epochs, steps, time budget)
    Checkpointer  save the last and the best, restore for --resume (vqgen.checkpointer)
    Reporter      the progress bar or plain log lines, and the JSONL metrics log
                  (vqgen.progress)

`fit` runs AdamW with a warm-up then cosine learning rate, gradient clipping and bf16 autocast
where the device computes bf16 natively (CUDA, recent x86 CPUs); with `cfg.ema`, keeps a moving
average of the model's weights, which is then what is validated and saved; shows a rich
progress bar; validates after every epoch; keeps the best checkpoint (by `stage.monitor`) and
the last one, with a train state (optimisers, step, RNG) so that `resume=True` continues
exactly where it stopped. Ctrl-C (or SIGTERM) finishes the current step, saves and exits
cleanly; a NaN or infinite loss stops with an error and leaves the last good checkpoint
untouched. Under torchrun the same loop runs on every rank with DDP (see vqgen.distributed).
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset

from vqgen import checkpoint, distributed
from vqgen.checkpointer import Checkpointer, Diverged
from vqgen.config import TrainConfig, load_config
from vqgen.errors import Interrupted, TrainingError
from vqgen.inference import resolve_device
from vqgen.live import LiveLog
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
# (model as the step calls it, DDP-wrapped; batch; step) -> (loss, scalars to log)
StepFn = Callable[[nn.Module, Batch, int], tuple[Tensor, dict[str, float]]]


@dataclass
class Stage:
    """What `fit` needs to know about one stage."""

    name: str  # "vqvae" or "prior": names the checkpoint files
    model: nn.Module  # what is validated and saved as <name>.safetensors
    train_set: Dataset
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
    """A step's outcome, the same on every rank."""

    bad_loss: bool
    stop: bool
    out_of_time: bool
    scalars: dict[str, float]  # averaged over ranks


def agree(loss: Tensor, stop: bool, out_of_time: bool, scalars: dict[str, float], device) -> Agreed:
    """One all-reduce: a non-finite loss, a stop request or a spent budget on any rank ends the
    step for all of them, and the logged scalars are averaged."""
    bad = not math.isfinite(loss.item())
    values = distributed.mean(
        [float(bad), float(stop), float(out_of_time), *scalars.values()], device
    )
    flags = [v > 0 for v in values[:3]]
    return Agreed(*flags, dict(zip(scalars, values[3:], strict=True)))


def resumed_config(stage: str, cfg: TrainConfig, run: RunDir) -> TrainConfig:
    """The run's own training settings; only the device, workers and time budget are new."""
    stored = checkpoint.read_meta(run, stage, last=True).get("train")
    if isinstance(stored, dict) and "bf16" not in stored:  # from before --bf16: bf16 on CUDA only
        stored = {**stored, "bf16": resolve_device(cfg.device).type == "cuda"}
    stored = load_config(TrainConfig, stored, f"{run.meta(stage, last=True)} 'train'")
    state = checkpoint.train_state_info(run, stage)
    given = {"device": cfg.device, "workers": cfg.workers, "max_minutes": cfg.max_minutes}
    given["tensorboard"] = cfg.tensorboard
    return resume_settings(stored, state, **given)


def resume_trains(stage: str, cfg: TrainConfig, run: RunDir) -> bool:
    """Whether --resume has steps left to train, and so changes the stage's weights."""
    return steps_left(resumed_config(stage, cfg, run), checkpoint.train_state_info(run, stage))


def _batches(stage: Stage, cfg: TrainConfig, epoch: int, skip: int) -> Iterator[Batch]:
    batches = epoch_batches(len(stage.train_set), cfg.batch_size, cfg.seed, epoch)[skip:]
    # its own generator, so creating the loader does not consume the global RNG (exact resume)
    loader = DataLoader(
        stage.train_set, batch_sampler=batches, num_workers=cfg.workers, generator=torch.Generator()
    )
    yield from loader


def fit(
    stage: Stage, cfg: TrainConfig, run: RunDir, device: torch.device, resume: bool = False
) -> FitResult:
    """Train `stage.model` on `device` (this rank's, from
    `distributed.init`); see the module docstring."""
    if resume:
        cfg = resumed_config(stage.name, cfg, run)
    run.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(stage, cfg, device)
    plan = Plan(cfg, len(stage.train_set), stage.name, device)
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
        raise TrainingError(
            f"{err} at step {state.step}; {keeper.kept()}; try a lower --lr"
        ) from None
    distributed.barrier()  # the other ranks may read what rank 0 has just written
    best = math.nan if keeper.best is None else keeper.best
    checkpoint_path = run.weights(stage.name)
    return FitResult(best, keeper.metrics, state.step, state.epoch, checkpoint_path, report.history)


def to_device(x: Tensor | list[Tensor], device: torch.device) -> Tensor | list[Tensor]:
    """A batch's tensor, or list of tensors (code levels), on `device`."""
    if isinstance(x, list):
        return [t.to(device, non_blocking=True) for t in x]
    return x.to(device, non_blocking=True)


def train_epoch(
    trainer: Trainer, state: LoopState, plan: Plan, report: Reporter, stop: StopFlag
) -> bool:
    """Steps until the epoch ends, the plan is done or a stop is asked; True if asked."""
    trainer.train_mode()
    report.start_epoch()
    for batch in _batches(trainer.stage, trainer.cfg, state.epoch, state.skip):
        batch = tuple(to_device(t, trainer.device) for t in batch)
        outcome = trainer.step(batch, state.step, plan.total, stop, plan.out_of_time)
        state.step, state.skip = state.step + 1, state.skip + 1
        plan.after_step(state.step, outcome.out_of_time)
        report.step(state, plan.known_total(), outcome.scalars, len(batch[1]))
        if outcome.stop:
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
    if stage.after_epoch is not None:
        stage.after_epoch(model)


def computes_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA, or a CPU with AVX512-BF16 (by torch's
    own probe). Training runs under bf16 autocast there, 1.4-1.8x faster on such a CPU
    (docs/decisions.md, bf16); elsewhere bf16 would be slower than float32."""
    if device.type == "cuda":
        return True
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private: looked up, not assumed
    return device.type == "cpu" and probe is not None and bool(probe())


def moving_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of `model`'s weights and buffers (`update_parameters` after
    each step) that warms up: after n updates it keeps at most (1 + n) / (10 + n) of the average,
    so that a short run's average does not hold on to its first weights. Integer buffers are
    copied."""

    def update(averaged: list[Tensor], current: list[Tensor], n: Tensor) -> None:
        keep = ((1 + n) / (10 + n)).clamp(max=decay)  # on n's device: no wait for a GPU
        for mean, value in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(value, (1 - keep).to(mean.dtype))
            else:
                mean.copy_(value)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


class Trainer:
    """A stage's model on the device (DDP-wrapped for the step), its AdamW optimiser on the
    learning-rate schedule, the moving average of its weights (--ema), and one optimiser step."""

    def __init__(self, stage: Stage, cfg: TrainConfig, device: torch.device):
        self.stage, self.cfg, self.device = stage, cfg, device
        self.model = stage.model.to(device)
        self.net = distributed.wrap(self.model, device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.bf16 = computes_bf16(device) if cfg.bf16 is None else cfg.bf16
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)
        self.average = None  # the moving average of the model's weights, with --ema
        if cfg.ema:
            self.average = moving_average(self.model, cfg.ema)

    def kept(self) -> nn.Module:
        """The model as validated and saved: the moving average of its weights, if kept."""
        return self.model if self.average is None else self.average.module

    def saved(self) -> dict[str, nn.Module]:
        """Every module whose state the train state holds for --resume."""
        models = {"model": self.model}
        return models if self.average is None else {**models, "ema": self.average}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimiser of each module in `saved` that has one, as the train state holds them."""
        return {"model": self.optimizer}

    def train_mode(self) -> None:
        self.model.train()

    def step(
        self, batch: Batch, step: int, total: int, stop: StopFlag, out_of_time: Callable[[], bool]
    ) -> Agreed:
        """Optimiser step `step` of `total`. Every rank agrees on the outcome (a stop asked
        for by now, a spent budget, a non-finite loss)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, total, self.cfg)
        with self.autocast:
            loss, scalars = self.stage.step(self.net, batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        outcome = agree(loss, stop.requested, out_of_time(), scalars, self.device)
        if outcome.bad_loss:
            raise Diverged(f"{self.stage.name} loss became {loss.item()}")
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if not math.isfinite(norm.item()):  # the same on every rank: DDP averaged the grads
            raise Diverged(f"{self.stage.name} gradient became {norm.item()}")
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return outcome
