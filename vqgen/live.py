"""Live curves: an optional TensorBoard event log of training, beside metrics-<stage>.jsonl.

    live = LiveLog.open(run.root, "vqvae", cfg.tensorboard)   # RUN/tensorboard/vqvae/
    live.begin(resumed_at=None)                               # a fresh run: a fresh log
    live.scalars({"loss": 0.1}, 10, "train")                  # as train/loss at step 10
    live.images("validate/reconstructions", grid, step=10)    # (N, 1, H, W) in [0, 1]
    live.close()

Watch it with `tensorboard --logdir checkpoints/`. The log needs the `tensorboard` package
(`pip install vqgen[tensorboard]`): by default it is written when the package is installed,
asked for without it is a usage error, and turned off (or on ranks other than 0) a LiveLog
writes nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

from torch import Tensor

from vqgen import distributed
from vqgen.errors import UsageError

INSTALL = "pip install 'vqgen[tensorboard]'"


def available() -> bool:
    """Whether the tensorboard package can be imported."""
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except ValueError:  # a module without a spec: not a usable package
        return False


def wanted(asked: bool | None) -> bool:
    """Whether to write the log: as `asked` (--tensorboard/--no-tensorboard), or when the
    package is installed where nothing was asked. Asked for without it, a UsageError."""
    if asked and not available():
        raise UsageError(f"--tensorboard needs the tensorboard package: {INSTALL}")
    return available() if asked is None else asked


class LiveLog:
    """One stage's TensorBoard log in `folder`, or nothing (`folder` None); it writes from
    `begin` on."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.writer: Any = None

    def begin(self, resumed_at: int | None) -> None:
        """Start writing: a fresh run replaces the folder's events (as it does the JSONL log), a
        run resumed at step `resumed_at` hides those logged after it, which it trains again."""
        if self.folder is None:
            return
        if resumed_at is None:
            shutil.rmtree(self.folder, ignore_errors=True)
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow

        purge = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge)

    @classmethod
    def open(cls, root: Path, stage: str, asked: bool | None) -> LiveLog:
        """The log of `stage` under root/tensorboard/<stage>/, written by rank 0 where
        `wanted(asked)`."""
        on = wanted(asked) and distributed.is_main()
        return cls(root / "tensorboard" / stage if on else None)

    @property
    def on(self) -> bool:
        """Whether it writes (from `begin`)."""
        return self.writer is not None

    def scalars(self, values: dict[str, float], step: int, group: str) -> None:
        """Each scalar as group/name: 'train/loss', 'validate/val_ssim' ..."""
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{group}/{name}", value, step)
        self.writer.flush()

    def images(self, tag: str, images: Tensor, step: int, rows: int = 1) -> None:
        """Images (N, C, H, W) in [0, 1] as one grid of `rows` rows."""
        if self.writer is None:
            return
        from torchvision.utils import make_grid

        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=-(-len(images) // rows))
        self.writer.add_image(tag, grid, step)  # (C, H', W')
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
