"""Shared test setup: every test gets its own data cache; on request, tiny datasets, a read-only
mount, and what the session makes once: a tiny trained run (a copy for each test), a two-level
VQ-VAE and the mni152 splits at 64 px. Tests marked `slow` train or take over a second; the
others, `pytest -m "not slow"`, are the fast tier."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fixtures import make_adni, make_folder, make_nifti, make_oasis, run_cli
from tiny import CPU, PRIOR_2X8, TWO_LEVELS, VQVAE_32

from vqgen.api import load_data
from vqgen.data import SPLITS, SliceDataset

# One torch thread in each test process, with or without `-n` (`make test` runs one process per
# core): the tiny models gain nothing from a second, and on a small, shared CPU threads that wait
# for a busy core make tests many times slower (the model and sampling tests, on 2 cores beside
# another busy process: 84 s on two threads, 12 s on one).
torch.set_num_threads(1)
# and in every process a test starts (the CLI scripts, the GPU check's verbs): two threads there
# stall behind the other test process's core (bench/gpu_check.sh at CPU settings: 139 s in the
# suite on two threads)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: with one worker per core, a slow test left for the end keeps one core
    busy while the other has nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under `--dist loadgroup` (`make test`), a grouped test that pytest-xdist did not tag
    fails: each worker would otherwise train the group's shared model again, silently
    (pytest-dev/pytest-xdist#1386, the reason pyproject.toml keeps pytest below 9.2)."""
    grouped = item.get_closest_marker("xdist_group") is not None
    if grouped and getattr(item.config.option, "loadgroup", False) and "@" not in item.nodeid:
        pytest.fail(
            "pytest-xdist did not group this test: install the pytest that pyproject.toml "
            "names (pip install -e '.[dev]')",
            pytrace=False,
        )


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
    monkeypatch.setattr(mni152, "EVALUATION_SUBJECTS", 2)


@pytest.fixture(scope="session")
def trained_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run (a VQ-VAE and a label-conditioned prior) on a tiny ADNI layout, trained
    once per session. Tests take a copy (`trained_run`), never this."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQGEN_CACHE", str(root / "cache"))
        data = make_adni(root, {"train": 5, "test": 2}, slices=2)
        run = root / "run"
        args = ["--run", run, "--epochs", "1", "--batch-size", "8", *CPU]
        assert run_cli(None, "train-vqvae", "--data", data, *VQVAE_32, *args)[0] == 0
        assert run_cli(None, "train-prior", *PRIOR_2X8, "--condition", "label", *args)[0] == 0
    return run


@pytest.fixture
def trained_run(trained_run_template: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny trained run, which a test may change or damage."""
    return Path(shutil.copytree(trained_run_template, tmp_path / "run"))


@pytest.fixture(scope="session")
def two_level_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px VQ-VAE with a 4x4 top grid over a 16x16 bottom grid, trained on an OASIS layout
    once per session, and nothing else: no prior. Tests read it or copy it."""
    root = tmp_path_factory.mktemp("two-levels")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQGEN_CACHE", str(root / "cache"))
        data = make_oasis(root, {"train": 4, "validate": 2, "test": 2}, slices=6, size=64)
        run = root / "run"
        args = ["--data", data, "--run", run, "--max-steps", "6", "--batch-size", "8", *CPU]
        code, _, err = run_cli(None, "train-vqvae", *args, *TWO_LEVELS)
        assert code == 0, err
    return run


@pytest.fixture(scope="session")
def mni152_64(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SliceDataset]:
    """The embedded mni152's three splits at 64 px, at full size, loaded once per session into
    a cache of their own. Tests only read them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VQGEN_CACHE", str(tmp_path_factory.mktemp("mni152-cache")))
        return {split: load_data("mni152", split, size=64) for split in SPLITS}


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """`read_only(folder)` shows `folder` behind a read-only bind mount and returns the mount
    (tests run as root, who may write anywhere else); skipped where no mount is allowed."""
    mounts: list[Path] = []

    def mount(folder: Path) -> Path:
        point = tmp_path / f"ro-{len(mounts)}"
        point.mkdir()
        ok = subprocess.run(["mount", "--bind", str(folder), str(point)], capture_output=True)
        if ok.returncode != 0:
            pytest.skip(f"no bind mount here: {ok.stderr.decode().strip()}")
        mounts.append(point)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(point)], check=True)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", str(point)], check=True)


@pytest.fixture
def quick_c2st(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train the C2ST's classifiers one short round each, for tests of what evaluate writes
    rather than of how well the C2ST tells sets apart (tests/test_realism.py keeps the rest)."""
    from vqgen.realism import two_sample

    monkeypatch.setattr(two_sample, "MAX_ROUNDS", 1)
    monkeypatch.setattr(two_sample, "ROUND_SLICES", 64)
