"""Bounds on what a user or a run file may set, and the checks that refuse the rest in one line
naming the option: a hand-edited or hostile run file is refused before a model is built
(checkpoint.build_checked checks the rest)."""

from __future__ import annotations

import math

from vqgen.errors import UsageError

MIN_SIZE, MAX_SIZE = 8, 2048  # slice sides: MRI slices are 256 or 512 px, a few 1024
MAX_SEED = 2**32 - 1  # the largest seed every generator vqgen uses takes
# sizes a run file may ask for, far above any model of vqgen's
MAX_CODES, MAX_CHANNELS, MAX_LAYERS, MAX_KERNEL = 65536, 2048, 256, 15
MAX_SAMPLES = 10_000  # slices one `sample` or `evaluate` draws: held in memory at once


def positive(option: str, value: float) -> None:
    """Refuse a zero, negative or non-finite setting, naming its option."""
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{option} must be a positive finite number, got {value}")


def at_least(option: str, value: float, low: float) -> None:
    """Refuse a setting below `low` (or not finite), naming its option."""
    if not (value >= low and math.isfinite(value)):
        raise UsageError(f"{option} must be a finite number of at least {low}, got {value}")


def at_most(option: str, value: float, high: float) -> None:
    """Refuse a setting above `high`: a size read from a run file must not be able to ask for
    more memory than a model of vqgen's ever needs."""
    if value > high:
        raise UsageError(f"{option} must be at most {high}, got {value}")


def slice_size(option: str, value: int) -> None:
    """Refuse a slice side outside [MIN_SIZE, MAX_SIZE], naming its option."""
    if not MIN_SIZE <= value <= MAX_SIZE:
        raise UsageError(f"{option} must lie in [{MIN_SIZE}, {MAX_SIZE}], got {value}")


def seed_value(option: str, value: int) -> None:
    """Refuse a seed that numpy or torch cannot take, naming its option."""
    if not 0 <= value <= MAX_SEED:
        raise UsageError(f"{option} must be a whole number in [0, {MAX_SEED}], got {value}")


def one_of(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}, got '{value}'")
