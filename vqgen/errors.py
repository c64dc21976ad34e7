"""Errors a user can act on. The CLI prints each as one line and exits with its code; `why`
and `printable` say an OS error's reason, and any text from a file, safely in that line.

Exit codes follow DESIGN.md: 2 for a usage error (bad option, missing or unrecognised path,
unusable input data), 1 for a failure at run time (NaN loss, a checkpoint that does not fit).
"""

import errno


class VqgenError(Exception):
    """Base class: a failure at run time, exit code 1."""

    exit_code = 1


class UsageError(VqgenError):
    """A bad option, a missing or unrecognised path: exit code 2."""

    exit_code = 2


class DataError(UsageError):
    """Input data that vqgen cannot use: empty split, corrupt image, bad file name."""


class CheckpointError(VqgenError):
    """A run directory or checkpoint that is missing, corrupt or from another config."""


class TrainingError(VqgenError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""


class Interrupted(VqgenError):
    """Stopped by Ctrl-C or SIGTERM; what was saved is named in the message."""

    exit_code = 130


class RunLockedError(VqgenError):
    """Another process is writing the run directory."""


class OutputError(VqgenError, OSError):
    """A file vqgen could not write (a full disk, no permission): nothing half-written is left.
    Also an OSError, so that a caller that can go on without the file (a cache) still can."""


REASONS = {  # an OSError's errno, in words a user acts on
    errno.ENOSPC: "the disk is full; free some space",
    errno.EROFS: "it is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a file is in the way of this folder",
    errno.EEXIST: "a file is in the way of this folder",
    errno.EISDIR: "it is a folder, not a file",
}


def why(err: BaseException) -> str:
    """An OS error's reason in words a user acts on (safetensors reports a full disk in its
    own error, with the OS's words)."""
    if isinstance(err, OSError) and err.errno in REASONS:
        return REASONS[err.errno]
    if "No space left" in str(err):
        return REASONS[errno.ENOSPC]
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def printable(text: str) -> str:
    """`text` stripped, with control characters (a terminal's escape sequences) shown as '?':
    what a lock file holds is shown, never obeyed."""
    return "".join(c if c.isprintable() else "?" for c in text.strip())
