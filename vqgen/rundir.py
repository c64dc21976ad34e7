"""The run directory: every path of a run, one writer at a time, and what a training may
replace.

    run = RunDir(Path("checkpoints/demo"))
    run.weights("vqvae")          # checkpoints/demo/vqvae.safetensors
    run.codes("train")            # checkpoints/demo/codes/train.safetensors
    with run.training("prior", resume=False, overwrite=False):
        ...  # train; --overwrite's old files come back if this fails before its first save

Every module asks a RunDir for the paths it reads and writes; none spells one out. A stage is
"vqvae" or "prior"; a code level, where a run has more than one, is named by `level`, and the
run keeps one set of files per level. Every verb that writes a run holds its lock; training a
stage into a run that holds one needs --resume or --overwrite.

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
import errno
import fcntl
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vqgen import distributed
from vqgen.errors import RunLockedError, UsageError
from vqgen.fileio import UMASK

LOCK_NAME = ".vqgen.lock"
REPLACED_NAME = ".replaced"  # what --overwrite replaces, until the new training has saved
TRAIN_HINTS = {"vqvae": "run `vqgen train-vqvae` first", "prior": "run `vqgen train-prior` first"}
_held: dict[Path, int] = {}  # run directories this process holds, with how deep it holds them


@dataclass(frozen=True)
class RunDir:
    """One run directory and every path in it."""

    root: Path

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
        return self.root / "codes"

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

    def has(self, stage: str) -> bool:
        """Whether the run holds a trained `stage`."""
        return self.meta(stage).is_file()

    def missing(self, stage: str, last: bool = False) -> UsageError:
        """The error for a stage the run does not hold, with the command that makes it."""
        name = self.meta(stage, last).name
        if last:  # --resume
            return UsageError(
                f"--resume: {self} has no {stage} checkpoint to continue ({name} missing); "
                "start without --resume"
            )
        if self.meta(stage, last=True).is_file():  # stopped before its first validation
            return UsageError(
                f"{self} has no finished {stage} ({name} missing): its training stopped before "
                f"it first validated; continue it with `vqgen train-{stage} --run {self} --resume`"
            )
        return UsageError(
            f"{self} has no {stage} checkpoint ({name} missing); {TRAIN_HINTS[stage]}"
        )

    @contextlib.contextmanager
    def lock(self, verb: str, enabled: bool = True) -> Iterator[None]:
        """Hold the run directory's lock while `verb` writes into it; see `_lock`."""
        with _lock(self, verb, enabled):
            yield

    def made_from(self, stage: str) -> list[Path]:
        """What the run holds that was made from `stage`'s model and no longer fits once that
        model changes: for the VQ-VAE, the prior and the code grids."""
        made = [*self.stage_files("prior"), self.codes_dir] if stage == "vqvae" else []
        return [p for p in made if p.exists()]

    @contextlib.contextmanager
    def training(
        self, stage: str, resume: bool, overwrite: bool, trains: bool = True
    ) -> Iterator[None]:
        """While a stage trains into the run: rank 0 holds the lock and replaces what the run
        holds only as `replacing` allows, and the other ranks wait for it before they read
        the run."""
        main = distributed.is_main()
        replacing = (
            self.replacing(stage, resume, overwrite, trains) if main else contextlib.nullcontext()
        )
        with _lock(self, f"train-{stage}", enabled=main), replacing:
            distributed.barrier()
            yield

    @contextlib.contextmanager
    def replacing(
        self,
        stage: str,
        resume: bool,
        overwrite: bool,
        trains: bool = True,
        resumable: bool = True,
    ) -> Iterator[None]:
        """Refuse to train a stage into a run that already holds one, unless the user said
        which: --resume continues it, --overwrite replaces it (and, for the VQ-VAE, the prior
        and code grids made from it, which no longer fit). A --resume that `trains` (has steps
        left) changes the VQ-VAE under its prior too, so it needs --overwrite as well. A verb
        that has no --resume is not `resumable`, and its refusal does not advise one.

        What --overwrite replaces is set aside in RUN/.replaced, not deleted, until the new
        training has saved a checkpoint: a command that fails before that (a bad option, data
        it cannot use, a first step that diverges, Ctrl-C), or saves nothing, puts it all back.
        """
        old = self._replaced(stage, resume, overwrite, trains, resumable)
        if not old:
            yield
            return
        aside, last = self.root / REPLACED_NAME, self.meta(stage, last=True)
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir()
        before = _stamp(last)  # the last checkpoint's inode: a new save renames a new file in
        for p in old:
            os.replace(p, aside / self._aside_name(p))
        try:
            yield
        finally:
            saved = _stamp(last) not in (None, before)
            if not saved:  # put it all back, over the new logs if it began them
                for p in old:
                    if p.is_dir():
                        shutil.rmtree(p)  # a folder is not replaced by one
                    os.replace(aside / self._aside_name(p), p)
            shutil.rmtree(aside, ignore_errors=True)
        if saved:
            removed = ", ".join(sorted(self._aside_name(p) for p in old))
            warnings.warn(f"--overwrite: removed {removed} from {self}", stacklevel=3)

    def _aside_name(self, path: Path) -> str:
        """A file or folder of the run as one name: 'vqvae.json', 'tensorboard-vqvae'."""
        return "-".join(path.relative_to(self.root).parts)

    def _replaced(
        self, stage: str, resume: bool, overwrite: bool, trains: bool, resumable: bool
    ) -> list[Path]:
        """What training `stage` replaces, refusing where the user did not say --overwrite."""
        made_from = self.made_from(stage) if trains else []
        if resume:
            if made_from and not overwrite:
                names = ", ".join(sorted(p.name for p in made_from))
                raise UsageError(
                    f"{self} holds {made_from[0].name}, made from its {stage}, which --resume "
                    f"would change under it; add --overwrite to remove {names} once the "
                    f"{stage} has saved, or resume a copy of the run"
                )
            return made_from
        existing = [p for p in self.stage_files(stage) if p.exists()]
        if set(existing) <= set(self.logs(stage)):  # logs alone: it never saved a step
            return []
        if not overwrite:
            advice = "continue it with --resume or " if resumable else ""
            raise UsageError(
                f"{self} already holds a {stage} ({existing[0].name}); {advice}"
                "replace it with --overwrite"
            )
        return existing + made_from


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (device and inode), or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def path_error(path: Path, err: OSError, option: str = "--run") -> UsageError:
    """A one-line UsageError naming `path` and the fix for a failed read or write there."""
    fixes = {
        errno.EROFS: "it is on a read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "the disk is full; free some space",
        errno.ENOTDIR: "a file is in the way of this folder",
        errno.EEXIST: "a file is in the way of this folder",
        errno.EISDIR: "it is a folder, not a file",
    }
    why = fixes.get(err.errno, err.strerror or str(err))
    return UsageError(f"{option} {path}: cannot write here ({why}); choose another {option}")


