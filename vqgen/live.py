"""Live curves: an optional TensorBoard event log of training, beside metrics-<stage>.jsonl.

    live = LiveLog.open(run.live_log("vqvae"), cfg.tensorboard)  # RUN/tensorboard/vqvae/
    live.begin(resumed_at=None)                                  # a fresh run: a fresh log
    live.scalars({"loss": 0.1}, 10, "train")                     # as train/loss at step 10
    live.images("validate/images", grid, 10, rows=2)             # (N, 1, H, W) in [0, 1]
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
    """One stage's TensorBoard log in `folder`, or nothing (`folder` None). It starts with
    `begin` and opens its event file at the first write: a resumed run that has nothing left
    to train writes none."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.writer: Any = None
        self.purge: int | None = None

    @classmethod
    def open(cls, folder: Path, asked: bool | None) -> LiveLog:
        """The log in `folder` (RunDir.live_log), written by rank 0 where `wanted(asked)`."""
        return cls(folder if wanted(asked) and distributed.is_main() else None)

    @property
    def on(self) -> bool:
        return self.folder is not None

    def begin(self, resumed_at: int | None) -> None:
        """A fresh run replaces the folder's events (as it does the JSONL log); a run resumed
        at step `resumed_at` hides those logged after it, which it trains again."""
        if self.folder is not None and resumed_at is None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.purge = None if resumed_at is None else resumed_at + 1

    def _open(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow

            self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=self.purge)
        return self.writer

    def scalars(self, values: dict[str, float], step: int, group: str) -> None:
        """Each scalar as group/name: 'train/loss', 'validate/val_ssim' ..."""
        if self.folder is None:
            return
        writer = self._open()
        for name, value in values.items():
            writer.add_scalar(f"{group}/{name}", value, step)
        writer.flush()

    def images(self, tag: str, images: Tensor, step: int, rows: int = 1) -> None:
        """Images (N, C, H, W) in [0, 1] as one grid of `rows` rows."""
        if self.folder is None:
            return
        from torchvision.utils import make_grid

        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=-(-len(images) // rows))
        writer = self._open()
        writer.add_image(tag, grid, step)  # (C, H', W')
        writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
