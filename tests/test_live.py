"""The live TensorBoard log (vqgen.live): written by default when tensorboard is installed,
read back with TensorBoard's own reader; nothing without it; asked for without it, one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fixtures import assert_one_line_error, make_folder, run_cli
from tiny import (
    CPU,
    CPU_DEVICE,
    PRIOR_2X8,
    VQVAE_32,
    blobs,
    interrupt_at,
    make_stage,
    train_cfg,
)

from vqgen.errors import Interrupted
from vqgen.rundir import RunDir
from vqgen.train import fit
from vqgen.train_vqvae import preview

STEPS = ["--max-steps", "10", "--batch-size", "4", *CPU]  # a train line at step 10


def tags(folder: Path) -> dict[str, list[str]]:
    """The scalar and image tags of the event log in `folder`, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events.Tags()


@pytest.mark.slow
def test_training_writes_losses_validate_metrics_and_reconstructions(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val_set = blobs(8, seed=1)
    stage = make_stage(tmp_path, blobs(16), val_set)
    stage.preview = lambda m: preview(m, val_set)
    fit(stage, train_cfg(epochs=2, tensorboard=True), RunDir(tmp_path), CPU_DEVICE)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "vqvae"))
    events.Reload()
    found = events.Tags()
    assert {"train/loss", "validate/val_ssim", "validate/val_perplexity"} <= set(found["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))  # every step
    assert [e.step for e in events.Scalars("validate/val_ssim")] == [4, 8]  # each epoch
    assert found["images"] == ["validate/images"]
    image = events.Images("validate/images")[-1]
    assert image.step == 8 and image.height > image.width / 8  # two rows: slices, reconstructions


@pytest.mark.slow
def test_both_verbs_log_by_default_when_installed_and_not_when_asked_not_to(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    data = make_folder(tmp_path, n=24)
    run, off = tmp_path / "run", tmp_path / "off"
    args = [*VQVAE_32, *STEPS]
    assert run_cli(capsys, "train-vqvae", "--data", data, "--run", run, *args)[0] == 0
    assert run_cli(capsys, "train-prior", "--run", run, *PRIOR_2X8, *STEPS)[0] == 0
    assert "validate/images" in tags(run / "tensorboard" / "vqvae")["images"]
    prior = tags(run / "tensorboard" / "prior")
    assert {"train/loss", "validate/val_bits"} <= set(prior["scalars"]) and not prior["images"]
    code, _, err = run_cli(
        capsys, "train-vqvae", "--data", data, "--run", off, *args, "--no-tensorboard"
    )
    assert code == 0, err
    assert (off / "vqvae.safetensors").is_file() and not (off / "tensorboard").exists()


def test_asking_for_tensorboard_without_it_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    data = make_folder(tmp_path, n=24)
    run = tmp_path / "run"
    args = ["--data", data, "--run", run, *VQVAE_32, *STEPS]
    code, _, err = run_cli(capsys, "train-vqvae", *args, "--tensorboard")
    assert_one_line_error(code, err, 2, "--tensorboard", "pip install 'vqgen[tensorboard]'")
    assert not run.exists()


@pytest.mark.slow
def test_without_tensorboard_nothing_is_written(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    data = make_folder(tmp_path, n=24)
    run = tmp_path / "run"
    args = ["--data", data, "--run", run, *VQVAE_32, *STEPS]
    assert run_cli(capsys, "train-vqvae", *args)[0] == 0
    assert (run / "vqvae.safetensors").is_file() and not (run / "tensorboard").exists()


@pytest.mark.slow
def test_a_fresh_run_replaces_the_log_and_a_resumed_one_continues_it(tmp_path) -> None:
    """Each step's loss once: a second fresh run does not add to the first one's curves, and a
    resumed run hides what the interrupted one logged past its checkpoint."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def losses() -> list[int]:
        events = EventAccumulator(str(tmp_path / "tensorboard" / "vqvae"))
        events.Reload()
        return [e.step for e in events.Scalars("train/loss")]

    val_set = blobs(4, seed=1)
    cfg = train_cfg(epochs=2, tensorboard=True)
    for _ in range(2):
        fit(make_stage(tmp_path, blobs(16), val_set), cfg, RunDir(tmp_path), CPU_DEVICE)
    assert losses() == list(range(1, 9))
    stage = make_stage(tmp_path, blobs(16), val_set, step=interrupt_at(6))
    with pytest.raises(Interrupted):
        fit(stage, cfg, RunDir(tmp_path), CPU_DEVICE)
    assert losses() == list(range(1, 7))
    fit(make_stage(tmp_path, blobs(16), val_set), cfg, RunDir(tmp_path), CPU_DEVICE, resume=True)
    assert losses() == list(range(1, 9))
