"""The embedded default: axial slices of seeded "virtual subjects" made from the MNI152 template.

nilearn ships the ICBM152 2009a template (skull-stripped T1, grey- and white-matter maps,
brain mask) inside its package, so this source needs no download. Each virtual subject is the
template under a smooth random deformation (a small affine, a low-frequency displacement
field, larger or smaller ventricles), with its own tissue contrast, gamma, brightness,
multiplicative bias field and noise. Slices are sampled straight at the requested size with
one `grid_sample` call per subject.

Subjects of different splits come from disjoint seed streams (SeedSequence([seed, split,
subject])), so no subject is in two splits and a seed always gives the same slices. The
evaluation subjects that `evaluate` scores beside validate and test have streams of their own.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqgen.data.dataset import SPLITS, SliceDataset, make_dataset, preprocess, stack
from vqgen.errors import DataError

LAYOUT = "the name mni152: virtual subjects from the embedded MNI152 template"
SUBJECTS = {"train": 48, "validate": 8, "test": 8}
SLICES = 24  # per subject
Z_RANGE = (0.15, 0.9)  # of the brain's height: skips the near-empty bottom and top ends
FIELD_OF_VIEW = 1.12  # image side / the brain's largest in-plane extent
TISSUES = ("t1", "gm", "wm")
MASK_THRESHOLD = 0.2  # brain = scaled T1 above this, as in nilearn's load_mni152_brain_mask
MARGIN = 4  # voxels of background kept around the brain when cropping the template
VENTRICLES_MNI = np.array([0.0, -15.0, 12.0], np.float32)  # centre of the lateral ventricles
FRESH_SUBJECTS = 100_000  # numbers of the extra train subjects start here (fresh_train_subjects)
EVALUATION_SUBJECTS = 96  # scored beside validate or test: 2,496 real slices with them
GENERATOR_VERSION = 2  # bump when the generator changes, so cached slices are rebuilt


def settings() -> dict[str, object]:
    """What the slices depend on besides the seed and size (part of the cache key)."""
    return {"subjects": SUBJECTS, "slices": SLICES, "version": GENERATOR_VERSION}


def template_files() -> dict[str, Path]:
    """The template files inside nilearn's package: the ones its load_mni152_template,
    load_mni152_gm_template and load_mni152_wm_template read."""
    spec = importlib.util.find_spec("nilearn")  # finds the package without importing it (~3 s)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mni152 source needs nilearn, which is not installed")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    files = {
        name: data / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in TISSUES
    }
    for path in files.values():
        if not path.is_file():
            raise DataError(f"{path}: MNI152 template file missing from the nilearn package")
    return files


def sources(root: Path | None) -> list[Path]:
    """The template files (`root` is unused)."""
    return list(template_files().values())


class Template(NamedTuple):
    volume: Tensor  # (1, 4, Z, Y, X): T1, T1 x grey matter, T1 x white matter, brain mask
    origin: np.ndarray  # MNI mm (x, y, z) of voxel (0, 0, 0)
    spacing: float  # mm between voxel centres
    lo: np.ndarray  # MNI mm (x, y, z) of the brain's bounding box
    hi: np.ndarray


@functools.lru_cache(maxsize=1)
def _template_1mm() -> Template:
    """The skull-stripped template and its tissue maps at 1 mm, cropped to the brain (RAS).

    Each map is scaled to [0, 1] and the brain mask is T1 > 0.2, as nilearn's loaders do.
    """
    images = {name: nib.load(path) for name, path in template_files().items()}
    t1, gm, wm = (img.get_fdata(dtype=np.float32) for img in images.values())
    t1, gm, wm = t1 / t1.max(), gm / gm.max(), wm / wm.max()
    mask = (t1 > MASK_THRESHOLD).astype(np.float32)
    t1 = t1 * mask
    inside = np.argwhere(mask > 0)
    lo = np.maximum(inside.min(0) - MARGIN, 0)
    hi = inside.max(0) + MARGIN + 1
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    vol = np.stack([t1[crop], (t1 * gm)[crop], (t1 * wm)[crop], mask[crop]])  # (4, X, Y, Z)
    volume = torch.from_numpy(vol).permute(0, 3, 2, 1).unsqueeze(0)  # (1, 4, Z, Y, X)
    affine = images["t1"].affine

    def to_mm(ijk: np.ndarray) -> np.ndarray:
        return (affine[:3, :3] @ ijk + affine[:3, 3]).astype(np.float32)

    return Template(volume, to_mm(lo), 1.0, to_mm(inside.min(0)), to_mm(inside.max(0)))


@functools.lru_cache(maxsize=4)
def template(step: int = 1) -> Template:
    """The template averaged over blocks of step^3 voxels: the antialiasing filter for slices
    whose pixels are `step` mm or more apart."""
    full = _template_1mm()
    volume = F.avg_pool3d(full.volume, step) if step > 1 else full.volume
    # channels-last keeps the four values of a voxel together: grid_sample runs ~2x faster
    volume = volume.contiguous(memory_format=torch.channels_last_3d)
    return full._replace(volume=volume, origin=full.origin + (step - 1) / 2, spacing=float(step))


def _waves(
    points: np.ndarray, rng: np.random.Generator, n: int, wavelength: tuple, amp: float
) -> np.ndarray:
    """A smooth random field at `points` (P, 3) mm: a sum of `n` plane waves of random
    direction, wavelength and phase -> (P,)."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = direction * (2 * np.pi / rng.uniform(*wavelength, size=(n, 1)))  # (n, 3) rad/mm
    arg = points @ k.T.astype(np.float32) + rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    return np.sin(arg) @ rng.normal(0, amp, n).astype(np.float32)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A small random rotation: a few degrees in-plane, less about the other axes."""
    ax, ay, az = np.radians(rng.normal(0, [2.0, 2.0, 4.0]).clip(-6, 6))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, ...]:
    """One virtual subject -> (n_slices, size, size) float32 slices in [0, 1], their positions
    in [0, 1] (bottom to top of the brain) and the MNI z (mm) of each plane.

    The deformation and bias fields are smooth, so they are computed on a coarse grid and
    upsampled bilinearly; only the template lookup runs at full resolution.
    """
    full = _template_1mm()
    centre = (full.lo + full.hi) / 2  # MNI mm
    fov = FIELD_OF_VIEW * float(max(full.hi[:2] - full.lo[:2]))
    tpl = template(max(1, int(fov / size)))
    frac = np.sort(rng.uniform(0, 1, n_slices) + np.arange(n_slices)) / n_slices  # stratified
    frac = Z_RANGE[0] + (Z_RANGE[1] - Z_RANGE[0]) * frac
    z_mm = full.lo[2] + frac * (full.hi[2] - full.lo[2])
    # coarse output points in mm from the centre; anterior at the top, patient's right on the left
    m = max(2, size // 8) + 1
    along = np.linspace(fov / 2, -fov / 2, m, dtype=np.float32)
    zz, yy, xx = np.meshgrid(z_mm - centre[2], along, along, indexing="ij")
    points = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3).astype(np.float32)  # (n*m*m, 3)

    # anatomy: small affine (rotation, scale ~0.9-1.1, shift), a smooth displacement field and
    # ventricles grown or shrunk by a radial bump around their centre
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, size=3)
    affine = (_rotation(rng) * scale[None, :]).astype(np.float32)
    shift = rng.normal(0, [3.0, 3.0, 2.0]).astype(np.float32)
    warp = np.stack([_waves(points, rng, 3, (50, 120), 2.0) for _ in range(3)], axis=-1)
    offset = points - (VENTRICLES_MNI - centre)
    bump = np.exp(-(offset**2).sum(1, keepdims=True) / (2 * 20.0**2))
    moved = points @ affine.T + shift + warp + rng.uniform(-0.35, 0.1) * offset * bump
    voxels = (moved + centre - tpl.origin) / tpl.spacing  # (P, 3) x, y, z
    dims = np.array(tpl.volume.shape[:1:-1], np.float32)  # X, Y, Z
    log_bias = _waves(points, rng, 3, (120, 300), 0.1)
    fields = np.concatenate([2 * voxels / (dims - 1) - 1, log_bias[:, None]], axis=1)  # (P, 4)
    fields = torch.from_numpy(fields.reshape(n_slices, m, m, 4)).permute(0, 3, 1, 2)  # (n, 4, m, m)
    fine = F.interpolate(fields, size=(size, size), mode="bilinear", align_corners=True)
    fine = fine.permute(0, 2, 3, 1)  # (n, S, S, 4): channels-last in memory, so no copy
    grid = fine[None, ..., :3]  # (1, n, S, S, 3)
    t1, t1gm, t1wm, mask = F.grid_sample(tpl.volume, grid, align_corners=True)[0].numpy()

    # appearance: per-tissue contrast, gamma, brightness, bias field, noise
    g, w, c = rng.uniform(0.85, 1.1), rng.uniform(0.95, 1.08), rng.uniform(0.6, 1.5)
    image = c * t1 + (g - c) * t1gm + (w - c) * t1wm  # t1 x (g GM + w WM + c CSF)
    image = np.maximum(image, 0) ** rng.uniform(0.8, 1.25) * np.exp(fine[..., 3].numpy())
    brain = image[mask > 0.5]
    image *= rng.uniform(0.8, 0.95) / max(
        float(np.percentile(brain, 99)) if brain.size else 1, 1e-3
    )
    image += rng.uniform(0.003, 0.015) * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image * mask, 0, 1)
    return image, frac.astype(np.float32), np.rint(z_mm).astype(int)


def load(root: Path | None, split: str, size: int, seed: int, strict: bool) -> SliceDataset:
    """SUBJECTS[split] virtual subjects of SLICES slices each. `root` and `strict` are unused:
    the template ships with nilearn."""
    return _subjects(split, range(SUBJECTS[split]), size, seed)


def fresh_train_subjects(count: int, first: int, size: int, seed: int) -> SliceDataset:
    """`count` more virtual subjects of the train split's seed stream, numbered from
    FRESH_SUBJECTS + `first`: never one of the train split's own subjects, and never one of
    validate's or test's, which come from other streams."""
    return _subjects(
        "train", range(FRESH_SUBJECTS + first, FRESH_SUBJECTS + first + count), size, seed
    )


def evaluation_subjects(split: str, size: int, seed: int) -> SliceDataset:
    """EVALUATION_SUBJECTS virtual subjects that `evaluate` scores beside the `split`'s own
    (validate or test), from a seed stream of their own: never trained on, validated on or
    used to augment the prior, and different for validate and test."""
    if split not in ("validate", "test"):
        raise ValueError(f"evaluation subjects come beside validate or test, not {split}")
    stream = len(SPLITS) + SPLITS.index(split)
    return _subjects(split, range(EVALUATION_SUBJECTS), size, seed, stream, "-eval")


def _subjects(
    split: str,
    numbers: range,
    size: int,
    seed: int,
    stream: int | None = None,
    tag: str = "",
) -> SliceDataset:
    """Virtual subjects `numbers` of the seed stream `stream` (default: the split's index).
    Each has SLICES slices: its intensity is normalised over all of them, so a subject of fewer
    slices would look different (a C2ST told 1-slice subjects from 24-slice ones 58% of the
    time)."""
    index = SPLITS.index(split) if stream is None else stream
    slices, positions, subjects, paths = [], [], [], []
    for s in numbers:
        rng = np.random.default_rng(np.random.SeedSequence([seed, index, s]))
        images, pos, z_mm = subject(rng, SLICES, size)
        name = f"mni152-{split}{tag}-{s:03d}"
        slices += [preprocess(image, size) for image in images]
        positions.append(pos)
        subjects += [name] * SLICES
        paths += [f"mni152:{name}#z={z}mm" for z in z_mm.tolist()]
    pixels = stack(slices, size)
    positions_all = np.concatenate(positions) if positions else np.zeros(0, np.float32)
    return make_dataset(
        pixels, subjects, [-1] * len(subjects), positions_all, paths, kind="mni152", split=split
    )
