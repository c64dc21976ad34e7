"""The shared training loop and run-directory checkpoints: round trips, exact resume after
Ctrl-C, the NaN guard, refusal of mismatched or corrupt files."""

from __future__ import annotations

import copy
import itertools
import json
import signal

import pytest
import torch
from tiny import (
    CPU_DEVICE,
    TINY_VQVAE,
    blobs,
    interrupt_at,
    make_stage,
    train_cfg,
    vqvae_step,
)

from vqgen import checkpoint, fileio, progress
from vqgen.config import TrainConfig, to_dict
from vqgen.errors import CheckpointError, Interrupted, TrainingError
from vqgen.models.vqvae import VQVAE
from vqgen.rundir import RunDir
from vqgen.schedule import learning_rate
from vqgen.train import fit, resumed_config
from vqgen.train_vqvae import reconstruction_metrics


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(epochs=1, lr=1.0, warmup_steps=10)
    rates = [learning_rate(s, 100, cfg) for s in range(100)]
    assert rates[0] < rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))
    assert rates[-1] == pytest.approx(0.1, abs=0.01)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = VQVAE(TINY_VQVAE).eval()
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", model, {"model": to_dict(TINY_VQVAE)}, last=False
    )
    loaded, meta = checkpoint.load_vqvae(RunDir(tmp_path))
    x = blobs(3).images
    assert torch.equal(model(x)[0], loaded(x)[0])
    assert meta["weights_sha256"] == fileio.sha256(tmp_path / "vqvae.safetensors")
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_checkpoint_from_another_config_is_refused(tmp_path):
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", VQVAE(TINY_VQVAE), {"model": to_dict(TINY_VQVAE)}, last=False
    )
    meta = json.loads((tmp_path / "vqvae.json").read_text())
    meta["model"]["codebook_size"] = 16
    (tmp_path / "vqvae.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"does not match its config.*shape"):
        checkpoint.load_vqvae(RunDir(tmp_path))


def test_unknown_config_key_is_named(tmp_path):
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", VQVAE(TINY_VQVAE), {"model": to_dict(TINY_VQVAE)}, last=False
    )
    meta = json.loads((tmp_path / "vqvae.json").read_text())
    meta["model"]["colour"] = "red"
    (tmp_path / "vqvae.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown key 'colour'"):
        checkpoint.load_vqvae(RunDir(tmp_path))


def test_truncated_weights_are_refused(tmp_path):
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", VQVAE(TINY_VQVAE), {"model": to_dict(TINY_VQVAE)}, last=False
    )
    weights = tmp_path / "vqvae.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint.load_vqvae(RunDir(tmp_path))


