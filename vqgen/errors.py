"""Errors a user can act on. The CLI prints each as one line and exits with its code.

Exit codes follow DESIGN.md: 2 for a usage error (bad option, missing or unrecognised path,
unusable input data), 1 for a failure at run time (NaN loss, a checkpoint that does not fit).
"""


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
