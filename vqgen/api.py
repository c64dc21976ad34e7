"""The Python API: a trained run as an object, and the datasets, for use from code.

    run = vqgen.load_run("checkpoints/oasis")
    x = run.data("test").images[:8]          # (8, 1, S, S) float in [0, 1]
    codes = run.encode(x)                     # each level's (8, h, w) long grids, coarse first
    y = run.decode(codes)                     # == run.reconstruct(x)
    s = run.sample(16, temperature=0.9, seed=1)

Images go in and come out as float tensors in [0, 1] shaped (N, 1, S, S), S the run's size;
outputs are on the CPU. `Run` is the public face of the loaded run the verbs use
(vqgen.loaded), so the same seed gives the same slices here as with `vqgen sample`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqgen import loaded
from vqgen.config import EVAL_SAMPLES, DataConfig, EvalConfig, SampleConfig, eval_sampling
from vqgen.data import SliceDataset
from vqgen.data import load_data as load_split_data
from vqgen.errors import UsageError
from vqgen.evaluate import evaluate
from vqgen.models.vqvae import VQVAE
from vqgen.rundir import RunDir


def load_run(path: str | Path, device: str | torch.device = "auto") -> Run:
    """Load a trained run directory: its VQ-VAE, and its prior where it has one.

    `device` is auto, cpu, cuda or cuda:N (or a torch.device). A prior that does not fit the
    VQ-VAE is refused here, as `vqgen sample` and `vqgen evaluate` refuse it."""
    return Run(loaded.LoadedRun.load(path, device))


def load_data(
    source: str | Path = "mni152",
    split: str = "train",
    *,
    size: int = 128,
    kind: str = "auto",
    seed: int = 0,
    strict: bool = False,
) -> SliceDataset:
    """One split of a dataset as the CLI reads it: `.images` is (N, 1, size, size) float in
    [0, 1], beside `.labels`, `.positions` and `.subjects`.

    `source` is a dataset folder (OASIS, ADNI, NIfTI or a folder of images; `kind` names the
    layout when auto-detection is not wanted) or "mni152", the embedded template. `seed`
    drives the subject-level splits of sources without given folders; with `strict`, an
    unreadable image is an error instead of a counted warning."""
    cfg = DataConfig(source=str(source), kind=kind, seed=seed, strict=strict)
    return load_split_data(cfg, split, size)


class Run:
    """A trained run: its VQ-VAE, its prior (None until `vqgen train-prior`), their metadata,
    the run directory and the device they live on. Make one with `load_run`."""

    def __init__(self, run: loaded.LoadedRun) -> None:
        self.loaded = run  # what the verbs use; this object checks what a user passes in

    def __repr__(self) -> str:
        return repr(self.loaded)

    @property
    def run_dir(self) -> RunDir:
        return self.loaded.dir

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def vqvae(self) -> VQVAE:
        return self.loaded.vqvae

    @property
    def prior(self) -> nn.Module | None:
        return self.loaded.prior

    @property
    def vqvae_meta(self) -> dict[str, Any]:
        return self.loaded.vqvae_meta

    @property
    def prior_meta(self) -> dict[str, Any] | None:
        return self.loaded.prior_meta

    @property
    def size(self) -> int:
        """The side S of the (N, 1, S, S) slices this run reads and writes."""
        return self.loaded.size

    @property
    def levels(self) -> int:
        """How many code levels the VQ-VAE has: 1, or 2 (top and bottom)."""
        return self.loaded.levels

    def data(self, split: str = "test") -> SliceDataset:
        """A split of the dataset this run was trained on, prepared as it was in training."""
        return self.loaded.split(split)

    # -- stage 1: images <-> codes --------------------------------------------------------------

    def encode(self, images: Tensor) -> list[Tensor]:
        """(N, 1, S, S) images in [0, 1] -> each level's (N, h, w) long code grid, coarse
        first: [codes] for a one-level run, [top, bottom] for two."""
        return self.loaded.encode(self._check_images(images))

    def decode(self, codes: list[Tensor] | Tensor) -> Tensor:
        """Each level's (N, h, w) code grid, coarse first (or one tensor for a one-level run)
        -> (N, 1, S, S) images in [0, 1], on the CPU."""
        return self.loaded.decode(self._check_codes(codes))

    def reconstruct(self, images: Tensor) -> Tensor:
        """(N, 1, S, S) images in [0, 1] -> their reconstructions, the same shape, on the CPU:
        `decode(encode(images))`."""
        return self.loaded.reconstruct(self._check_images(images))[0]

    # -- stage 2: the prior ---------------------------------------------------------------------

    def sample(
        self,
        n: int = 16,
        *,
        label: str | None = None,
        slice: float | None = None,  # named as the CLI's --slice
        temperature: float = 1.0,
        top_k: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> Tensor:
        """`n` new slices, (n, 1, S, S) in [0, 1] on the CPU, as `vqgen sample` draws them with
        the same options: the same seed gives the same slices on the same device.

        `label` (a class name) and `slice` (a level in [0, 1]) condition a prior trained with
        that condition; without them samples go through the classes or across the levels."""
        cfg = SampleConfig(
            n=n,
            temperature=temperature,
            top_k=top_k,
            label=label,
            slice_pos=slice,
            seed=seed,
            guidance=guidance,
        )
        return self.loaded.draw(cfg)[0]

    def evaluate(
        self,
        split: str = "test",
        *,
        n_samples: int = EVAL_SAMPLES,
        temperature: float = 1.0,
        top_k: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        out: str | Path | None = None,
    ) -> dict[str, Any]:
        """Score the run on a split as `vqgen evaluate` does (minutes on a CPU); returns the
        report, also written to `out` (default run/report.json) with report.md beside it."""
        sampling = eval_sampling(
            n_samples, temperature=temperature, top_k=top_k, guidance=guidance, seed=seed
        )
        cfg = EvalConfig(split=split, sampling=sampling)
        return dict(evaluate(self.loaded, cfg, None if out is None else Path(out)))

    # -- input checks ---------------------------------------------------------------------------

    def _check_images(self, images: Tensor) -> Tensor:
        """`images` as a float tensor, if shaped (N, 1, S, S) with values in [0, 1]."""
        S = self.size
        if not isinstance(images, Tensor):
            raise UsageError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1:] != (1, S, S) or len(images) == 0:
            raise UsageError(
                f"images must be shaped (N, 1, {S}, {S}) with N >= 1 for this run, "
                f"got {tuple(images.shape)}"
            )
        if not images.dtype.is_floating_point:
            raise UsageError(f"images must be floats in [0, 1], got dtype {images.dtype}")
        if not (torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise UsageError("images must hold finite values in [0, 1]; scale them first")
        return images.float()

    def _check_codes(self, codes: list[Tensor] | Tensor) -> list[Tensor]:
        """`codes` as a list of long grids, one per level, if each is (N, h, w) on its level's
        grid with codes in [0, K)."""
        if not isinstance(codes, Tensor | list | tuple):
            raise UsageError(
                f"codes must be a tensor or a list of tensors, got {type(codes).__name__}"
            )
        levels = [codes] if isinstance(codes, Tensor) else list(codes)
        grids, K = self.vqvae.cfg.grids, self.vqvae.cfg.codebook_size
        shapes = ", ".join(f"(N, {g}, {g})" for g in grids)
        if len(levels) != len(grids):
            raise UsageError(
                f"codes must be a list of {len(grids)} grid(s), coarse first: {shapes}; "
                f"got {len(levels)}"
            )
        for c, g in zip(levels, grids, strict=True):
            if not isinstance(c, Tensor) or c.dim() != 3 or c.shape[1:] != (g, g) or not len(c):
                got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise UsageError(f"codes must be shaped {shapes} for this run, got {got}")
            if c.dtype.is_floating_point or c.dtype == torch.bool:
                raise UsageError(f"codes must be integers, got dtype {c.dtype}")
            if c.min() < 0 or c.max() >= K:
                raise UsageError(f"codes must lie in [0, {K}) for this run's codebook")
        if len({len(c) for c in levels}) != 1:
            raise UsageError("codes of every level must hold the same number N of grids")
        return [c.long() for c in levels]
