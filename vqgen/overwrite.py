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

from vqgen import distributed
from vqgen.errors import UsageError
from vqgen.rundir import RunDir
from vqgen.runlock import hold

REPLACED_NAME = ".replaced"  # what --overwrite replaces, until the new training has saved


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
    old = _replaced(run, stage, resume, overwrite, trains, resumable)
    if not old:
        yield
        return
    aside, last = run.root / REPLACED_NAME, run.meta(stage, last=True)
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    before = _stamp(last)  # the last checkpoint's inode: a new save renames a new file in
    for p in old:
        os.replace(p, aside / _aside_name(run, p))
    try:
        yield
    finally:
        saved = _stamp(last) not in (None, before)
        if not saved:  # put it all back, over the new logs if it began them
            for p in old:
                if p.is_dir():
                    shutil.rmtree(p)  # a folder is not replaced by one
                os.replace(aside / _aside_name(run, p), p)
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
        advice = "continue it with --resume or " if resumable else ""
        raise UsageError(
            f"{run} already holds a {stage} ({existing[0].name}); {advice}"
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
