"""The `sample` verb: draw code grids from the prior, decode them, write PNG slices.

    result = sample(LoadedRun.load(Path("run")), SampleConfig(n=16, temperature=1.0, seed=0))

It draws with the loaded run's `draw`, as `run.sample(...)` does from Python; the algorithm
that draws the codes is vqgen.sampling.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from vqgen import fileio, plots
from vqgen.config import SampleConfig
from vqgen.errors import CheckpointError, UsageError
from vqgen.inference import make_output_dir, write_png
from vqgen.loaded import LoadedRun

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


def sample(run: LoadedRun, cfg: SampleConfig, out_dir: Path | None = None) -> SampleResult:
    """Sample `cfg.n` new slices from a loaded run; PNGs go to `out_dir` (default run/samples),
    replacing the samples an earlier `sample` left there, and only those: the files whose
    digests its manifest lists (in run/samples, every sample_NNNN.png and grid.png is
    vqgen's). A file it would write over that vqgen did not write is refused before any
    work. It holds the run's lock only to write into the run: a run on a read-only disk is
    sampled into a folder elsewhere."""
    out_dir = out_dir or run.dir.samples
    with run.dir.lock("sample", enabled=run.dir.contains(out_dir)):
        run.condition(cfg)  # refuses a bad --label or --slice before any output
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(
                f"--out {out_dir} is a file; give a folder for the samples (made if missing)"
            )
        make_output_dir(out_dir, "--out")  # before sampling, which may take minutes
        paths = [out_dir / f"sample_{i:04d}.png" for i in range(cfg.n)]
        in_run = out_dir == run.dir.samples
        earlier = earlier_samples(out_dir, in_run, [*paths, out_dir / GRID_NAME])
        start = time.perf_counter()
        images, codes, _ = run.draw(cfg)
        seconds = time.perf_counter() - start
        for path in earlier:
            path.unlink(missing_ok=True)
        if earlier:
            warnings.warn(
                f"removed {len(earlier)} earlier sample file(s) from {out_dir}", stacklevel=2
            )
        written: list[Path] = []
        try:
            for image, path in zip(images, paths, strict=True):
                write_png(image, path)
                written.append(path)
            grid = plots.save_grid(images, out_dir / GRID_NAME, nrow=min(8, cfg.n))
            written.append(grid)
        finally:  # Ctrl-C or a full disk midway: the next `sample` still knows these as its own
            digests = [fileio.sha256(p) for p in written]
            fileio.write_json(out_dir / MANIFEST, {"sha256": digests})
    return SampleResult(images, codes, paths, grid, seconds, run.guidance(cfg))


def earlier_samples(out_dir: Path, in_run: bool, new: list[Path]) -> list[Path]:
    """The files an earlier `sample` wrote into `out_dir`, which this one replaces: every
    sample_NNNN.png and grid.png there whose SHA-256 its manifest lists (in the run's own
    samples folder, every one). The manifest holds digests, not names: nothing in it can point
    anywhere else. Refuses, naming it, a file this `sample` would write over that vqgen did
    not write."""
    manifest = out_dir / MANIFEST
    ours = manifest_digests(manifest)
    candidates = sorted({*out_dir.glob(SAMPLE_GLOB), *out_dir.glob(GRID_NAME)})
    earlier = [p for p in candidates if p.is_file() and (in_run or fileio.sha256(p) in ours)]
    foreign = [p for p in new if p.exists() and p not in earlier]
    if foreign:
        raise UsageError(
            f"--out {out_dir} holds {foreign[0].name}, which `vqgen sample` did not write; "
            "move it or choose another --out"
        )
    return earlier


def manifest_digests(manifest: Path) -> set[str]:
    """The digests an earlier `sample` listed in `manifest`: none where there is no manifest,
    and none, with a warning, where it is not one that `sample` writes (its files then count
    as foreign, and are kept)."""
    if not manifest.exists():
        return set()
    try:
        digests = fileio.read_json(manifest).get("sha256")
    except CheckpointError as err:
        digests, why = None, str(err)
    else:
        why = f"{manifest} is not a list of digests"
    if isinstance(digests, list) and all(isinstance(d, str) for d in digests):
        return set(digests)
    warnings.warn(f"ignoring {manifest}: {why}; its files are kept", stacklevel=3)
    return set()
