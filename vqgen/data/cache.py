"""The decoded-slice cache: a split's slices as uint8 safetensors in $VQGEN_CACHE (default
~/.cache/vqgen), keyed by the files, their sizes and times, and every setting they depend on,
so that a second load of the same data at the same size does not decode again.

    dataset = cached("oasis-train-128px", cache_key(files, root, size=128), build)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vqgen.data.dataset import DataWarning, SliceDataset
from vqgen.errors import OutputError, why
from vqgen.fileio import atomic_write

CACHE_VERSION = 2  # bump when preprocessing or the cache format changes


def cache_dir() -> Path:
    """$VQGEN_CACHE if set, else ~/.cache/vqgen."""
    return Path(os.environ.get("VQGEN_CACHE") or Path.home() / ".cache" / "vqgen")


def cache_key(files: Sequence[Path], base: Path | None, **settings: object) -> str:
    """A hash of `settings`, the cache version and each file's path, size and mtime, so that
    changed data or options never reuse old slices."""
    listing = []
    for path in files:
        st = path.stat()
        name = str(path.relative_to(base)) if base is not None else str(path)
        listing.append((name, st.st_size, st.st_mtime_ns))
    blob = json.dumps([CACHE_VERSION, settings, listing], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached(name: str, key: str, build: Callable[[], SliceDataset]) -> SliceDataset:
    """`build()`'s dataset, from the cache file `name` when it holds `key`, else built and stored.

    Data warnings raised while building are stored with the slices and shown again on a hit.
    """
    stem = cache_dir() / f"{name}-{key[:16]}"
    hit = _read_cache(stem, key)
    if hit is not None:
        dataset, notes = hit
        for note in notes:
            warnings.warn(note, DataWarning, 2)
        return dataset
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build()
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    try:
        _write_cache(stem, key, dataset, notes)
    except OSError as err:  # the slices are prepared again next time; one line a command
        reason = str(err).split(": ", 1)[-1] if isinstance(err, OutputError) else why(err)
        warnings.warn(f"could not write the data cache in {stem.parent}: {reason}", DataWarning, 2)
    return dataset


def _write_cache(stem: Path, key: str, ds: SliceDataset, notes: list[str]) -> None:
    """Tensors to <stem>.safetensors, lists to <stem>.json, each written atomically."""
    tensors = {"pixels": ds.pixels, "labels": ds.labels, "positions": ds.positions}
    meta = {
        "version": CACHE_VERSION,
        "key": key,
        "subjects": ds.subjects,
        "paths": ds.paths,
        "label_names": list(ds.label_names),
        "kind": ds.kind,
        "split": ds.split,
        "notes": notes,
    }
    atomic_write(stem.with_suffix(".safetensors"), lambda p: save_file(tensors, p, {"key": key}))
    atomic_write(stem.with_suffix(".json"), lambda p: p.write_text(json.dumps(meta)))


def _read_cache(stem: Path, key: str) -> tuple[SliceDataset, list[str]] | None:
    """The cached dataset and its notes, or None when absent, stale or corrupt."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        if meta["version"] != CACHE_VERSION or meta["key"] != key:
            return None
        with safe_open(stem.with_suffix(".safetensors"), "pt") as f:
            if f.metadata().get("key") != key:
                return None
            tensors = {name: f.get_tensor(name) for name in ("pixels", "labels", "positions")}
        dataset = SliceDataset(
            pixels=tensors["pixels"],
            subjects=list(meta["subjects"]),
            labels=tensors["labels"],
            positions=tensors["positions"],
            paths=list(meta["paths"]),
            label_names=tuple(meta["label_names"]),
            kind=meta["kind"],
            split=meta["split"],
        )
        return dataset, list(meta["notes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError):
        return None
