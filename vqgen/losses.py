"""The VQ-VAE's training loss: everything stage 1 minimises beside the model itself.

    loss = VQLoss(VQLossConfig(l1_weight=1.0, adversarial=True, disc_start=2000))
    stage = Stage("vqvae", model, ..., step=loss.step, helpers=loss.helpers(),
                  optimizer=loss.optimizers())

The terms (van den Oord et al. 2017; VQGAN, Esser et al. 2021):
    reconstruction  MSE, plus `l1_weight` x L1
    quantizer       the codebook loss and beta x commitment, as the model's quantizer returns
                    them (`Quantized.loss`; beta is the quantizer's, in VQVAEConfig)
    adversarial     from `disc_start` on, a PatchGAN discriminator's hinge loss, weighted by
                    `disc_weight` x the adaptive weight at the decoder's last layer
The discriminator, its warm-up and its optimiser settings live here too (as in
taming-transformers' loss module); the settings are the "loss" section of vqvae.json.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen import distributed
from vqgen.config import VQLossConfig
from vqgen.models.discriminator import PatchDiscriminator
from vqgen.train import Batch, Nets, OptimizerSettings

# the discriminator's Adam: GAN betas as in VQGAN, and a tenth of --lr: at the VQ-VAE's 2e-3 its
# hinge loss hovered at 2 (chance) and above, so it taught the VQ-VAE nothing (bench/RESULTS.md)
DISC_OPTIMIZER = OptimizerSettings(lr_scale=0.1, betas=(0.5, 0.9))


class VQLoss:
    """The VQ-VAE's loss and, with `cfg.adversarial`, the discriminator that is trained with it."""

    def __init__(self, cfg: VQLossConfig) -> None:
        self.cfg = cfg

    def helpers(self) -> dict[str, nn.Module]:
        """The models trained beside the VQ-VAE: the discriminator, when there is one (built
        now, so its initial weights follow the VQ-VAE's in the seeded RNG)."""
        if not self.cfg.adversarial:
            return {}
        disc = PatchDiscriminator(self.cfg.disc_channels, self.cfg.disc_layers)
        return {"disc": disc.to(memory_format=torch.channels_last)}

    def optimizers(self) -> dict[str, OptimizerSettings]:
        """How the helpers are optimised, beside the VQ-VAE's own settings."""
        return {"disc": DISC_OPTIMIZER}

    def step(
        self, nets: Nets, batch: Batch, step: int
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """One step's loss per model ("model": the VQ-VAE, "disc" from `disc_start` on) and the
        scalars to log."""
        images = batch[0].contiguous(memory_format=torch.channels_last)  # like the weights
        recon, levels = nets["model"](images)
        recon = recon.float()
        mse = F.mse_loss(recon, images)
        l1 = self.cfg.l1_weight
        reconstruction = mse + l1 * F.l1_loss(recon, images) if l1 else mse
        loss = reconstruction
        for q in levels:
            loss = loss + q.loss
        scalars = {
            "loss": loss.item(),
            "mse": mse.item(),
            "perplexity": levels[-1].perplexity.item(),
        }
        if len(levels) == 2:
            scalars["perplexity_top"] = levels[0].perplexity.item()
        if "disc" not in nets or step < self.cfg.disc_start:
            return {"model": loss}, scalars
        return self.adversarial(nets, images, recon, loss, reconstruction, scalars)

    def adversarial(
        self,
        nets: Nets,
        images: Tensor,
        recon: Tensor,
        loss: Tensor,
        reconstruction: Tensor,
        scalars: dict[str, float],
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        """VQGAN's hinge losses (Esser et al. 2021, eq. 7): the VQ-VAE adds -D(recon), weighted
        by disc_weight x |grad rec| / |grad gan| at the decoder's last layer; D learns
        relu(1 - D(real)) + relu(1 + D(recon)).

        The VQ-VAE's term goes through the unwrapped discriminator: that backward updates only
        the VQ-VAE, and DDP would wait for the discriminator's gradients.
        """
        last_layer = distributed.unwrap(nets["model"]).last_layer
        generator = -distributed.unwrap(nets["disc"])(recon).mean()
        weight = self.cfg.disc_weight * adaptive_weight(reconstruction, generator, last_layer)
        real, fake = nets["disc"](torch.cat([images, recon.detach()])).float().chunk(2)
        disc = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        scalars |= {"gan": generator.item(), "gan_weight": weight.item(), "disc": disc.item()}
        return {"model": loss + weight * generator, "disc": disc}, scalars


def adaptive_weight(reconstruction: Tensor, generator: Tensor, last: Tensor) -> Tensor:
    """The ratio of the two losses' gradient norms at `last` (VQGAN's lambda), in [0, 1e4]
    and detached: the adversarial term pulls as hard as the reconstruction, whatever the
    scale of the discriminator's logits."""
    grad_rec = torch.autograd.grad(reconstruction, last, retain_graph=True)[0]
    grad_gan = torch.autograd.grad(generator, last, retain_graph=True)[0]
    return (grad_rec.norm() / (grad_gan.norm() + 1e-4)).clamp(0, 1e4).detach()
