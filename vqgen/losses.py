"""The VQ-VAE's training loss: everything stage 1 minimises beside the model itself.

    loss = VQLoss(VQLossConfig(l1_weight=1.0))
    stage = Stage("vqvae", model, ..., step=loss.step)

The terms (van den Oord et al. 2017):
    reconstruction  MSE, plus `l1_weight` x L1
    quantizer       the codebook loss and beta x commitment, as the model's quantizer returns
                    them (`Quantized.loss`; beta is the quantizer's, in VQVAEConfig)
The settings are the "loss" section of vqvae.json.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen.config import VQLossConfig
from vqgen.train import Batch


class VQLoss:
    """The VQ-VAE's loss for one batch."""

    def __init__(self, cfg: VQLossConfig) -> None:
        self.cfg = cfg

    def step(self, model: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One step's loss and the scalars to log, left on the device."""
        images = batch[0].contiguous(memory_format=torch.channels_last)  # like the weights
        recon, levels = model(images)
        recon = recon.float()
        mse = F.mse_loss(recon, images)
        l1 = self.cfg.l1_weight
        loss = mse + l1 * F.l1_loss(recon, images) if l1 else mse
        for q in levels:
            loss = loss + q.loss
        scalars = {"loss": loss, "mse": mse, "perplexity": levels[-1].perplexity}
        if len(levels) == 2:
            scalars["perplexity_top"] = levels[0].perplexity
        return loss, {k: v.detach() for k, v in scalars.items()}
