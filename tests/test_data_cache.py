"""The decoded-slice cache: a hit skips decoding, changed data misses, a corrupt file rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fixtures import brain_slice, make_oasis
from PIL import Image

import vqgen.data.dataset as dataset
from vqgen.api import load_data
from vqgen.data import DataWarning

SIZE = 16


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> None:
        raise AssertionError(f"decoded {path} although the cache holds it")

    monkeypatch.setattr(dataset, "decode_image", fail)


def _same(a, b) -> bool:
    return (
        torch.equal(a.pixels, b.pixels)
        and torch.equal(a.labels, b.labels)
        and torch.equal(a.positions, b.positions)
        and (a.subjects, a.paths, a.label_names, a.kind, a.split)
        == (b.subjects, b.paths, b.label_names, b.kind, b.split)
    )


def test_second_load_comes_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vqgen_cache: Path
) -> None:
    root = make_oasis(tmp_path)
    first = load_data(root, "train", size=SIZE)
    assert list(vqgen_cache.glob("*.safetensors")) and list(vqgen_cache.glob("*.json"))
    _no_decoding(monkeypatch)
    assert _same(load_data(root, "train", size=SIZE), first)
    assert _same(load_data(root.parent, "train", size=SIZE), first)  # same root, found from above


def test_other_options_are_other_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_oasis(tmp_path)
    load_data(root, "train", size=SIZE)
    _no_decoding(monkeypatch)
    for options in ({"size": SIZE * 2}, {"strict": True}):
        with pytest.raises(AssertionError, match="decoded"):
            load_data(root, "train", **{"size": SIZE, **options})


def test_changed_file_invalidates_the_cache(tmp_path: Path) -> None:
    root = make_oasis(tmp_path)
    first = load_data(root, "test", size=SIZE)
    path = Path(first.paths[0])
    Image.fromarray(255 - brain_slice(256, 256, 7)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_data(root, "test", size=SIZE)
    assert not torch.equal(first.pixels[0], second.pixels[0])
    assert torch.equal(first.pixels[1:], second.pixels[1:])


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, vqgen_cache: Path) -> None:
    root = make_oasis(tmp_path)
    first = load_data(root, "validate", size=SIZE)
    (cache_file,) = vqgen_cache.glob("*.safetensors")
    cache_file.write_bytes(b"\x00" * 40)
    assert _same(load_data(root, "validate", size=SIZE), first)
    (sidecar,) = vqgen_cache.glob("*.json")
    sidecar.write_text("{not json")
    assert _same(load_data(root, "validate", size=SIZE), first)
    assert not list(vqgen_cache.glob("*.tmp"))  # atomic writes leave no temporary files


def test_cache_hit_repeats_the_skip_warning(tmp_path: Path) -> None:
    root = make_oasis(tmp_path)
    bad = root / "keras_png_slices_train" / "case_001_slice_0.nii.png"
    bad.write_bytes(b"garbage")
    for _ in range(2):
        with pytest.warns(DataWarning, match="skipped 1 unreadable"):
            load_data(root, "train", size=SIZE)


def test_unwritable_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("VQGEN_CACHE", str(blocker / "cache"))  # a folder inside a file
    with pytest.warns(DataWarning, match="could not write the data cache"):
        ds = load_data(make_oasis(tmp_path), "test", size=SIZE)
    assert len(ds) > 0
