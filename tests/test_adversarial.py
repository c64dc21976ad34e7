"""The VQ-VAE's adversarial loss (VQGAN): the PatchGAN discriminator, the adaptive weight, the
warm-up, exact resume of the discriminator and its optimiser, and NaN in the GAN loss."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import assert_one_line_error, run_cli
from tiny import CPU_DEVICE, TINY_VQVAE, blobs, interrupt_at, train_cfg

from vqgen import fileio
from vqgen.config import DataConfig, VQLossConfig, to_dict
from vqgen.errors import Interrupted, TrainingError
from vqgen.losses import VQLoss, adaptive_weight
from vqgen.models.discriminator import PatchDiscriminator
from vqgen.models.vqvae import VQVAE
from vqgen.rundir import RunDir
from vqgen.train import Stage, fit
from vqgen.train_vqvae import reconstruction_metrics

ADVERSARIAL = VQLossConfig(adversarial=True, disc_start=4, l1_weight=1.0)
adversarial_step = VQLoss(ADVERSARIAL).step


def adversarial_stage(run, step=adversarial_step, cfg=TINY_VQVAE) -> Stage:
    torch.manual_seed(0)
    val_set = blobs(8, seed=1)
    return Stage(
        name="vqvae",
        model=VQVAE(cfg),
        train_set=blobs(20),
        step=step,
        validate=lambda m: reconstruction_metrics(m, val_set),
        monitor="val_ssim",
        higher_is_better=True,
        meta={"model": to_dict(cfg), "data": to_dict(DataConfig(size=16))},
        helpers={"disc": PatchDiscriminator(8, 2)},
    )


@pytest.mark.parametrize(("layers", "field"), [(2, 34), (3, 70)])
def test_each_patch_logit_sees_its_receptive_field_only(layers, field):
    disc = PatchDiscriminator(4, layers)
    x = torch.rand(1, 1, 96, 96, requires_grad=True)
    logits = disc(x)
    logits[0, 0, logits.shape[2] // 2, logits.shape[3] // 2].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()[:, 0]
    assert 0 < rows.max() - rows.min() + 1 <= field
    assert rows.min() > 0 and rows.max() < 95  # a patch, not the whole slice


def test_adaptive_weight_balances_the_gradient_norms():
    last = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(3, 5)
    reconstruction = (last @ x).square().mean()
    generator = (last @ x).sin().sum()
    weight = adaptive_weight(reconstruction, generator, last)
    grad_rec = torch.autograd.grad(reconstruction, last, retain_graph=True)[0].norm()
    grad_gan = torch.autograd.grad(generator, last, retain_graph=True)[0].norm()
    torch.testing.assert_close(weight, grad_rec / (grad_gan + 1e-4))
    scaled = adaptive_weight(reconstruction, 10 * generator, last)
    torch.testing.assert_close(scaled * 10, weight, rtol=1e-3, atol=0)  # scale-free
    assert not weight.requires_grad


def test_the_discriminator_joins_after_its_warm_up_and_is_saved(tmp_path):
    stage = adversarial_stage(tmp_path)
    before = {k: v.clone() for k, v in stage.helpers["disc"].state_dict().items()}
    fit(
        stage, train_cfg(max_steps=3, epochs=None), RunDir(tmp_path), CPU_DEVICE
    )  # before disc_start
    for key, value in stage.helpers["disc"].state_dict().items():
        assert torch.equal(value, before[key]), key
    stage = adversarial_stage(tmp_path)
    fit(stage, train_cfg(max_steps=8, epochs=None), RunDir(tmp_path), CPU_DEVICE)
    after = stage.helpers["disc"].state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in after)
    log = [json.loads(line) for line in (tmp_path / "metrics-vqvae.jsonl").open()]
    steps_with_gan = [r["step"] for r in log if "gan" in r]
    assert steps_with_gan and min(steps_with_gan) == ADVERSARIAL.disc_start + 1
    state = fileio.load_tensors(tmp_path / "train_state-vqvae.safetensors")
    assert any(k.startswith("disc.weights.") for k in state)
    assert any(k.startswith("disc.opt.") for k in state)


def test_adversarial_resume_is_exact(tmp_path):
    """Ctrl-C before the discriminator joins, resume past it: the same weights, both models."""
    whole = adversarial_stage(tmp_path / "a")
    fit(whole, train_cfg(), RunDir(tmp_path / "a"), CPU_DEVICE)

    with pytest.raises(Interrupted):
        fit(
            adversarial_stage(tmp_path / "b", interrupt_at(3, loss=adversarial_step)),
            train_cfg(),
            RunDir(tmp_path / "b"),
            CPU_DEVICE,
        )
    resumed = adversarial_stage(tmp_path / "b")
    fit(resumed, train_cfg(), RunDir(tmp_path / "b"), CPU_DEVICE, resume=True)
    for name in ("model", "disc"):
        a, b = whole.models()[name].state_dict(), resumed.models()[name].state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name} {key}")


def test_a_gan_loss_that_turns_nan_stops_like_any_nan(tmp_path):
    def poisoned(nets, batch, step):
        if step == 6:  # the discriminator has trained two steps and is saved at step 5
            for p in nets["disc"].parameters():
                p.data.fill_(float("nan"))
        return adversarial_step(nets, batch, step)

    with pytest.raises(TrainingError, match=r"loss became nan at step 6.*step 5"):
        fit(adversarial_stage(tmp_path, poisoned), train_cfg(), RunDir(tmp_path), CPU_DEVICE)
    assert all(
        v.isfinite().all()
        for v in fileio.load_tensors(tmp_path / "vqvae-last.safetensors").values()
    )


def test_cli_saves_the_adversarial_settings_and_refuses_bad_ones(capsys, tmp_path, tiny_mni152):
    run = tmp_path / "run"
    args = ["--run", run, "--size", "32", "--codebook-size", "16", "--hidden", "16"]
    args += ["--max-steps", "3", "--batch-size", "4", "--device", "cpu"]
    args += ["--adversarial", "--disc-start", "1", "--l1-weight", "0.5"]
    code, _, err = run_cli(capsys, "train-vqvae", *args, "--disc-weight", "0.2")
    assert code == 0, err
    loss = json.loads((run / "vqvae.json").read_text())["loss"]
    assert (loss["adversarial"], loss["disc_start"], loss["disc_weight"]) == (True, 1, 0.2)
    assert loss["l1_weight"] == 0.5
    assert any("gan" in line for line in (run / "metrics-vqvae.jsonl").open())
    code, _, err = run_cli(capsys, "train-vqvae", *args, "--overwrite", "--disc-weight", "-1")
    assert_one_line_error(code, err, 2, "--disc-weight")
