"""Shared test setup: every test gets its own data cache, and tiny datasets on request."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import make_adni, make_folder, make_nifti, make_oasis


@pytest.fixture(autouse=True)
def vqgen_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point VQGEN_CACHE at a fresh folder so that no test reads another's cached slices."""
    cache = tmp_path / "vqgen-cache"
    monkeypatch.setenv("VQGEN_CACHE", str(cache))
    return cache


@pytest.fixture
def oasis_dir(tmp_path: Path) -> Path:
    return make_oasis(tmp_path)


@pytest.fixture
def adni_dir(tmp_path: Path) -> Path:
    return make_adni(tmp_path)


@pytest.fixture
def nifti_dir(tmp_path: Path) -> Path:
    return make_nifti(tmp_path)


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


@pytest.fixture
def tiny_mni152(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the embedded mni152 source to a few subjects and slices, for fast tests."""
    from vqgen.data import mni152

    monkeypatch.setattr(mni152, "SUBJECTS", {"train": 3, "validate": 1, "test": 1})
    monkeypatch.setattr(mni152, "SLICES", 4)
