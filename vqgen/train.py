"""The training loop shared by both stages.

    stage = Stage("vqvae", model, train_set, step=vqvae_step, validate=..., monitor="val_ssim", ...)
    result = fit(stage, TrainConfig(epochs=10), run_dir, resume=False)

`fit` runs AdamW with a warm-up then cosine learning rate, gradient clipping and bf16 autocast
on CUDA; shows a rich progress bar; validates after every epoch; keeps the best checkpoint (by
`stage.monitor`) and the last one with its optimiser state, step and RNG so that `resume=True`
continues exactly where it stopped. Ctrl-C (or SIGTERM) finishes the current step, saves and
exits cleanly; a NaN or infinite loss stops with an error and leaves the last good checkpoint
untouched. Under torchrun the same loop runs on every rank with DDP (see vqgen.distributed).
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from vqgen import checkpoint, distributed
from vqgen.config import TrainConfig, to_dict
from vqgen.errors import TrainingError, UsageError, VqgenError

console = Console(stderr=True)

RATE_PROBE_STEPS = 20  # steps timed before fitting the schedule to --max-minutes
Batch = tuple[Tensor, Tensor, Tensor]  # images (B,1,S,S), labels (B,), positions (B,)
StepFn = Callable[[nn.Module, Batch], tuple[Tensor, dict[str, float]]]


class Interrupted(VqgenError):
    """Training was stopped by Ctrl-C after saving a checkpoint."""

    exit_code = 130


@dataclass
class Stage:
    """What `fit` needs to know about one stage."""

    name: str  # "vqvae" or "prior": names the checkpoint files
    model: nn.Module
    train_set: Dataset
    step: StepFn  # (model, batch) -> (loss, scalars to log)
    validate: Callable[[nn.Module], dict[str, float]]  # model -> validation metrics
    monitor: str  # validation metric that picks the best checkpoint
    higher_is_better: bool
    meta: dict[str, Any]  # resolved configs, written beside the weights
    after_epoch: Callable[[nn.Module], None] | None = None  # e.g. refresh figures


@dataclass
class FitResult:
    best: float
    last: dict[str, float]
    step: int
    epoch: int
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when there is one; asking for CUDA without one is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


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


# -- optimiser state <-> safetensors (no pickle) ----------------------------------------------


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors = {
        f"opt.{idx}.{name}": value
        for idx, slots in state["state"].items()
        for name, value in slots.items()
    }
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    return {"state": slots, "param_groups": meta["param_groups"]}


def save_train_state(
    run_dir: Path, name: str, model: nn.Module, opt: torch.optim.Optimizer, info: dict
) -> None:
    """Everything --resume needs in one file, so one atomic rename keeps it consistent:
    the weights, the optimiser, the RNG and `info` (step, epoch, ...)."""
    tensors, opt_meta = _flatten_optimizer(opt)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    checkpoint.save_tensors(
        run_dir / f"train_state-{name}.safetensors", tensors, {**info, **opt_meta}
    )


def load_train_state(
    run_dir: Path, name: str, model: nn.Module, opt: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what `save_train_state` wrote into `model`, `opt` and the RNG; returns `info`."""
    path = run_dir / f"train_state-{name}.safetensors"
    if not path.is_file():
        raise UsageError(f"--resume: {path} not found; start without --resume")
    tensors = checkpoint.load_tensors(path)
    meta = checkpoint.load_tensor_meta(path)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    checkpoint.load_state(model, weights, path)
    try:
        opt.load_state_dict(_unflatten_optimizer(tensors, meta))
    except (ValueError, KeyError) as err:
        raise checkpoint.CheckpointError(f"{path} does not match this model ({err})") from None
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


# -- Ctrl-C: finish the step, save, stop ------------------------------------------------------


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


