"""The training loop shared by both stages.

    stage = Stage("vqvae", model, train_set, step=vqvae_step, validate=..., monitor="val_ssim", ...)
    result = fit(stage, TrainConfig(epochs=10), run_dir, device, resume=False)

`fit` runs AdamW with a warm-up then cosine learning rate, gradient clipping and bf16 autocast
on CUDA; shows a rich progress bar; validates after every epoch; keeps the best checkpoint (by
`stage.monitor`) and the last one, with a train state (optimisers, step, RNG) so that
`resume=True` continues exactly where it stopped. Ctrl-C (or SIGTERM) finishes the current
step, saves and exits cleanly; a NaN or infinite loss stops with an error and leaves the last
good checkpoint untouched. Under torchrun the same loop runs on every rank with DDP (see
vqgen.distributed).

A stage trains one model, or one model with helpers beside it (a discriminator): its step
returns one loss per model, each loss updates only its own model's weights, and every model and
optimiser goes into the train state. A loss may be missing on some steps (a discriminator that
joins after a warm-up): that model then keeps its weights for the step.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vqgen import checkpoint, distributed
from vqgen.config import TrainConfig, load_config, to_dict
from vqgen.errors import Interrupted, TrainingError, UsageError
from vqgen.schedule import UNBOUNDED_STEPS, TimeBudget, epoch_batches, learning_rate, planned_steps

console = Console(stderr=True, soft_wrap=True)  # a log line stays one line

Batch = tuple[Tensor, Tensor, Tensor]  # images or codes (B, ...), labels (B,), positions (B,)
Nets = dict[str, nn.Module]  # "model" and any helpers, as the step calls them (DDP-wrapped)
StepFn = Callable[[Nets, Batch, int], tuple[dict[str, Tensor], dict[str, float]]]


class OptimizerSettings(NamedTuple):
    """How one model of a stage is optimised, beside the TrainConfig all models share."""

    lr_scale: float = 1.0  # of --lr, at every step of the schedule
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Stage:
    """What `fit` needs to know about one stage."""

    name: str  # "vqvae" or "prior": names the checkpoint files
    model: nn.Module  # what is validated and saved as <name>.safetensors
    train_set: Dataset
    step: StepFn  # (nets, batch, step) -> (loss per model name, scalars to log)
    validate: Callable[[nn.Module], dict[str, float]]  # model -> validation metrics
    monitor: str  # validation metric that picks the best checkpoint
    higher_is_better: bool
    meta: dict[str, Any]  # resolved configs, written beside the weights
    after_epoch: Callable[[nn.Module], None] | None = None  # e.g. refresh figures
    helpers: dict[str, nn.Module] = field(default_factory=dict)  # trained beside `model`
    # per model name: its learning rate as a fraction of --lr, and Adam's betas, e.g. a GAN
    # discriminator's (0.5, 0.9); a model not named here takes --lr and (0.9, 0.999)
    optimizer: dict[str, OptimizerSettings] = field(default_factory=dict)

    def models(self) -> dict[str, nn.Module]:
        return {"model": self.model, **self.helpers}


@dataclass
class FitResult:
    best: float
    last: dict[str, float]
    step: int
    epoch: int
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class LoopState:
    """Where training stands; saved in the train state for --resume."""

    step: int = 0
    epoch: int = 0
    skip: int = 0  # steps of `epoch` already taken
    best: float | None = None  # best validation value so far
    total: int = 0  # steps this run will take: the plan, cut by a time budget
    fitted: int | None = None  # the plan fitted to --max-minutes, what a resume continues to


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


def all_finite(tensors: dict[Any, Any]) -> bool:
    """Whether every floating-point tensor in a (possibly nested) state dict is finite."""
    for value in tensors.values():
        if isinstance(value, dict) and not all_finite(value):
            return False
        if isinstance(value, Tensor) and value.is_floating_point() and not value.isfinite().all():
            return False
    return True


class Agreed(NamedTuple):
    """A step's outcome, the same on every rank."""

    bad_loss: bool
    stop: bool
    out_of_time: bool
    scalars: dict[str, float]  # averaged over ranks


