"""One writer at a time in a run directory: an flock on RUN/.vqgen.lock.

    with hold(Path("checkpoints/demo"), "train-prior"):
        ...  # write into the run

The lock is released by the kernel even when its holder is killed; the file names the holder
(pid, verb, start time), so a second writer is refused in one line naming it, and the lock of
a process that died is taken over and said so. A process may take the lock again while it
holds it (the demo runs the other verbs). Under torchrun only rank 0 writes and takes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from vqgen.errors import RunLockedError, UsageError, printable, why
from vqgen.fileio import UMASK

LOCK_NAME = ".vqgen.lock"
_held: dict[Path, int] = {}  # run directories this process holds, with how deep it holds them


@contextlib.contextmanager
def hold(run_dir: Path, verb: str, enabled: bool = True) -> Iterator[None]:
    """Hold `run_dir`'s lock while `verb` writes into it (creating the folder if need be)."""
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
    created = _make_folder(run_dir)
    fd = _acquire(run_dir, verb)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        os.ftruncate(fd, 0)  # released cleanly: nothing stale for the next holder
        os.close(fd)
        if created and os.listdir(run_dir) == [LOCK_NAME]:  # a command that failed first
            (run_dir / LOCK_NAME).unlink()
            run_dir.rmdir()


def _make_folder(run_dir: Path) -> bool:
    """Create the run folder if need be; whether it was created. One line if it cannot be."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run {run_dir} is a file, not a folder; choose another --run")
    created = not run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise dangling(run_dir) or path_error(run_dir, err) from None
    return created


def _acquire(run_dir: Path, verb: str) -> int:
    """Take the lock and write the holder into it; its file descriptor. Refuses, naming the
    holder, while another process holds it."""
    fd = _open_lock(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = printable(os.read(fd, 4096).decode(errors="replace")) or "another process"
        os.close(fd)
        raise RunLockedError(
            f"{run_dir} is in use by {holder}; wait for it to finish or use another --run"
        ) from None
    stale = printable(os.read(fd, 4096).decode(errors="replace"))
    if stale:  # its holder died without releasing it: the kernel already has
        warnings.warn(
            f"{run_dir}: took over the lock of {stale}, which is no longer running", stacklevel=4
        )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`vqgen {verb}` (pid {os.getpid()}, since {started})".encode(), 0)
    except OSError as err:  # a full disk
        os.close(fd)
        raise path_error(run_dir / LOCK_NAME, err) from None
    return fd


def _open_lock(run_dir: Path) -> int:
    """Open or create the lock file, never through a link: a link would have vqgen truncate
    its target and show its content as the holder."""
    path = run_dir / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~UMASK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            why = "a symbolic link, which vqgen never follows"
        elif err.errno == errno.EISDIR:
            why = "a folder, where vqgen keeps its lock file"
        else:
            raise path_error(run_dir, err) from None
        raise UsageError(f"{path} is {why}; remove it") from None


def path_error(path: Path, err: OSError, option: str = "--run") -> UsageError:
    """A one-line UsageError naming `path` and the fix for a failed read or write there."""
    return UsageError(f"{option} {path}: cannot write here ({why(err)}); choose another {option}")


def dangling(path: Path) -> UsageError | None:
    """The error for a `path` that is a link to nothing, if it is one."""
    if path.is_symlink() and not path.exists():
        return UsageError(
            f"--run {path} is a link to {os.readlink(path)}, which does not exist; "
            "create that folder or choose another --run"
        )
    return None
