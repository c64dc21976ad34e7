"""The `sample` verb: draw code grids from the prior, decode them, write PNG slices.

    result = sample(Path("run"), SampleConfig(n=16, temperature=1.0, seed=0))

It draws through vqgen.api's `Run`, as `run.sample(...)` does from Python; the algorithm that
draws the codes is vqgen.sampling.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vqgen import conditioning, fileio, plots
from vqgen.api import load_run
from vqgen.config import SampleConfig
from vqgen.errors import UsageError
from vqgen.inference import make_output_dir, resolve_device, write_png
from vqgen.rundir import RunDir

SAMPLE_GLOB = "sample_[0-9][0-9][0-9][0-9].png"  # the names `sample` writes
GRID_NAME = "grid.png"
MANIFEST = ".vqgen-samples.json"  # digests of the files the last `sample` wrote there


@dataclass
class SampleResult:
    images: Tensor  # (n,1,S,S) in [0,1], on the CPU
    codes: list[Tensor]  # each level's (n,h,w) grids, coarse first
    paths: list[Path]
    grid: Path
    seconds: float
    guidance: float  # the scale drawn at: --guidance, or the prior's default


def sample(
    run_dir: Path, cfg: SampleConfig, out_dir: Path | None = None, device: str = "auto"
) -> SampleResult:
    """Sample `cfg.n` new slices from a trained run; PNGs go to `out_dir` (default run/samples),
    replacing the samples an earlier `sample` left there, and only those: the files whose
    digests its manifest lists (in run/samples, every sample_NNNN.png and grid.png is
    vqgen's). A file it would write over that vqgen did not write is refused before any
    work. It holds the run's lock only to write into the run: a run on a read-only disk is
    sampled into a folder elsewhere."""
    run = RunDir(run_dir).check_exists()
    out_dir = out_dir or run.samples
    into_run = out_dir.resolve().is_relative_to(run.root.resolve())
    with run.lock("sample", enabled=into_run):
        return _sample(run, cfg, out_dir, resolve_device(device))


def _sample(run: RunDir, cfg: SampleConfig, out_dir: Path, dev: torch.device) -> SampleResult:
    model = load_run(run.root, dev.type)
    cond = model.condition(cfg)  # refuses a bad --label or --slice before any output
    make_output_dir(out_dir, "--out")  # before sampling, which may take minutes
    paths = [out_dir / f"sample_{i:04d}.png" for i in range(cfg.n)]
    earlier = earlier_samples(out_dir, out_dir == run.samples, [*paths, out_dir / GRID_NAME])
    start = time.perf_counter()
    images, codes = model.draw(cfg, cond)
    seconds = time.perf_counter() - start
    for path in earlier:
        path.unlink(missing_ok=True)
    if earlier:
        warnings.warn(f"removed {len(earlier)} earlier sample file(s) from {out_dir}", stacklevel=2)
    for image, path in zip(images, paths, strict=True):
        write_png(image, path)
    grid = plots.save_grid(images, out_dir / GRID_NAME, nrow=min(8, cfg.n))
    fileio.write_json(out_dir / MANIFEST, {"sha256": [fileio.sha256(p) for p in [*paths, grid]]})
    guidance = conditioning.guidance_scale(model.prior.cfg, cfg)
    return SampleResult(images, codes, paths, grid, seconds, guidance)


def earlier_samples(out_dir: Path, in_run: bool, new: list[Path]) -> list[Path]:
    """The files an earlier `sample` wrote into `out_dir`, which this one replaces: every
    sample_NNNN.png and grid.png there whose SHA-256 its manifest lists (in the run's own
    samples folder, every one). The manifest holds digests, not names: nothing in it can point
    anywhere else. Refuses, naming it, a file this `sample` would write over that vqgen did
    not write."""
    manifest = out_dir / MANIFEST
    ours = set(fileio.read_json(manifest).get("sha256", [])) if manifest.is_file() else set()
    candidates = sorted({*out_dir.glob(SAMPLE_GLOB), *out_dir.glob(GRID_NAME)})
    earlier = [p for p in candidates if p.is_file() and (in_run or fileio.sha256(p) in ours)]
    foreign = [p for p in new if p.exists() and p not in earlier]
    if foreign:
        raise UsageError(
            f"--out {out_dir} holds {foreign[0].name}, which `vqgen sample` did not write; "
            "move it or choose another --out"
        )
    return earlier