def agree(
    losses: dict[str, Tensor], stop: bool, out_of_time: bool, scalars: dict[str, float], device
) -> Agreed:
    """One all-reduce: a non-finite loss, a stop request or a spent budget on any rank ends the
    step for all of them, and the logged scalars are averaged."""
    bad = not all(math.isfinite(loss.item()) for loss in losses.values())
    values = distributed.mean(
        [float(bad), float(stop), float(out_of_time), *scalars.values()], device
    )
    flags = [v > 0 for v in values[:3]]
    return Agreed(*flags, dict(zip(scalars, values[3:], strict=True)))


def progress_bar(enabled: bool) -> Progress:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=True, disable=not enabled)


def resumed_config(stage: str, cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """The run's own training settings; only the device, workers and time budget are new."""
    stored = checkpoint.read_meta(run_dir, stage, last=True).get("train")
    stored = load_config(TrainConfig, stored, f"{run_dir}/{stage}-last.json 'train'")
    return replace(stored, device=cfg.device, workers=cfg.workers, max_minutes=cfg.max_minutes)


def _batches(stage: Stage, cfg: TrainConfig, epoch: int, skip: int) -> Iterator[Batch]:
    batches = epoch_batches(len(stage.train_set), cfg.batch_size, cfg.seed, epoch)[skip:]
    # its own generator, so creating the loader does not consume the global RNG (exact resume)
    loader = DataLoader(
        stage.train_set, batch_sampler=batches, num_workers=cfg.workers, generator=torch.Generator()
    )
    yield from loader


def fit(
    stage: Stage, cfg: TrainConfig, run_dir: Path, device: torch.device, resume: bool = False
) -> FitResult:
    """Train `stage.model` (and its helpers) on `device` (this rank's, from
    `distributed.init`); see the module docstring."""
    if resume:
        cfg = resumed_config(stage.name, cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    loop = Loop(stage, cfg, run_dir, device)
    if resume:
        loop.restore()
    elif loop.main:
        loop.log.unlink(missing_ok=True)  # a fresh run starts a fresh log
    budget = TimeBudget(cfg.max_minutes, loop.state.step, loop.state.total)
    try:
        with StopFlag() as stop, loop.progress:
            while loop.state.step < loop.state.total:
                if loop.train_epoch(budget, stop):  # stopped by Ctrl-C or SIGTERM
                    loop.save(best_too=False)
                    raise Interrupted(
                        f"interrupted at step {loop.state.step}: saved "
                        f"{run_dir / stage.name}-last.safetensors; continue with --resume"
                    )
                loop.end_epoch()
    except KeyboardInterrupt:  # a second Ctrl-C: no time to save
        raise Interrupted(
            f"stopped at once by a second Ctrl-C at step {loop.state.step}; {loop.kept()}"
        ) from None
    distributed.barrier()  # the other ranks may read what rank 0 has just written
    state = loop.state
    best = math.nan if state.best is None else state.best
    path = run_dir / f"{stage.name}.safetensors"
    return FitResult(best, loop.last_val, state.step, state.epoch, path, loop.history)


class Loop:
    """The pieces of one `fit`: models, optimisers, where training stands, the log."""

    def __init__(self, stage: Stage, cfg: TrainConfig, run_dir: Path, device: torch.device):
        self.stage, self.cfg, self.run_dir, self.device = stage, cfg, run_dir, device
        self.main = distributed.is_main()  # only rank 0 writes, prints and validates
        self.models = {name: m.to(device) for name, m in stage.models().items()}  # saved
        self.nets = {name: distributed.wrap(m, device) for name, m in self.models.items()}
        self.settings = {
            name: stage.optimizer.get(name, OptimizerSettings()) for name in self.models
        }
        self.optimizers = {
            name: torch.optim.AdamW(
                m.parameters(),
                lr=cfg.lr * self.settings[name].lr_scale,
                betas=self.settings[name].betas,
                weight_decay=cfg.weight_decay,
            )
            for name, m in self.models.items()
        }
        self.steps_per_epoch = len(epoch_batches(len(stage.train_set), cfg.batch_size, cfg.seed, 0))
        if self.steps_per_epoch == 0:
            raise UsageError(f"the {stage.name} training set is empty")
        self.state = LoopState(total=planned_steps(cfg, self.steps_per_epoch))
        self.log = run_dir / f"metrics-{stage.name}.jsonl"
        self.last_val: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.plain = self.main and not console.is_terminal  # a log file: print lines, no bar
        self.progress = progress_bar(self.main and not self.plain)
        self.task = self.progress.add_task(stage.name, total=self.state.total, stats="")
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        self.running: dict[str, float] = {}  # smoothed scalars for display
        self.saved_step: int | None = None  # the step of the last checkpoint on disk

    def restore(self) -> None:
        """Continue from the train state, to the run's plan: its --epochs or --max-steps, or
        for a run limited by time alone the steps its first time budget fitted."""
        info = checkpoint.load_train_state(
            self.run_dir, self.stage.name, self.models, self.optimizers
        )
        self.state = LoopState(**{k: info.get(k) for k in asdict(self.state)})
        state, planned = self.state, planned_steps(self.cfg, self.steps_per_epoch)
        if planned < UNBOUNDED_STEPS:
            state.total = planned
        elif state.fitted is not None:
            state.total = state.fitted
        self.saved_step = state.step
        if state.step >= state.total:
            warnings.warn(
                f"--resume: the {self.stage.name} run in {self.run_dir} is already complete "
                f"({state.step} of {state.total} steps); nothing to train",
                stacklevel=2,
            )
        self.progress.update(self.task, total=state.total, completed=state.step)
        if self.main:
            checkpoint.trim_log(self.log, state.step)

    def kept(self) -> str:
        """What is on disk now, for an error message."""
        if self.saved_step is None:
            return "nothing was saved"
        return f"the last good checkpoint (step {self.saved_step}) in {self.run_dir} is kept"

    def train_step(self, batch: Batch, budget: TimeBudget, stop: StopFlag) -> Agreed:
        """One optimiser step of every model; each loss updates only its own model."""
        state, cfg = self.state, self.cfg
        lr = learning_rate(state.step, state.total, cfg)
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = lr * self.settings[name].lr_scale
        with self.autocast:
            losses, scalars = self.stage.step(self.nets, batch, state.step)
        for name, loss in losses.items():
            self.optimizers[name].zero_grad(set_to_none=True)
            loss.backward(inputs=list(self.models[name].parameters()))
        outcome = agree(losses, stop.requested, budget.spent(), scalars, self.device)
        if outcome.bad_loss:
            name, loss = next(
                (k, v.item()) for k, v in losses.items() if not math.isfinite(v.item())
            )
            self.diverged(f"{self.describe(name)} loss became {loss}")
        for name in losses:  # a model without a loss this step keeps its weights
            norm = nn.utils.clip_grad_norm_(self.models[name].parameters(), cfg.grad_clip)
            if not math.isfinite(norm.item()):  # the same on every rank: DDP averaged the grads
                self.diverged(f"{self.describe(name)} gradient became {norm.item()}")
            self.optimizers[name].step()
        state.step, state.skip = state.step + 1, state.skip + 1
        return outcome

    def describe(self, name: str) -> str:
        return self.stage.name if name == "model" else f"{self.stage.name} {name}"

    def diverged(self, what: str) -> None:
        raise TrainingError(f"{what} at step {self.state.step}; {self.kept()}; try a lower --lr")

    def train_epoch(self, budget: TimeBudget, stop: StopFlag) -> bool:
        """Steps until the epoch ends, the plan is done or a stop is asked; True if asked."""
        state, cfg = self.state, self.cfg
        for model in self.models.values():
            model.train()
        tick, seen = time.perf_counter(), 0
        self.running = {}
        for batch in _batches(self.stage, cfg, state.epoch, state.skip):
            batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            outcome = self.train_step(batch, budget, stop)
            seen += len(batch[0]) * distributed.world_size()
            for k, v in outcome.scalars.items():
                self.running[k] = v if k not in self.running else 0.9 * self.running[k] + 0.1 * v
            fitted = budget.fitted_total(state.step)
            if fitted is not None:
                state.total = state.fitted = distributed.min_int(fitted, self.device)
            if outcome.out_of_time:
                state.total = state.step  # validate and save now
            rate = seen / max(time.perf_counter() - tick, 1e-9)
            stats = "  ".join(f"{k} {v:.4g}" for k, v in self.running.items())
            self.progress.update(
                self.task, completed=state.step, total=state.total, stats=f"{stats}  {rate:.0f}/s"
            )
            if self.main and state.step % cfg.log_every == 0:
                record = {"step": state.step, "epoch": state.epoch, **outcome.scalars}
                checkpoint.append_jsonl(self.log, record)
                if self.plain:
                    console.print(f"{self.stage.name} {self.where()}  {stats}  {rate:.0f}/s")
            if outcome.stop:
                return True
            if state.step >= state.total:
                break
        if state.skip >= self.steps_per_epoch:  # the epoch ran to its end
            state.epoch, state.skip = state.epoch + 1, 0
        return False

    def end_epoch(self) -> None:
        """Validate, log, keep the best, save; on ranks other than 0 only check the weights."""
        if not self.main:
            self.save(best_too=False)
            return
        state, stage = self.state, self.stage
        self.last_val = stage.validate(self.models["model"])
        record = {"step": state.step, "epoch": state.epoch}
        record.update({f"train_{k}": v for k, v in self.running.items()})
        record.update(self.last_val)
        checkpoint.append_jsonl(self.log, record)
        self.history.append(record)
        value = self.last_val[stage.monitor]
        better = state.best is None or (
            value > state.best if stage.higher_is_better else value < state.best
        )
        improved = math.isfinite(value) and better
        if improved:
            state.best = value
        self.save(best_too=improved)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in self.last_val.items())
        console.print(f"{stage.name} {self.where()}  {shown}", highlight=False)
        if stage.after_epoch is not None:
            stage.after_epoch(self.models["model"])

    def where(self) -> str:
        """e.g. 'epoch 2 step 130/400': epochs counted from 1, a partial one as begun."""
        state = self.state
        epoch = state.epoch + (1 if state.skip else 0)
        return f"epoch {max(epoch, 1)} step {state.step}/{state.total}"

    def save(self, best_too: bool) -> None:
        """Rank 0 writes the last (and the best) weights with their JSON, then the train state;
        every rank first checks that all hold the same weights. Weights or optimiser state that
        are not finite are never saved: the last good checkpoint stays the resume point."""
        state, stage = self.state, self.stage
        for name, model in self.models.items():
            distributed.check_same_model(model, f"{self.describe(name)} step {state.step}")
        for name, model in self.models.items():
            if not (all_finite(model.state_dict()) and all_finite(self.optimizers[name].state)):
                self.diverged(f"{self.describe(name)} weights became non-finite")
        if not self.main:
            return
        meta = {**stage.meta, "train": to_dict(self.cfg), "step": state.step}
        meta.update(epoch=state.epoch, metrics=self.last_val)
        if best_too:
            checkpoint.save_model(self.run_dir, stage.name, self.models["model"], meta, last=False)
        checkpoint.save_model(self.run_dir, stage.name, self.models["model"], meta, last=True)
        checkpoint.save_train_state(
            self.run_dir, stage.name, self.models, self.optimizers, asdict(state)
        )
        self.saved_step = state.step
