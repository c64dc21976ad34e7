"""What training a stage may replace in a run directory, and how --overwrite stays undoable
until the new training has saved.

    with training(run, "prior", resume=False, overwrite=True):
        ...  # train; the old files come back if this fails before its first save

Training a stage into a run that holds one needs --resume (continue it) or --overwrite (replace
it, and for the VQ-VAE the prior and code grids made from it). What --overwrite replaces is set
aside in RUN/.replaced, not deleted, until the new training has saved a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from vqgen import distributed, fileio
from vqgen.errors import CheckpointError, UsageError
from vqgen.rundir import RunDir
from vqgen.runlock import hold

REPLACED_NAME = ".replaced"  # what --overwrite replaces, until the new training has saved
GUARD = "guard.json"  # in it: the stage, its train state's inode before, what was moved
_LIVE: set[Path] = set()  # runs whose .replaced an --overwrite of this process holds now


@contextlib.contextmanager
def training(
    run: RunDir, stage: str, resume: bool, overwrite: bool, trains: bool = True
) -> Iterator[None]:
    """While a stage trains into the run: rank 0 holds the lock and replaces what the run
    holds only as `replacing` allows, and the other ranks wait for it before they read
    the run."""
    main = distributed.is_main()
    guard = replacing(run, stage, resume, overwrite, trains) if main else contextlib.nullcontext()
    with hold(run.root, f"train-{stage}", enabled=main), guard:
        distributed.barrier()
        yield


@contextlib.contextmanager
def replacing(
    run: RunDir,
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
    settle(run)  # an earlier --overwrite cut short is finished or undone first
    old = _replaced(run, stage, resume, overwrite, trains, resumable)
    if not old:
        yield
        return
    aside, last = run.root / REPLACED_NAME, run.train_state(stage)  # a save's last file
    aside.mkdir()
    before = _stamp(last)  # its inode: a new save renames a new file in
    moved = {_aside_name(run, p): str(p.relative_to(run.root)) for p in old}
    fileio.write_json(aside / GUARD, {"stage": stage, "last": before, "moved": moved})
    for p in old:
        os.replace(p, aside / _aside_name(run, p))
    _LIVE.add(aside.resolve())
    try:
        yield
    finally:
        _LIVE.discard(aside.resolve())
        saved = _stamp(last) not in (None, before)
        if not saved:  # put it all back, over the new logs if it began them
            _put_back(run, aside, moved)
        shutil.rmtree(aside, ignore_errors=True)
    if saved:
        removed = ", ".join(sorted(_aside_name(run, p) for p in old))
        warnings.warn(f"--overwrite: removed {removed} from {run}", stacklevel=3)


def _aside_name(run: RunDir, path: Path) -> str:
    """A file or folder of the run as one name: 'vqvae.json', 'tensorboard-vqvae'."""
    return "-".join(path.relative_to(run.root).parts)


def _replaced(
    run: RunDir, stage: str, resume: bool, overwrite: bool, trains: bool, resumable: bool
) -> list[Path]:
    """What training `stage` replaces, refusing where the user did not say --overwrite."""
    made_from = run.made_from(stage) if trains else []
    if resume:
        if made_from and not overwrite:
            names = ", ".join(sorted(p.name for p in made_from))
            raise UsageError(
                f"{run} holds {made_from[0].name}, made from its {stage}, which --resume "
                f"would change under it; add --overwrite to remove {names} once the "
                f"{stage} has saved, or resume a copy of the run"
            )
        return made_from
    existing = [p for p in run.stage_files(stage) if p.exists()]
    if set(existing) <= set(run.logs(stage)):  # logs alone: it never saved a step
        return []
    if not overwrite:
        resumes = resumable and run.train_state(stage).is_file()  # else nothing to continue
        advice = "continue it with --resume or " if resumes else ""
        raise UsageError(
            f"{run} already holds a {stage} ({existing[0].name}); {advice}"
            "replace it with --overwrite"
        )
    return existing + made_from


def _put_back(run: RunDir, aside: Path, moved: dict[str, str]) -> None:
    """Move the files set aside (`moved`: name in `aside` -> path in the run) back into the run,
    over whatever a new training began there."""
    for name, relative in moved.items():
        target = run.root / relative
        if target.is_dir():
            shutil.rmtree(target)  # a folder is not replaced by one
        os.replace(aside / name, target)


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (device and inode), or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def settle(run: RunDir) -> None:
    """Finish or undo an --overwrite that SIGKILL, a power cut or a full disk stopped before
    it could: if the new training saved its last checkpoint since, the old files set aside in
    RUN/.replaced are removed; if not, they are put back over whatever the new training began.
    Either way one warning says which. A run another process holds (mid --overwrite) is one
    line naming it. The --overwrite of this very process (the demo's, around its verbs) is
    not one that stopped: it is left alone."""
    aside = run.root / REPLACED_NAME
    if not aside.is_dir() or aside.resolve() in _LIVE:
        return
    with hold(run.root, "settle"):
        try:
            record = fileio.read_json(aside / GUARD)
            stage, before, moved = record["stage"], record["last"], dict(record["moved"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{aside} holds files an interrupted --overwrite set aside, without a readable "
                f"{GUARD}; move them back into {run} by hand, or remove {aside}"
            ) from None
        now = _stamp(run.train_state(stage))
        names = ", ".join(sorted(moved.values()))
        if now is not None and list(now) != before:  # the new training saved: finish
            shutil.rmtree(aside)
            warnings.warn(
                f"{run}: finished an interrupted --overwrite: removed {names}", stacklevel=3
            )
            return
        _put_back(run, aside, moved)
        shutil.rmtree(aside)
        warnings.warn(
            f"{run}: an --overwrite stopped before its first save; put back {names}",
            stacklevel=3,
        )
