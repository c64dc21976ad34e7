"""Stage 1 on the embedded data: a few dozen steps already reconstruct far better than chance."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from vqgen.api import load_data
from vqgen.config import DataConfig, TrainConfig, VQVAEConfig
from vqgen.data import mni152
from vqgen.models.vqvae import VQVAE
from vqgen.train_vqvae import reconstruction_metrics, train_vqvae

pytestmark = pytest.mark.slow  # every test trains


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # muon: the demo's VQ-VAE
def test_a_few_dozen_steps_raise_validate_ssim_clearly(tmp_path, monkeypatch, optimizer):
    monkeypatch.setattr(mni152, "SUBJECTS", {"train": 8, "validate": 2, "test": 1})
    monkeypatch.setattr(mni152, "SLICES", 8)
    model_cfg = VQVAEConfig(size=64, hidden=32, codebook_size=64, code_dim=16)
    val_set = load_data("mni152", "validate", size=64)
    torch.manual_seed(0)
    untrained = reconstruction_metrics(VQVAE(model_cfg), val_set)["val_ssim"]  # about 0.04
    result = train_vqvae(
        DataConfig(source="mni152"),
        model_cfg,
        TrainConfig(
            epochs=100,
            max_steps=48,
            batch_size=16,
            lr=5e-3,
            warmup_steps=5,
            device="cpu",
            optimizer=optimizer,
        ),
        tmp_path,
    )
    assert result.steps == 48
    # 48 steps see each of the 64 slices 12 times: far from converged, clearly learning
    assert result.val_ssim > untrained + 0.1
    assert result.val_ssim > 3 * untrained
    assert (tmp_path / "figures" / "vqvae_reconstructions.png").is_file()


def test_the_same_seed_gives_the_same_model(tmp_path, tiny_mni152):
    """--seed fixes the initial weights as well as the shuffling: runs repeat exactly."""
    model_cfg = VQVAEConfig(size=32, hidden=16, codebook_size=16, code_dim=8)
    weights = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        torch.manual_seed(100 + len(weights))  # whatever the RNG held before must not matter
        train_vqvae(
            DataConfig(source="mni152"),
            model_cfg,
            TrainConfig(max_steps=2, batch_size=4, seed=seed, device="cpu"),
            tmp_path / name,
        )
        weights.append(load_file(tmp_path / name / "vqvae-last.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
