"""The training loop leaves the device alone between checks: no scalar is read back inside an
optimiser step, of either stage, so that on a GPU the host queues steps without waiting. Shown
on the CPU with torch.profiler: every read of a tensor's value (`.item()`, `float(t)`,
`bool(t)`) runs aten::_local_scalar_dense, on any device. Left out: the first step, where the
quantizer reads once whether its codebook is initialised, and the CPU kernel of the fused
AdamW, which reads its step count (on a GPU the kernel reads it on the device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import CPU_DEVICE, blobs, make_stage, train_cfg
from torch.profiler import ProfilerActivity, profile, record_function

from vqgen import train
from vqgen.config import PriorConfig, VQLossConfig
from vqgen.inference import CodeSet
from vqgen.losses import VQLoss
from vqgen.models import build_prior
from vqgen.rundir import RunDir
from vqgen.train import Stage, fit
from vqgen.train_prior import prior_step

READS = {"aten::_local_scalar_dense", "aten::is_nonzero"}
HOST_KERNELS = {"aten::_fused_adamw_"}  # their reads are the CPU's own (see the docstring)


def ancestors(event) -> set[str]:
    names, parent = set(), event.cpu_parent
    while parent is not None:
        names.add(parent.name)
        parent = parent.cpu_parent
    return names


def reads_inside(monkeypatch, run_training) -> tuple[int, int, int]:
    """(reads inside optimiser steps, optimiser steps, checks) while `run_training` runs."""
    for name in ("step", "check"):
        method = getattr(train.Trainer, name)

        def marked(self, *args, _method=method, _name=name, **kwargs):
            with record_function(f"vqgen.{_name}"):
                return _method(self, *args, **kwargs)

        monkeypatch.setattr(train.Trainer, name, marked)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_training()
    events = prof.events()
    steps = [e.time_range for e in events if e.name == "vqgen.step"]
    later = steps[1:]
    checks = [e for e in events if e.name == "vqgen.check"]
    inside = [
        e
        for e in events
        if e.name in READS
        and any(s.start <= e.time_range.start <= s.end for s in later)
        and not ancestors(e) & HOST_KERNELS
    ]
    return len(inside), len(steps), len(checks)


def test_a_vqvae_step_reads_nothing_back(tmp_path, monkeypatch) -> None:
    stage = make_stage(tmp_path, blobs(32), blobs(4, seed=1), step=VQLoss(VQLossConfig()).step)
    cfg = train_cfg(epochs=2, batch_size=4, log_every=5, ema=0.99)

    inside, steps, checks = reads_inside(
        monkeypatch, lambda: fit(stage, cfg, RunDir(tmp_path), CPU_DEVICE)
    )
    assert steps == 16 and inside == 0
    assert checks == 5  # steps 5, 10, 15 and each epoch's last, 8 and 16


@pytest.mark.parametrize("condition", ["none", "slice"])
def test_a_prior_step_reads_nothing_back(tmp_path, monkeypatch, condition) -> None:
    cfg = PriorConfig(codebook_size=16, grid=8, channels=16, layers=4, condition=condition)
    g = torch.Generator().manual_seed(0)
    codes = CodeSet(
        [torch.randint(0, 16, (24, 8, 8), generator=g, dtype=torch.int16)],
        torch.full((24,), -1),
        torch.rand(24, generator=g),
        (),
    )
    torch.manual_seed(0)
    stage = Stage(
        name="prior",
        model=build_prior(cfg),
        train_set=codes,
        step=prior_step,
        validate=lambda m: {"val_bits": 1.0},
        monitor="val_bits",
        higher_is_better=False,
        meta={},
    )
    run = RunDir(tmp_path)
    inside, steps, checks = reads_inside(
        monkeypatch, lambda: fit(stage, train_cfg(epochs=1, log_every=2), run, CPU_DEVICE)
    )
    assert steps == 6 and inside == 0 and checks == 3


def test_the_fused_step_takes_the_losses_of_torchs_default_adamw(tmp_path, monkeypatch) -> None:
    """The fused AdamW (one kernel, its step count on the device) is the textbook AdamW in
    other floating-point order: 50 float32 steps from one seed give the same losses to 1e-3."""

    def losses(run: Path) -> list[float]:
        stage = make_stage(run, blobs(200), blobs(8, seed=1), step=VQLoss(VQLossConfig()).step)
        cfg = train_cfg(epochs=None, max_steps=50, log_every=1, bf16=False)
        fit(stage, cfg, RunDir(run), CPU_DEVICE)
        lines = (run / "metrics-vqvae.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if '"loss"' in line]

    fused = losses(tmp_path / "fused")
    textbook = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, fused=None, **k: textbook(*a, **k))
    plain = losses(tmp_path / "plain")
    assert len(fused) == len(plain) == 50
    assert fused == pytest.approx(plain, rel=1e-3) and fused != plain  # the same, reordered