def test_prior_checkpoint_in_place_of_vqvae_is_refused(tmp_path):
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", VQVAE(TINY_VQVAE), {"model": to_dict(TINY_VQVAE)}, last=False
    )
    meta = json.loads((tmp_path / "vqvae.json").read_text())
    meta["stage"] = "prior"
    (tmp_path / "vqvae.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="holds a 'prior' model"):
        checkpoint.load_vqvae(RunDir(tmp_path))


@pytest.mark.slow
def test_training_improves_and_keeps_best_and_last(tmp_path):
    val_set = blobs(8, seed=1)
    torch.manual_seed(0)
    before = reconstruction_metrics(VQVAE(TINY_VQVAE), val_set)
    cfg = train_cfg(epochs=10, lr=1e-2)
    result = fit(make_stage(tmp_path, blobs(24), val_set), cfg, RunDir(tmp_path), CPU_DEVICE)
    assert result.best > before["val_ssim"] + 0.1
    assert min(r["val_mse"] for r in result.history) < 0.8 * before["val_mse"]
    for name in ("vqvae", "vqvae-last"):
        assert (tmp_path / f"{name}.safetensors").is_file()
    lines = (tmp_path / "metrics-vqvae.jsonl").read_text().splitlines()
    assert sum("val_ssim" in line for line in lines) == 10  # one validation line per epoch


@pytest.mark.parametrize(("every_s", "drawn"), [(1e9, [1, 6]), (0.0, [1, 2, 3, 4, 5, 6])])
def test_figures_are_drawn_after_the_first_and_last_epoch_and_at_most_so_often_between(
    tmp_path, monkeypatch, every_s, drawn
):
    monkeypatch.setattr(progress, "FIGURES_EVERY_S", every_s)
    stage = make_stage(tmp_path, blobs(8), blobs(4, seed=1))
    epochs: list[int] = []
    stage.after_epoch = lambda model: epochs.append(len(epochs_validated(tmp_path)))
    fit(stage, train_cfg(epochs=6), RunDir(tmp_path), CPU_DEVICE)
    assert epochs == drawn
    assert len(epochs_validated(tmp_path)) == 6  # every epoch still validates


def epochs_validated(run) -> list[str]:
    lines = (run / "metrics-vqvae.jsonl").read_text().splitlines()
    return [line for line in lines if "val_ssim" in line]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "stale_last"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGINT", "SIGTERM", "SIGINT-stale-last-weights"],
)
def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(tmp_path, signum, stale_last):
    """With `stale_last`, `vqvae-last.safetensors` is from an earlier step, as after a crash
    between its rename and the train state's: --resume reads only the train state."""
    train_set, val_set = blobs(20), blobs(8, seed=1)
    whole = fit(
        make_stage(tmp_path / "a", train_set, val_set),
        train_cfg(),
        RunDir(tmp_path / "a"),
        CPU_DEVICE,
    )

    with pytest.raises(Interrupted, match="--resume"):
        fit(
            make_stage(tmp_path / "b", train_set, val_set, interrupt_at(7, signum)),
            train_cfg(),
            RunDir(tmp_path / "b"),
            CPU_DEVICE,
        )
    state = fileio.load_tensor_meta(tmp_path / "b" / "train_state-vqvae.safetensors")
    assert state["step"] == 7 and state["skip"] == 2  # mid-epoch: 5 steps per epoch
    if stale_last:
        stale = tmp_path / "b" / "vqvae.safetensors"  # the best weights, from step 5
        (tmp_path / "b" / "vqvae-last.safetensors").write_bytes(stale.read_bytes())
    resumed = fit(
        make_stage(tmp_path / "b", train_set, val_set),
        train_cfg(),
        RunDir(tmp_path / "b"),
        CPU_DEVICE,
        resume=True,
    )

    assert resumed.step == whole.step
    a = fileio.load_tensors(tmp_path / "a" / "vqvae-last.safetensors")
    b = fileio.load_tensors(tmp_path / "b" / "vqvae-last.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_bf16_autocast_is_recorded_changes_the_numbers_and_resumes_exactly(tmp_path):
    """--bf16 / --no-bf16 reach the computation (forced here, whatever this CPU computes
    natively), each run says which it used, and a bf16 run resumes to the same weights."""
    train_set, val_set = blobs(20), blobs(8, seed=1)
    weights = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        run = RunDir(tmp_path / name)
        fit(make_stage(run.root, train_set, val_set), train_cfg(bf16=bf16), run, CPU_DEVICE)
        assert checkpoint.read_meta(run, "vqvae", last=True)["train"]["bf16"] is bf16
        weights[name] = fileio.load_tensors(run.weights("vqvae", last=True))
    assert any(not torch.equal(weights["float32"][k], weights["bf16"][k]) for k in weights["bf16"])

    run = RunDir(tmp_path / "resumed")
    with pytest.raises(Interrupted, match="--resume"):
        stage = make_stage(run.root, train_set, val_set, interrupt_at(7))
        fit(stage, train_cfg(bf16=True), run, CPU_DEVICE)
    fit(make_stage(run.root, train_set, val_set), train_cfg(bf16=True), run, CPU_DEVICE, True)
    resumed = fileio.load_tensors(run.weights("vqvae", last=True))
    for key, value in weights["bf16"].items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_resume_keeps_the_autocast_and_average_a_run_recorded_or_had_before_they_were(tmp_path):
    """A run resumes with the bf16 choice and moving average it recorded; one from before they
    were recorded trained in float32 on the CPU and without an average, and resumes so."""
    run = RunDir(tmp_path)
    cfg = train_cfg(bf16=True, ema=0.5)
    fit(make_stage(tmp_path, blobs(8), blobs(4, seed=1)), cfg, run, CPU_DEVICE)
    resumed = resumed_config("vqvae", train_cfg(), run)
    assert resumed.bf16 is True and resumed.ema == 0.5
    meta = json.loads(run.meta("vqvae", last=True).read_text())
    del meta["train"]["bf16"], meta["train"]["ema"]
    run.meta("vqvae", last=True).write_text(json.dumps(meta))
    resumed = resumed_config("vqvae", train_cfg(), run)
    assert resumed.bf16 is False and resumed.ema == 0


@pytest.mark.slow
def test_a_run_saved_before_the_optimiser_was_recorded_resumes_exactly(tmp_path):
    """Interrupted under an older vqgen (its settings without "optimizer", its optimiser's
    param groups holding torch's AdamW keys alone), --resume trains on with AdamW and its saved
    optimiser state to the uninterrupted run's weights."""
    train_set, val_set = blobs(20), blobs(8, seed=1)
    whole = RunDir(tmp_path / "whole")
    fit(make_stage(whole.root, train_set, val_set), train_cfg(), whole, CPU_DEVICE)
    run = RunDir(tmp_path / "old")
    with pytest.raises(Interrupted, match="--resume"):
        fit(make_stage(run.root, train_set, val_set, interrupt_at(7)), train_cfg(), run, CPU_DEVICE)
    meta = json.loads(run.meta("vqvae", last=True).read_text())
    del meta["train"]["optimizer"]
    run.meta("vqvae", last=True).write_text(json.dumps(meta))
    torch_keys = {"params", *torch.optim.AdamW([torch.zeros(1)]).defaults}
    state = fileio.load_tensor_meta(run.train_state("vqvae"))
    groups = state["param_groups"]["model"]
    state["param_groups"]["model"] = [{k: g[k] for k in g if k in torch_keys} for g in groups]
    fileio.save_tensors(
        run.train_state("vqvae"), fileio.load_tensors(run.train_state("vqvae")), state
    )
    fit(make_stage(run.root, train_set, val_set), train_cfg(), run, CPU_DEVICE, resume=True)
    a = fileio.load_tensors(whole.weights("vqvae", last=True))
    b = fileio.load_tensors(run.weights("vqvae", last=True))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_moving_average_is_what_is_validated_and_saved_and_it_resumes_exactly(tmp_path):
    """With --ema the saved weights are the warmed-up moving average of the weights after each
    step (by hand here), validated as saved; Ctrl-C and --resume give the same average."""
    train_set, val_set, decay = blobs(20), blobs(8, seed=1), 0.3  # past the warm-up at n = 3
    seen = []  # the weights each step starts from: those after every step before it

    def recording(model, batch, step):
        seen.append(copy.deepcopy(model.state_dict()))
        return vqvae_step(model, batch, step)

    run = RunDir(tmp_path / "whole")
    result = fit(
        make_stage(run.root, train_set, val_set, recording), train_cfg(ema=decay), run, CPU_DEVICE
    )
    raw = fileio.load_tensors(run.train_state("vqvae"))
    after = [
        *seen[1:],
        {
            k.removeprefix("model.weights."): v
            for k, v in raw.items()
            if k.startswith("model.weights.")
        },
    ]
    average = copy.deepcopy(after[0])
    for n, weights in enumerate(after[1:], start=1):
        keep = min(decay, (1 + n) / (10 + n))
        for key, value in weights.items():
            mean = average[key]
            average[key] = keep * mean + (1 - keep) * value if mean.is_floating_point() else value
    saved = fileio.load_tensors(run.weights("vqvae", last=True))
    for key, value in average.items():
        torch.testing.assert_close(saved[key], value, msg=key)
    assert any(not torch.equal(saved[k], after[-1][k]) for k in saved)  # not the raw weights
    model = VQVAE(TINY_VQVAE)
    checkpoint.load_weights(run, "vqvae", model, last=True)
    assert reconstruction_metrics(model, val_set)["val_ssim"] == pytest.approx(
        result.last["val_ssim"]
    )

    resumed = RunDir(tmp_path / "resumed")
    with pytest.raises(Interrupted, match="--resume"):
        stage = make_stage(resumed.root, train_set, val_set, interrupt_at(7))
        fit(stage, train_cfg(ema=decay), resumed, CPU_DEVICE)
    fit(
        make_stage(resumed.root, train_set, val_set),
        train_cfg(ema=decay),
        resumed,
        CPU_DEVICE,
        True,
    )
    again = fileio.load_tensors(resumed.weights("vqvae", last=True))
    for key, value in saved.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def poisoned(model, batch, step):
        calls["n"] += 1
        loss, scalars = vqvae_step(model, batch, step)
        return loss * float("nan") if calls["n"] == 8 else loss, scalars

    stage = make_stage(tmp_path, blobs(20), blobs(8, seed=1), poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 7"):
        fit(stage, train_cfg(), RunDir(tmp_path), CPU_DEVICE)
    meta = checkpoint.read_meta(RunDir(tmp_path), "vqvae", last=True)
    assert meta["step"] == 5  # the end of the first epoch: the last good state
    assert meta["weights_sha256"] == fileio.sha256(tmp_path / "vqvae-last.safetensors")


@pytest.mark.slow
def test_max_steps_stops_early(tmp_path):
    result = fit(
        make_stage(tmp_path, blobs(20), blobs(4, seed=1)),
        train_cfg(max_steps=3),
        RunDir(tmp_path),
        CPU_DEVICE,
    )
    assert result.step == 3


def test_checkpoint_files_get_the_usual_permissions(tmp_path):
    checkpoint.save_model(
        RunDir(tmp_path), "vqvae", VQVAE(TINY_VQVAE), {"model": to_dict(TINY_VQVAE)}, last=False
    )
    mode = (tmp_path / "vqvae.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~fileio.UMASK


def test_a_slow_probe_is_corrected_by_the_next_fit(monkeypatch):
    """--max-minutes: the plan is fitted after 20 steps and again after 40, 80, 160 and 320,
    from the rate over all of them, so a slow start does not cut the run short; never past the
    plan."""
    from vqgen import schedule

    clock = {"t": 0.0}
    monkeypatch.setattr(schedule.time, "perf_counter", lambda: clock["t"])
    budget = schedule.TimeBudget(minutes=1.0, start_step=0, plan=700)
    fits = {}
    for step in range(1, 400):
        clock["t"] += 0.5 if step <= 20 else 0.05  # a slow start, then ten times faster
        fitted = budget.fitted_total(step)
        if fitted is not None:
            fits[step] = fitted
    assert list(fits) == [20, 40, 80, 160, 320]
    assert fits[20] == 20 + int(0.95 * 50 / 0.5)  # 0.5 s a step over steps 6-20
    assert fits[20] < fits[40] < fits[80] < fits[160] < fits[320] == 700  # faster, to the plan


def test_the_device_sets_the_batch_and_the_rate_follows_it_unless_given() -> None:
    from vqgen.device import for_device

    cpu, said = for_device(TrainConfig(epochs=1), "cpu")
    assert (cpu.batch_size, cpu.lr) == (16, 2e-3) and "batch 16 (the default on cpu)" in said
    gpu, said = for_device(TrainConfig(epochs=1), "cuda")
    assert gpu.batch_size == 64 and gpu.lr == pytest.approx(4e-3) and "on cuda" in said
    given = for_device(TrainConfig(epochs=1, batch_size=32), "cuda")[0]
    assert given.batch_size == 32 and given.lr == pytest.approx(2e-3 * 2**0.5)
    both, said = for_device(TrainConfig(epochs=1, batch_size=8, lr=1e-3), "cpu")
    assert (both.batch_size, both.lr) == (8, 1e-3) and said == "batch 8, lr 0.001"
