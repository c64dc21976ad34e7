"""The optimisers: Muon's orthogonalised updates and which weights it takes (its exact resume:
test_levels_cli)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from fixtures import run_cli
from tiny import CPU, CPU_DEVICE, TINY_VQVAE, VQVAE_32, seeded, tiny_prior

from vqgen import fileio
from vqgen.config import TrainConfig
from vqgen.errors import UsageError
from vqgen.models.vqvae import VQVAE
from vqgen.optim import (
    ADAMW_BESIDE_MUON_SCALE,
    MUON_LR_SCALE,
    Muon,
    build_optimizers,
    orthogonalise,
)


def spread_matrix(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A random (rows, cols) matrix whose singular values run from 0.01 to 1: two orders of
    magnitude, as a gradient's do (five Newton-Schulz steps lift values down to about 1/500
    of the matrix's norm into the band, not smaller ones)."""
    g = seeded(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    k = min(rows, cols)
    s = torch.logspace(-2, 0, k, dtype=torch.float64)
    return u[:, :k] @ torch.diag(s) @ v[:, :k].T


@pytest.mark.parametrize(("rows", "cols"), [(64, 192), (192, 64), (32, 32), (128, 8)])
def test_orthogonalise_evens_the_singular_values_and_keeps_the_directions(rows, cols):
    """Every direction of the result moves alike (singular values near 1, whatever they were),
    and the result points as the exact polar factor U V^T does."""
    m = spread_matrix(rows, cols, seed=rows + cols)
    result = orthogonalise(m)
    values = torch.linalg.svdvals(result)
    assert values.min() > 0.5 and values.max() < 1.25, (values.min(), values.max())
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    polar = u @ vh
    cosine = (result * polar).sum() / (result.norm() * polar.norm())
    assert cosine > 0.95


def test_a_muon_step_moves_every_direction_of_the_weight_alike():
    """From zero momentum, one step changes a (rows, cols) weight by about lr x sqrt(max(1,
    rows/cols)) along every singular direction of its gradient, large or small."""
    weight = torch.nn.Parameter(torch.zeros(96, 32))
    weight.grad = spread_matrix(96, 32, seed=1).float()
    lr = 0.02
    Muon([weight], lr=lr).step()
    change = torch.linalg.svdvals(weight.detach()) / (lr * math.sqrt(96 / 32))
    assert change.min() > 0.5 and change.max() < 1.25
    with pytest.raises(ValueError, match="matrices and kernels"):
        Muon([torch.nn.Parameter(torch.zeros(4))], lr=lr)


def test_muon_takes_the_gated_blocks_hidden_weights_and_adamw_the_rest():
    prior = tiny_prior("slice", cond_dropout=0.1)
    optimizers = build_optimizers(
        prior, TrainConfig(epochs=1, lr=1e-3, optimizer="muon"), CPU_DEVICE
    )
    names = {id(p): n for n, p in prior.named_parameters()}
    taken = {
        key: {names[id(p)] for group in opt.param_groups for p in group["params"]}
        for key, opt in optimizers.items()
    }
    assert set(taken) == {"model", "muon"}
    assert taken["model"].isdisjoint(taken["muon"])
    assert taken["model"] | taken["muon"] == set(names.values())  # each weight once
    for name in taken["muon"]:
        assert name.startswith("blocks.") and not name.endswith(("bias", "pos.weight")), name
    assert {"blocks.0.v_conv.weight", "blocks.2.v_to_h.weight", "blocks.1.cond.weight"} <= taken[
        "muon"
    ]
    assert {"embedding.weight", "pos", "blocks.1.pos.weight", "out.3.weight"} <= taken["model"]
    (muon_group,) = optimizers["muon"].param_groups
    assert muon_group["lr"] == pytest.approx(1e-3 * MUON_LR_SCALE)
    (beside_muon,) = optimizers["model"].param_groups
    assert beside_muon["lr"] == pytest.approx(1e-3 * ADAMW_BESIDE_MUON_SCALE)
    adamw_only = build_optimizers(prior, TrainConfig(epochs=1, lr=1e-3), CPU_DEVICE)
    assert list(adamw_only) == ["model"]
    assert adamw_only["model"].param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("stage", ["vqvae", "prior"])
def test_each_stage_steps_each_optimiser_at_its_own_rate(stage, trained_run, tmp_path, capsys):
    """A one-step run (its warm-up over at once) saves the rates its step took: by default
    (Muon, both stages) AdamW's share and Muon's at their scales of --lr; with --optimizer adamw,
    --lr itself."""
    run = trained_run if stage == "prior" else tmp_path / "vqvae"
    args = ["--run", run, "--overwrite", "--max-steps", "1", "--lr", "1e-3", *CPU]
    if stage == "vqvae":
        args += ["--data", "mni152", *VQVAE_32, "--batch-size", "4", "--no-tensorboard"]
    rates = {}
    for optimizer in ("default", "adamw"):
        chosen = ["--optimizer", optimizer] if optimizer != "default" else []
        code, _, err = run_cli(capsys, f"train-{stage}", *args, *chosen)
        assert code == 0, err
        state = fileio.load_tensor_meta(run / f"train_state-{stage}.safetensors")
        rates[optimizer] = {name: g[0]["lr"] for name, g in state["param_groups"].items()}
    assert rates["default"] == pytest.approx(
        {"model": 1e-3 * ADAMW_BESIDE_MUON_SCALE, "muon": 1e-3 * MUON_LR_SCALE}
    )
    assert rates["adamw"] == pytest.approx({"model": 1e-3})


@pytest.mark.parametrize("levels", [1, 2])
def test_muon_takes_a_vqvaes_convolutions_but_those_at_the_pixels(levels):
    """A VQ-VAE's Muon holds every convolution's kernel between the slice and the codes; AdamW
    the first convolution (reading the pixels), the last (writing them), every bias and the
    codebooks: each weight in exactly one of them."""
    vqvae = VQVAE(dataclasses.replace(TINY_VQVAE, levels=levels, top_downsample=2))
    optimizers = build_optimizers(
        vqvae, TrainConfig(epochs=1, lr=1e-3, optimizer="muon"), CPU_DEVICE
    )
    held = {
        key: {id(p) for group in opt.param_groups for p in group["params"]}
        for key, opt in optimizers.items()
    }
    assert not held["muon"] & held["model"]
    assert held["muon"] | held["model"] == {id(p) for p in vqvae.parameters()}
    pixels = {vqvae.encoder.net[0].weight, vqvae.decoder.net[-1].weight}
    kernels = {
        name
        for name, p in vqvae.named_parameters()
        if p.dim() == 4 and all(p is not q for q in pixels)
    }
    muon = {name for name, p in vqvae.named_parameters() if id(p) in held["muon"]}
    assert muon == kernels
    assert len(muon) >= (10 if levels == 2 else 6)  # the trunk's, the top level's
    assert all(id(p) in held["model"] for p in pixels)


def test_muon_is_refused_for_a_model_without_hidden_weights():
    with pytest.raises(UsageError, match="--optimizer muon updates a prior's gated blocks or"):
        build_optimizers(
            torch.nn.Linear(4, 4), TrainConfig(epochs=1, lr=1e-3, optimizer="muon"), CPU_DEVICE
        )
    with pytest.raises(UsageError, match="--optimizer must be one of adamw, muon, got 'sgd'"):
        TrainConfig(epochs=1, optimizer="sgd")
