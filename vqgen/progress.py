"""What a person sees of long work and what a training logs: a progress bar with smoothed
scalars on a terminal (plain lines in a log file), a line per validation, the JSONL metrics log
and the live TensorBoard log; and for the other verbs, a bar over their named phases.

    report = Reporter("prior", run.metrics_log("prior"), log_every=10, board=LiveLog.open(...))
    with report.live(total, step):
        report.step(state, total, scalars, batch_size)

    with Phases("evaluate", total=9) as phases, phases("drawing 256 samples"):
        ...
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn

from vqgen import distributed, fileio
from vqgen.live import LiveLog
from vqgen.schedule import LoopState

console = Console(stderr=True, soft_wrap=True)  # a log line stays one line
Phase = Callable[[str], contextlib.AbstractContextManager[None]]  # names a phase while it runs
FIGURES_EVERY_S = 30.0  # redraw a stage's figures at most this often (decisions, figures-every)


def progress_bar(enabled: bool) -> Progress:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, transient=True, disable=not enabled)


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Reporter:
    """What a person sees and what the run logs: a progress bar with smoothed scalars (or, into
    a log file, plain lines), a line per validation, metrics-<stage>.jsonl (a line every
    `log_every` steps and per validation) and the same in the live log `board` (TensorBoard,
    if on), with preview images per validation. Only rank 0 shows or writes anything."""

    def __init__(self, stage: str, log: Path, log_every: int, board: LiveLog | None = None):
        self.stage, self.log, self.log_every = stage, log, log_every
        self.board = board or LiveLog(None)
        self.main = distributed.is_main()
        self.plain = self.main and not console.is_terminal  # a log file: print lines, no bar
        self.progress = progress_bar(self.main and not self.plain)
        self.task = self.progress.add_task(stage, total=None, stats="")  # None: shown as ?
        self.running: dict[str, float] = {}  # smoothed scalars for display
        self.history: list[dict[str, float]] = []  # one record per validation
        self.unit = "grids/s" if stage == "prior" else "slices/s"  # what a step takes in
        self.tick, self.seen, self.stepped = time.perf_counter(), 0, 0.0
        self.began, self.first_step = self.tick, 0  # from `live`
        self.figures_at: float | None = None  # when the stage's figures were last drawn

    def begin(self, resumed_at: int | None) -> None:
        """A fresh run starts a fresh log; a resumed one keeps its lines up to `resumed_at`."""
        if not self.main:
            return
        if resumed_at is None:
            self.log.unlink(missing_ok=True)
        else:
            fileio.trim_log(self.log, resumed_at)
        self.board.begin(resumed_at)

    @contextlib.contextmanager
    def live(self, total: int | None, step: int) -> Iterator[Progress]:
        """The progress bar, held open while training; the clock of the log's elapsed time and
        ETA starts here. A `total` of None is not known yet (`Plan.known_total`). The live log
        closes at the end."""
        self.progress.update(self.task, total=total, completed=step)
        self.began, self.first_step = time.perf_counter(), step
        try:
            with self.progress:
                yield self.progress
        finally:
            self.board.close()

    def timing(self, step: int, total: int | None) -> str:
        """e.g. '1:05 elapsed, ETA 3:20': this process's time and the rest at its pace; 'ETA
        ?' while the total is unknown."""
        elapsed = time.perf_counter() - self.began
        if total is None:
            return f"{clock(elapsed)} elapsed, ETA ?"
        left = elapsed / max(step - self.first_step, 1) * (total - step)
        return f"{clock(elapsed)} elapsed, ETA {clock(left)}"

    def start_epoch(self) -> None:
        self.tick, self.seen, self.stepped = time.perf_counter(), 0, 0.0
        self.running = {}

    def rate(self) -> float:
        """Images (or code grids) a second over this epoch's steps so far."""
        return self.seen / max(self.stepped, 1e-9)

    def step(
        self, state: LoopState, total: int | None, scalars: dict[str, float] | None, batch: int
    ) -> None:
        """One step taken; `scalars` where the step was checked (read back from the device),
        None between checks. The log gets a line every `log_every` steps."""
        self.seen += batch * distributed.world_size()
        self.stepped = time.perf_counter() - self.tick
        for k, v in (scalars or {}).items():  # smoothed over the checks, about 20 steps
            self.running[k] = v if k not in self.running else 0.5 * self.running[k] + 0.5 * v
        stats = "  ".join(f"{k} {v:.4g}" for k, v in self.running.items())
        stats += f"  {self.rate():.0f} {self.unit}"
        self.progress.update(self.task, completed=state.step, total=total, stats=stats)
        if self.main and scalars is not None and state.step % self.log_every == 0:
            record = {"step": state.step, "epoch": state.epoch, **scalars}
            fileio.append_jsonl(self.log, record)
            self.board.scalars(scalars, state.step, "train")
            if self.plain:
                timing = self.timing(state.step, total)
                console.print(f"{self.stage} {state.where(total)}  {stats}  {timing}")

    def log_epoch(self, state: LoopState, metrics: dict[str, float]) -> None:
        record = {"step": state.step, "epoch": state.epoch}
        record.update({f"train_{k}": v for k, v in self.running.items()})
        record.update(metrics)
        fileio.append_jsonl(self.log, record)
        self.board.scalars(metrics, state.step, "validate")
        self.history.append(record)

    def preview(
        self, state: LoopState, images: Callable[[nn.Module], Tensor] | None, model: nn.Module
    ) -> None:
        """The stage's preview `images` of `model` in the live log, where it is on."""
        if self.board.on and images is not None:
            self.board.images("validate/images", images(model), state.step, rows=2)

    def figures_due(self, last: bool) -> bool:
        """Whether to draw the stage's figures after this validation: after the first, the
        `last` and at most one in every FIGURES_EVERY_S between them. Drawing takes up to a
        second, an eighth of a short epoch (the demo's VQ-VAE: 14 epochs in 75 s)."""
        now = time.perf_counter()
        if last or self.figures_at is None or now - self.figures_at >= FIGURES_EVERY_S:
            self.figures_at = now
            return True
        return False

    def show_epoch(self, state: LoopState, total: int | None, metrics: dict[str, float]) -> None:
        """The validation's line, with the rate of the epoch's training steps before it."""
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        rate = f"  {self.rate():.0f} {self.unit}" if self.seen else ""
        console.print(f"{self.stage} {state.where(total)}  {shown}{rate}", highlight=False)


class Phases:
    """The named phases of a verb (`evaluate`'s sections): on a terminal a bar that names the
    phase under way, into a log file a line as each phase ends, with its time. Only rank 0
    shows anything."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb = verb
        main = distributed.is_main()
        self.plain = main and not console.is_terminal
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.progress = Progress(
            *columns, console=console, transient=True, disable=not main or self.plain
        )
        self.task = self.progress.add_task(verb, total=total)

    def __enter__(self) -> Phases:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """One phase: shown while it runs, counted (and logged) when it ends."""
        start = time.perf_counter()
        self.progress.update(self.task, description=f"{self.verb}: {name}")
        yield
        self.progress.advance(self.task)
        if self.plain:
            seconds = time.perf_counter() - start
            console.print(f"{self.verb}: {name} ({seconds:.1f} s)", markup=False, highlight=False)


@contextlib.contextmanager
def no_phase(name: str) -> Iterator[None]:
    """A stand-in for `Phases` where nobody watches (the phases of a library call)."""
    yield
