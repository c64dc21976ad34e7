"""Fuzzing the image loaders with hypothesis.

Damaged or random files in OASIS, ADNI and plain folder layouts either load cleanly (the file
skipped with a warning that names it, or read if it still decodes) or stop with a one-line
DataError/UsageError that names the file; never another exception. Valid images of any size,
aspect and PIL mode load as float32 (N, 1, S, S) in [0, 1], the same as their grey picture.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import brain_slice, make_adni, make_folder, make_oasis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from vqgen.api import load_data
from vqgen.data import SPLITS, DataWarning, preprocess
from vqgen.errors import UsageError

pytestmark = pytest.mark.slow  # 30 examples a test: over a second each

SIZE = 16
FUZZ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def encoded(fmt: str, mode: str) -> bytes:
    """A small valid image file's bytes, to be damaged."""
    buffer = io.BytesIO()
    Image.fromarray(brain_slice(40, 48, 0)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


VALID_FILES = [encoded("PNG", "L"), encoded("PNG", "RGB"), encoded("JPEG", "L")]


@st.composite
def damaged_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid PNG/JPEG cut short or with a few bytes overwritten."""
    kind = draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        return draw(st.binary(max_size=3000))
    data = bytearray(draw(st.sampled_from(VALID_FILES)))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


NAME_CHARS = st.characters(
    codec="ascii", categories=["L", "N"], include_characters="_- ", exclude_characters="/\\"
)
SUFFIXES = [".png", ".jpeg", ".jpg", ".PNG", ".JPG"]


def build_layout(root: Path, layout: str) -> tuple[Path, list[Path]]:
    """A tiny dataset in `layout`; returns its root and the folders that hold its images."""
    if layout == "oasis":
        data = make_oasis(root, slices=2, size=32)
        return data, [data / f"keras_png_slices_{split}" for split in SPLITS]
    if layout == "adni":
        data = make_adni(root, {"train": 2, "test": 1}, slices=1)
        return data, [data / split / label for split in ("train", "test") for label in ("AD", "NC")]
    data = make_folder(root, n=6, size=32)
    return data, [data / "a", data / "b"]


@FUZZ
@given(
    layout=st.sampled_from(["oasis", "adni", "folder"]),
    content=damaged_bytes(),
    replace=st.sampled_from([True, True, False]),  # mostly a slice whose name fits the layout
    stem=st.text(NAME_CHARS, min_size=1, max_size=20),
    suffix=st.sampled_from(SUFFIXES),
    folder_index=st.integers(0, 3),
    strict=st.sampled_from([False, False, True]),
)
def test_damaged_file_is_skipped_or_a_one_line_error_naming_it(
    layout: str,
    content: bytes,
    replace: bool,
    stem: str,
    suffix: str,
    folder_index: int,
    strict: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:  # a fresh folder, so no cache entry is reused
        root, folders = build_layout(Path(tmp), layout)
        folder = folders[folder_index % len(folders)]
        if replace:  # a slice of the layout, damaged in place: its name fits the layout
            bad = sorted(p for p in folder.iterdir() if p.is_file())[0]
        else:  # an extra file with any name
            bad = folder / f"{stem}{suffix}"
        bad.write_bytes(content)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = {s: load_data(root, s, size=SIZE, strict=strict) for s in SPLITS}
        except UsageError as err:  # DataError is a UsageError: exit code 2
            message = str(err)
            assert "\n" not in message and err.exit_code == 2
            assert str(bad) in message, message
            event(f"refused: {type(err).__name__}")
            return
        skipped = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
        paths = [p for ds in loaded.values() for p in ds.paths]
        if str(bad) in paths:  # it still decodes: then it is a proper slice
            event("read")
            assert not strict or not skipped
        else:
            assert not strict, "strict loading must refuse an unreadable file, not skip it"
            assert any(f"skipped 1 unreadable images, first: {bad}" in m for m in skipped)
            event("skipped with a warning")
        for ds in loaded.values():
            images = ds.images
            assert images.dtype == torch.float32 and images.shape == (len(ds), 1, SIZE, SIZE)
            assert images.min() >= 0 and images.max() <= 1


def grey_palette_image(grey: np.ndarray) -> Image.Image:
    """A palette ('P') image whose palette is the 256 grey levels, so no level is lost."""
    image = Image.frombytes("P", (grey.shape[1], grey.shape[0]), grey.tobytes())
    image.putpalette([level for i in range(256) for level in (i, i, i)])
    return image


# mode -> (grey uint8 picture -> image in that mode, grey picture -> the 8-bit picture it shows)
MODES = {
    "L": (Image.fromarray, None),
    "RGB": (lambda g: Image.fromarray(g).convert("RGB"), None),
    "RGBA": (lambda g: Image.fromarray(g).convert("RGBA"), None),
    "LA": (lambda g: Image.fromarray(g).convert("LA"), None),
    "P": (grey_palette_image, None),
    "1": (
        lambda g: Image.fromarray(g).convert("1", dither=Image.Dither.NONE),
        lambda g: np.where(g >= 128, 255, 0).astype(np.uint8),
    ),
    "I;16": (lambda g: Image.fromarray(g.astype(np.uint16) * 257), None),  # same picture, 16 bits
    "F": (lambda g: Image.fromarray(g.astype(np.float32) / 255), None),  # floats in [0, 1]
}


def stretched(grey: np.ndarray) -> np.ndarray:
    """What a 16-bit picture shows: its levels stretched between their 0.5 and 99.5
    percentiles (else its min and max), and a picture of one level kept at that level."""
    g = grey.astype(np.float64)
    lo, hi = np.percentile(g, [0.5, 99.5])
    if hi <= lo:
        lo, hi = g.min(), g.max()
    unit = (g - lo) / (hi - lo) if hi > lo else g / 255
    return np.clip(unit, 0, 1).astype(np.float32)


@st.composite
def images(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """(mode, grey uint8 picture) of any size and aspect from 1 x 1 to 300 x 300."""
    height, width = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    style = draw(st.sampled_from(["noise", "flat", "slice"]))
    if style == "noise":
        grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif style == "flat":
        grey = np.full((height, width), draw(st.integers(0, 255)), np.uint8)
    else:
        grey = brain_slice(height, width, int(rng.integers(1000)))
    return draw(st.sampled_from(sorted(MODES))), grey


@FUZZ
@given(pictures=st.lists(images(), min_size=3, max_size=6), size=st.sampled_from([8, 16, 32]))
def test_valid_images_of_any_size_and_mode_load_as_their_grey_picture(
    pictures: list[tuple[str, np.ndarray]], size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        expected = {}
        for i, (mode, grey) in enumerate(pictures):
            make, shown = MODES[mode]
            path = root / f"img{i}.png"
            # PNG cannot hold 32-bit floats: a TIFF under a .png name, found by its content
            make(grey).save(path, format="TIFF" if mode == "F" else "PNG")
            picture = grey if shown is None else shown(grey)
            if mode == "I;16":
                picture = stretched(grey)
            expected[str(path)] = preprocess(picture, size)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)  # nothing may be skipped
            warnings.filterwarnings("ignore", "every slice of .* is black", DataWarning)
            loaded = [load_data(root, split, size=size) for split in SPLITS]
        assert sum(len(ds) for ds in loaded) == len(pictures)
        for ds in loaded:
            images = ds.images
            assert images.dtype == torch.float32 and images.shape == (len(ds), 1, size, size)
            assert images.min() >= 0 and images.max() <= 1
            for pixels, path in zip(ds.pixels, ds.paths, strict=True):
                difference = (pixels[0].int() - torch.from_numpy(expected[path]).int()).abs()
                assert difference.max() <= 1, path
