"""A trained run, loaded once for a whole command: its VQ-VAE and prior on a device, their
metadata, the data they were trained on, and what the verbs do with them.

    run = LoadedRun.load(Path("checkpoints/demo"), "auto")
    test = run.split("test")                      # read once a command, however often asked
    recon, codes = run.reconstruct(test.images)
    images, codes = run.draw(SampleConfig(n=16))  # what `vqgen sample` writes

`vqgen sample` and `vqgen evaluate` take a loaded run; `vqgen.api.Run` is its public face,
which checks what a user passes in. Each model, split and hash is loaded or computed once.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqgen import checkpoint, conditioning, fileio, inference
from vqgen.config import DataConfig, SampleConfig
from vqgen.data import SliceDataset, load_data, load_reference
from vqgen.device import resolve_device
from vqgen.models.vqvae import VQVAE
from vqgen.overwrite import settle
from vqgen.rundir import RunDir
from vqgen.sampling import sample_levels

if sys.version_info >= (3, 11):
    from typing import Self
else:  # a dependency of torch's
    from typing_extensions import Self


@dataclass(eq=False, repr=False)  # models compare and print poorly
class LoadedRun:
    """A run's models on `device`, their metadata, and the splits read so far. Make one with
    `LoadedRun.load`."""

    dir: RunDir
    device: torch.device
    vqvae: VQVAE
    vqvae_meta: dict[str, Any]
    vqvae_sha256: str
    prior: nn.Module | None  # None until `vqgen train-prior`
    prior_meta: dict[str, Any] | None
    moved_to: str | None = None  # the data's place, where it moved since training
    _splits: dict[str, SliceDataset] = field(default_factory=dict)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "auto", data: str | None = None
    ) -> Self:
        """Load a trained run directory: its VQ-VAE, and its prior where it has one, on
        `device` (auto, cpu, cuda or cuda:N). `data` is the dataset's new place, where it moved
        since training. A prior that does not fit the VQ-VAE is refused here."""
        run = RunDir(Path(path)).check_exists()
        settle(run)  # an --overwrite cut short is finished or undone before anything is read
        dev = resolve_device(device)
        vqvae, vqvae_meta = checkpoint.load_vqvae(run, dev)
        vqvae_hash = fileio.sha256(run.weights("vqvae"))
        prior, prior_meta = None, None
        if run.has("prior"):
            prior, prior_meta = checkpoint.load_prior(
                run, dev, vqvae_cfg=vqvae.cfg, vqvae_hash=vqvae_hash
            )
        return cls(run, dev, vqvae, vqvae_meta, vqvae_hash, prior, prior_meta, data)

    def __repr__(self) -> str:
        prior = None if self.prior is None else self.prior.cfg.condition  # or "none": unconditional
        return (
            f"Run('{self.dir}', size={self.size}, levels={self.levels}, "
            f"prior={prior!r}, device='{self.device}')"
        )

    @property
    def size(self) -> int:
        """The side S of the (N, 1, S, S) slices this run reads and writes."""
        return self.vqvae.cfg.size

    @property
    def levels(self) -> int:
        """How many code levels the VQ-VAE has: 1, or 2 (top and bottom)."""
        return self.vqvae.cfg.levels

    # -- the data it was trained on ------------------------------------------------------------

    @functools.cached_property
    def data_config(self) -> DataConfig:
        """Where the run's slices are: as vqvae.json records them, or where they moved."""
        return checkpoint.run_data(self.dir, self.vqvae_meta, self.moved_to)

    def split(self, name: str) -> SliceDataset:
        """A split of the run's dataset, prepared as in training; read once per run object."""
        if name not in self._splits:
            self._splits[name] = load_data(self.data_config, name, self.size)
        return self._splits[name]

    def reference(self, name: str) -> SliceDataset:
        """The real slices evaluate compares samples with: the split, and for mni152 its
        evaluation subjects too (vqgen.data.load_reference)."""
        return load_reference(self.data_config, self.split(name))

    def codes(self, name: str) -> inference.CodeSet:
        """A split's code grids, from run/codes when this VQ-VAE made them."""
        return inference.split_codes(
            self._codes_run, name, self.vqvae, self.vqvae_sha256, lambda: self.split(name)
        )

    @functools.cached_property
    def _codes_run(self) -> RunDir:
        """The run, where code grids are kept; for a run that takes no files (a read-only
        disk) the run with a temporary folder for them, holding a copy of those it has: such a
        run is only read, and scored all the same."""
        folder = self.dir.codes_dir
        if os.access(folder if folder.is_dir() else self.dir.root, os.W_OK):
            return self.dir
        self._scratch = tempfile.TemporaryDirectory(prefix="vqgen-codes-")  # gone with self
        scratch = Path(self._scratch.name)
        if folder.is_dir():
            shutil.copytree(folder, scratch, dirs_exist_ok=True)
        return dataclasses.replace(self.dir, codes_at=scratch)

    # -- stage 1: images <-> codes -------------------------------------------------------------

    def encode(self, images: Tensor) -> list[Tensor]:
        """(N, 1, S, S) images in [0, 1] -> each level's (N, h, w) long code grid, coarse
        first."""
        return [c.long() for c in inference.encode(self.vqvae, images)]

    def decode(self, codes: list[Tensor]) -> Tensor:
        """Each level's code grids, coarse first -> (N, 1, S, S) images in [0, 1], on the CPU."""
        return inference.decode(self.vqvae, codes)

    def reconstruct(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Reconstructions of `images` and their code grids: `decode(encode(images))`."""
        return inference.reconstruct(self.vqvae, images)

    # -- stage 2: the prior --------------------------------------------------------------------

    def condition(self, cfg: SampleConfig) -> Tensor | None:
        """The prior's condition for `cfg`'s samples, refusing options it was not trained
        with; one line saying to train a prior where the run has none."""
        if self.prior is None or self.prior_meta is None:
            raise self.dir.missing("prior")
        return conditioning.for_sampling(self.prior.cfg, self.prior_meta, cfg)

    def guidance(self, cfg: SampleConfig) -> float:
        """The guidance scale `cfg`'s samples are drawn at."""
        if self.prior is None:
            raise self.dir.missing("prior")
        return conditioning.guidance_scale(self.prior.cfg, cfg)

    @torch.no_grad()
    def draw(self, cfg: SampleConfig) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """`cfg.n` samples, seeded: decoded in [0, 1] on the CPU, each level's code grids, and
        the condition they were drawn under (from `condition`)."""
        cond = self.condition(cfg)
        assert self.prior is not None
        if cfg.top_k is not None and cfg.top_k >= self.prior.cfg.codebook_size:
            warnings.warn(
                f"--top-k {cfg.top_k} keeps all {self.prior.cfg.codebook_size} codes of this "
                "prior: it changes nothing",
                stacklevel=3,
            )
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        codes = sample_levels(
            self.prior,
            cfg.n,
            cond=None if cond is None else cond.to(self.device),
            guidance=self.guidance(cfg),
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            generator=generator,
            device=self.device,
        )
        return self.decode(codes), [c.cpu() for c in codes], cond