def trim_log(path: Path, last_step: int) -> None:
    """Keep the complete lines of a metrics log up to `last_step`: a killed run may have logged
    steps after its last checkpoint, or torn its last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= last_step:
            kept.append(line + "\n")
    checkpoint.atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _batches(stage: Stage, cfg: TrainConfig, epoch: int, skip: int) -> Iterator[Batch]:
    batches = epoch_batches(len(stage.train_set), cfg.batch_size, cfg.seed, epoch)[skip:]
    # its own generator, so creating the loader does not consume the global RNG (exact resume)
    loader = DataLoader(
        stage.train_set, batch_sampler=batches, num_workers=cfg.workers, generator=torch.Generator()
    )
    yield from loader


def fit(stage: Stage, cfg: TrainConfig, run_dir: Path, resume: bool = False) -> FitResult:
    """Train `stage.model`; see the module docstring.

    With `resume`, the run's own training settings and schedule are used; only the device,
    the workers and a time budget come from `cfg`.
    """
    if resume:
        stored = checkpoint.read_meta(run_dir, stage.name, last=True).get("train")
        where = f"{run_dir}/{stage.name}-last.json 'train'"
        stored = checkpoint.load_config(TrainConfig, stored, where)
        cfg = replace(stored, device=cfg.device, workers=cfg.workers, max_minutes=cfg.max_minutes)
    device = distributed.init(resolve_device(cfg.device))
    main = distributed.is_main()  # only rank 0 writes, prints and validates
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = stage.model.to(device)  # what is saved and validated
    net = distributed.wrap(model, device)  # what the steps call: DDP under torchrun
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(epoch_batches(len(stage.train_set), cfg.batch_size, cfg.seed, 0))
    if steps_per_epoch == 0:
        raise UsageError(f"the {stage.name} training set is empty")
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    metrics_path = run_dir / f"metrics-{stage.name}.jsonl"

    step, epoch, skip = 0, 0, 0
    best = -math.inf if stage.higher_is_better else math.inf
    if resume:
        info = load_train_state(run_dir, stage.name, model, opt)
        step, epoch, skip, best, total = (
            info["step"],
            info["epoch"],
            info["skip"],
            info["best"],
            info["total"],
        )
        if main:
            trim_log(metrics_path, step)
    elif main and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh log

    def save(last_metrics: dict[str, float], best_too: bool = False) -> None:
        distributed.check_same_model(model, f"{stage.name} step {step}")
        if not main:
            return
        meta = {**stage.meta, "train": to_dict(cfg), "step": step, "epoch": epoch}
        meta["metrics"] = last_metrics
        if best_too:
            checkpoint.save_model(run_dir, stage.name, model, meta, last=False)
        checkpoint.save_model(run_dir, stage.name, model, meta, last=True)
        state = {"step": step, "epoch": epoch, "skip": skip, "best": best, "total": total}
        save_train_state(run_dir, stage.name, model, opt, state)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    history: list[dict[str, float]] = []
    last_val: dict[str, float] = {}
    budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
    started, start_step = time.perf_counter(), step
    probe_started = started
    progress = Progress(*columns, console=console, transient=True, disable=not main)
    with StopFlag() as stop, progress:
        task = progress.add_task(stage.name, total=total, completed=step, stats="")
        while step < total:
            model.train()
            tick, seen = time.perf_counter(), 0
            running: dict[str, float] = {}
            for batch in _batches(stage, cfg, epoch, skip):
                batch = tuple(t.to(device, non_blocking=True) for t in batch)
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step, total, cfg)
                with autocast:
                    loss, scalars = stage.step(net, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                out_of_time = budget is not None and time.perf_counter() - started > budget
                # one all-reduce agrees on the step's outcome and averages what is logged
                flags = [float(not math.isfinite(loss.item())), stop.requested, out_of_time]
                agreed = distributed.mean([*flags, *scalars.values()], device)
                bad_loss, stop_now, out_of_time = (v > 0 for v in agreed[:3])
                scalars = dict(zip(scalars, agreed[3:], strict=True))
                if bad_loss:
                    raise TrainingError(
                        f"{stage.name} loss became {loss.item()} at step {step}; the last good "
                        f"checkpoint in {run_dir} is kept; try a lower --lr"
                    )
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                step, skip = step + 1, skip + 1
                seen += len(batch[0]) * distributed.world_size()
                for k, v in scalars.items():  # smoothed for display
                    running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
                rate = seen / max(time.perf_counter() - tick, 1e-9)
                stats = "  ".join(f"{k} {v:.4g}" for k, v in running.items())
                progress.update(task, completed=step, stats=f"{stats}  {rate:.0f} img/s")
                if budget is not None and step - start_step == RATE_PROBE_STEPS // 4:
                    probe_started = time.perf_counter()  # after the slow first steps
                if budget is not None and step - start_step == RATE_PROBE_STEPS:
                    # fit the schedule to the time budget, leaving a tenth for validation
                    now = time.perf_counter()
                    per_step = (now - probe_started) / (RATE_PROBE_STEPS - RATE_PROBE_STEPS // 4)
                    fits = step + int(0.9 * (budget - (now - started)) / per_step)
                    total = distributed.min_int(max(step, min(total, fits)), device)
                    progress.update(task, total=total)
                if main and step % cfg.log_every == 0:
                    append_jsonl(metrics_path, {"step": step, "epoch": epoch, **scalars})
                if out_of_time:
                    total = step  # validate and save now
                if stop_now or step >= total:
                    break
            if stop_now:
                save(last_val)
                raise Interrupted(
                    f"interrupted at step {step}: saved {run_dir / stage.name}-last.safetensors; "
                    "continue with --resume"
                )
            if skip >= steps_per_epoch:  # the epoch ran to its end
                epoch, skip = epoch + 1, 0
            if not main:
                save(last_val)  # only checks that the ranks agree
                continue
            last_val = stage.validate(model)
            record = {"step": step, "epoch": epoch, **{f"train_{k}": v for k, v in running.items()}}
            record.update(last_val)
            append_jsonl(metrics_path, record)
            history.append(record)
            value = last_val[stage.monitor]
            improved = value > best if stage.higher_is_better else value < best
            if improved:
                best = value
            save(last_val, best_too=improved)
            shown = "  ".join(f"{k} {v:.4g}" for k, v in last_val.items())
            progress.console.print(f"{stage.name} epoch {epoch} step {step}/{total}  {shown}")
            if stage.after_epoch is not None:
                stage.after_epoch(model)
    distributed.barrier()  # the other ranks may read what rank 0 has just written
    return FitResult(best, last_val, step, epoch, run_dir / f"{stage.name}.safetensors", history)
