"""torchrun with 2 gloo processes on the CPU: the same steps as one process, rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fixtures import make_oasis
from safetensors.torch import load_file
from tiny import PRIOR_3X16, VQVAE_32

from vqgen import distributed
from vqgen.errors import TrainingError

# no dropout: each rank draws its own dropout masks, so only a deterministic prior gives one
# process's weights
PRIOR = [*PRIOR_3X16, "--dropout", "0"]
# float32: bf16 rounds each rank's half batch differently enough to flip codes now and then
COMMON = ["--batch-size", "8", "--device", "cpu", "--epochs", "3", "--no-bf16"]


def vqgen(*args: object, processes: int = 1) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, under torchrun when `processes` > 1."""
    launcher = [sys.executable, "-m", "vqgen"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "vqgen",
            "--",  # else torchrun's parser reads vqgen's --run as an abbreviation of --run-path
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in both kinds of run
    return subprocess.run(
        [*launcher, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def assert_same_weights(a: Path, b: Path) -> None:
    """Equal up to float rounding: DDP sums gradients and codebook statistics in another order
    and convolves batches of 4 instead of 8, which rounds differently and can move a near-tie
    vector to the other code now and then. A rank whose data were left out would be off by
    tens of percent."""
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-2, atol=1e-3, msg=name)


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one(tmp_path: Path) -> None:
    """The same global batch gives the same weights with 2 gloo processes as with 1; only
    rank 0 writes; the weights load; the prior trains under torchrun too."""
    data = make_oasis(tmp_path, {"train": 4, "validate": 2, "test": 2}, slices=6, size=64)
    one, two = tmp_path / "one", tmp_path / "two"
    for run, processes in ((one, 1), (two, 2)):
        done = vqgen(
            "train-vqvae", "--data", data, "--run", run, *VQVAE_32, *COMMON, processes=processes
        )
        assert done.returncode == 0, done.stderr
    # the ranks checked at every save that they hold the same weights (check_same_model)
    assert_same_weights(one / "vqvae.safetensors", two / "vqvae.safetensors")
    lines = [json.loads(x) for x in (two / "metrics-vqvae.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "val_ssim" not in x]
    assert steps == sorted(set(steps)), "each step is logged once, by rank 0"
    assert not list(two.glob("*.tmp*")), "no temporary files left behind"

    # the priors learn from the codes of one and the same VQ-VAE
    shutil.copytree(one, two, dirs_exist_ok=True)
    for run, processes in ((one, 1), (two, 2)):
        done = vqgen("train-prior", "--run", run, *PRIOR, *COMMON, processes=processes)
        assert done.returncode == 0, done.stderr
    assert_same_weights(one / "prior.safetensors", two / "prior.safetensors")
    done = vqgen("sample", "--run", two, "--n", "2", "--device", "cpu")
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_batch_size_must_split_over_the_processes(tmp_path: Path) -> None:
    data = make_oasis(tmp_path, {"train": 4, "validate": 2, "test": 2}, slices=6, size=64)
    done = vqgen(
        "train-vqvae", "--data", data, "--run", tmp_path / "run", *VQVAE_32, "--batch-size", "7",
        "--max-steps", "1", processes=2,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--batch-size 7 is not divisible by the 2 processes" in done.stderr


def _check_on_two_ranks(rank: int, port: int, failures: mp.Queue) -> None:
    """check_same_model on two ranks: first with the same weights, then with rank 1's nudged;
    each failure goes to `failures` as (round, message)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    try:
        for round_ in ("same", "nudged"):
            if round_ == "nudged" and rank == 1:
                with torch.no_grad():
                    model.bias[0] += 1e-6
            try:
                distributed.check_same_model(model, "test")
            except TrainingError as err:
                failures.put((round_, str(err)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_holding_different_weights_are_caught() -> None:
    """Two processes (spawned once for both cases): the same weights pass, a difference of
    1e-6 in one bias stops both ranks."""
    failures = mp.get_context("spawn").Queue()
    port = 29500 + os.getpid() % 1000
    mp.spawn(_check_on_two_ranks, args=(port, failures), nprocs=2)
    found = [failures.get(timeout=5) for _ in range(failures.qsize())]
    assert [round_ for round_, _ in found] == ["nudged", "nudged"], found
    assert all("different weights" in message for _, message in found), found


@pytest.mark.parametrize(("n", "batch"), [(20, 4), (23, 8), (6, 16)])
def test_each_rank_takes_its_share_of_the_single_process_batches(monkeypatch, n, batch):
    """Together the ranks' batches of an epoch are exactly one process's batches, and each
    global batch is split evenly."""
    from vqgen import schedule

    single = schedule.epoch_batches(n, batch, seed=3, epoch=2)
    shares = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares.append(schedule.epoch_batches(n, batch, seed=3, epoch=2))
    assert len(shares[0]) == len(shares[1]) == len(single)
    for whole, a, b in zip(single, *shares, strict=True):
        assert len(a) == len(b) and sorted(a + b) == sorted(whole)