@contextlib.contextmanager
def _lock(run: RunDir, verb: str, enabled: bool = True) -> Iterator[None]:
    """Hold the run directory's lock while `verb` writes into it.

    The lock is an flock on RUN/.vqgen.lock, released by the kernel even when the holder is
    killed; the file names the holder (pid, verb, start time), so a second writer is refused in
    one line naming it, and the lock of a process that died is taken over and said so. A process
    may take the lock again while it holds it (the demo runs the other verbs). Under torchrun only
    rank 0 writes, and only rank 0 takes it.
    """
    if not enabled:
        yield
        return
    run_dir = run.root
    key = run_dir.resolve()
    if key in _held:  # taken again by its holder
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run {run_dir} is a file, not a folder; choose another --run")
    created = not run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise dangling(run_dir) or path_error(run_dir, err) from None
    fd = _open_lock(run)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunLockedError(
            f"{run_dir} is in use by {holder}; wait for it to finish or use another --run"
        ) from None
    stale = os.read(fd, 4096).decode(errors="replace").strip()
    if stale:  # its holder died without releasing it: the kernel already has
        warnings.warn(
            f"{run_dir}: took over the lock of {stale}, which is no longer running", stacklevel=3
        )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"`vqgen {verb}` (pid {os.getpid()}, since {started})".encode(), 0)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        os.ftruncate(fd, 0)  # released cleanly: nothing stale for the next holder
        os.close(fd)
        if created and os.listdir(run_dir) == [LOCK_NAME]:  # a command that failed first
            run.lock_file.unlink()
            run_dir.rmdir()


def _open_lock(run: RunDir) -> int:
    """Open or create the lock file, never through a link: a link would have vqgen truncate
    its target and show its content as the holder."""
    path = run.lock_file
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~UMASK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            why = "a symbolic link, which vqgen never follows"
        elif err.errno == errno.EISDIR:
            why = "a folder, where vqgen keeps its lock file"
        else:
            raise path_error(run.root, err) from None
        raise UsageError(f"{path} is {why}; remove it") from None


def dangling(path: Path) -> UsageError | None:
    """The error for a `path` that is a link to nothing, if it is one."""
    if path.is_symlink() and not path.exists():
        return UsageError(
            f"--run {path} is a link to {os.readlink(path)}, which does not exist; "
            "create that folder or choose another --run"
        )
    return None
