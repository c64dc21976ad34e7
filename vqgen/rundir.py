"""The run directory as a whole: one writer at a time, and what a training may replace.

    with rundir.lock(run_dir, "train-vqvae"):
        rundir.guard_stage(run_dir, "vqvae", resume=False, overwrite=False)
        ...

Every verb that writes a run directory holds its lock; training a stage into a run that holds
one needs --resume or --overwrite.
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
from pathlib import Path

from vqgen import distributed
from vqgen.checkpoint import UMASK
from vqgen.errors import RunLockedError, UsageError

LOCK_NAME = ".vqgen.lock"
_held: dict[Path, int] = {}  # run directories this process holds, with how deep it holds them


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
def lock(run_dir: Path, verb: str, enabled: bool = True) -> Iterator[None]:
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
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
    except OSError as err:
        raise path_error(run_dir, err) from None
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


@contextlib.contextmanager
def training(run_dir: Path, stage: str, resume: bool, overwrite: bool) -> Iterator[None]:
    """While a stage trains into `run_dir`: rank 0 holds the lock and applies `guard_stage`,
    and the other ranks wait for it before they read the run."""
    main = distributed.is_main()
    with lock(run_dir, f"train-{stage}", enabled=main):
        if main:
            guard_stage(run_dir, stage, resume, overwrite)
        distributed.barrier()
        yield


def guard_stage(run_dir: Path, stage: str, resume: bool, overwrite: bool) -> None:
    """Refuse to train a stage into a run that already holds one, unless the user said which:
    --resume continues it, --overwrite replaces it (and, for the VQ-VAE, the prior and code
    grids made from it, which no longer fit)."""
    existing = [p for p in stage_files(run_dir, stage) if p.exists()]
    if resume or not existing:
        return
    if not overwrite:
        raise UsageError(
            f"{run_dir} already holds a {stage} ({existing[0].name}); continue it with --resume "
            "or replace it with --overwrite"
        )
    gone = existing
    if stage == "vqvae":
        gone += [p for p in stage_files(run_dir, "prior") if p.exists()]
        shutil.rmtree(run_dir / "codes", ignore_errors=True)
    for p in gone:
        p.unlink()
    removed = ", ".join(sorted(p.name for p in gone))
    warnings.warn(f"--overwrite: removed {removed} from {run_dir}", stacklevel=2)


def stage_files(run_dir: Path, stage: str) -> list[Path]:
    """Every file a stage's training writes into the run directory."""
    names = [f"{stage}.json", f"{stage}.safetensors", f"{stage}-last.json"]
    names += [f"{stage}-last.safetensors", f"train_state-{stage}.safetensors"]
    return [run_dir / name for name in (*names, f"metrics-{stage}.jsonl")]
