"""The run directory: every path of a run.

    run = RunDir(Path("checkpoints/demo"))
    run.weights("vqvae")          # checkpoints/demo/vqvae.safetensors
    run.codes("train")            # checkpoints/demo/codes/train.safetensors
    with run.lock("sample"):      # one writer at a time (vqgen.runlock)
        ...

Every module asks a RunDir for the paths it reads and writes; none spells one out. A stage is
"vqvae" or "prior"; a code level, where a run has more than one, is named by `level`, and the
run keeps one set of files per level. Every verb that writes a run holds its lock; what a
training may replace is vqgen.overwrite's.

    <stage>.safetensors / <stage>.json            best weights (what later verbs use)
    <stage>-last.safetensors / <stage>-last.json  weights and settings of the latest step
    train_state-<stage>.safetensors               every model's weights and optimiser, the
                                                  step and the RNG: what --resume restores
    metrics-<stage>.jsonl                         one JSON object per logged step or epoch
    codes/<split>[-<level>].safetensors           code grids of a split
    figures/  samples/  report.json  report.md  .vqgen.lock
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vqgen.errors import UsageError
from vqgen.runlock import LOCK_NAME, dangling, hold

TRAIN_HINTS = {"vqvae": "run `vqgen train-vqvae` first", "prior": "run `vqgen train-prior` first"}


@dataclass(frozen=True)
class RunDir:
    """One run directory and every path in it."""

    root: Path
    codes_at: Path | None = None  # the code grids' folder, where not root/codes (read-only run)

    def __str__(self) -> str:
        return str(self.root)

    # -- a stage's checkpoints -----------------------------------------------------------------

    def weights(self, stage: str, last: bool = False) -> Path:
        return self.root / f"{stage}{'-last' if last else ''}.safetensors"

    def meta(self, stage: str, last: bool = False) -> Path:
        """The JSON that describes `weights(stage, last)`."""
        return self.root / f"{stage}{'-last' if last else ''}.json"

    def train_state(self, stage: str) -> Path:
        return self.root / f"train_state-{stage}.safetensors"

    def metrics_log(self, stage: str) -> Path:
        return self.root / f"metrics-{stage}.jsonl"

    def live_log(self, stage: str) -> Path:
        """The folder of the stage's TensorBoard event log (vqgen.live)."""
        return self.root / "tensorboard" / stage

    def logs(self, stage: str) -> list[Path]:
        """The stage's logs: what a training that never saved a step leaves."""
        return [self.metrics_log(stage), self.live_log(stage)]

    def stage_files(self, stage: str) -> list[Path]:
        """Every file a stage's training writes into the run directory."""
        return [
            self.meta(stage),
            self.weights(stage),
            self.meta(stage, last=True),
            self.weights(stage, last=True),
            self.train_state(stage),
            *self.logs(stage),
        ]

    # -- what the verbs make from the models ---------------------------------------------------

    @property
    def codes_dir(self) -> Path:
        return self.codes_at or self.root / "codes"

    def codes(self, split: str, level: str | None = None) -> Path:
        """A split's code grids (of one level, in a run with several)."""
        name = split if level is None else f"{split}-{level}"
        return self.codes_dir / f"{name}.safetensors"

    def augmented_codes(self, copies: int, level: str | None = None) -> Path:
        """The code grids of `copies` extra versions of the train split."""
        return self.codes(f"train-augmented-{copies}", level)

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def eval_figures(self, report: Path) -> Path:
        """Where `evaluate` draws the figures of a report written to `report`: the run's
        figures/ for its own report.json, else a folder beside that report."""
        if report.resolve() == self.report.resolve():
            return self.figures
        return report.with_name(f"{report.stem}-figures")

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    # -- the directory as a whole --------------------------------------------------------------

    def check_exists(self) -> RunDir:
        """This run, if its folder exists; one line naming it when it does not."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"run directory {self} is a file, not a folder")
        if not self.root.is_dir():
            raise dangling(self.root) or UsageError(
                f"run directory {self} does not exist; run `vqgen train-vqvae --run {self}` first"
            )
        return self

    def contains(self, path: Path) -> bool:
        """Whether `path` lies in the run directory (a verb writing there holds its lock)."""
        return path.resolve().is_relative_to(self.root.resolve())

    def has(self, stage: str) -> bool:
        """Whether the run holds a trained `stage` (or something in the way of its JSON, which
        reading it then names)."""
        return self.meta(stage).exists()

    def holds_any(self, stage: str) -> bool:
        """Whether the run holds any of `stage`'s checkpoints: a plain training is then refused
        (it needs --resume or --overwrite)."""
        return any(p.exists() for p in self.stage_files(stage) if p not in self.logs(stage))

    def missing(self, stage: str, last: bool = False) -> UsageError:
        """The error for a stage the run does not hold, with the command that makes it."""
        name = self.meta(stage, last).name
        if last:  # --resume
            return UsageError(
                f"--resume: {self} has no {stage} checkpoint to continue ({name} missing); "
                "start without --resume"
            )
        if self.meta(stage, last=True).is_file():  # stopped before its first validation
            stopped = f"{self} has no finished {stage} ({name} missing): its training stopped"
            if not self.train_state(stage).is_file():  # nothing to continue from
                return UsageError(
                    f"{stopped} and left no {self.train_state(stage).name} to continue from; "
                    f"train it anew with `vqgen train-{stage} --run {self} --overwrite`"
                )
            return UsageError(
                f"{stopped} before it first validated; continue it with "
                f"`vqgen train-{stage} --run {self} --resume`"
            )
        return UsageError(
            f"{self} has no {stage} checkpoint ({name} missing); {TRAIN_HINTS[stage]}"
        )

    @contextlib.contextmanager
    def lock(self, verb: str, enabled: bool = True) -> Iterator[None]:
        """Hold the run directory's lock while `verb` writes into it (vqgen.runlock)."""
        with hold(self.root, verb, enabled):
            yield

    def made_from(self, stage: str) -> list[Path]:
        """What the run holds that was made from `stage`'s model and no longer fits once that
        model changes: for the VQ-VAE, the prior and the code grids."""
        made = [*self.stage_files("prior"), self.codes_dir] if stage == "vqvae" else []
        return [p for p in made if p.exists()]
