"""The optimisers a stage trains with (`TrainConfig.optimizer`).

    optimizers = build_optimizers(model, cfg, device)  # {"model": AdamW[, "muon": Muon]}

"adamw" updates every weight with AdamW. "muon" (both stages' default) updates the hidden
weights with Muon and the rest with AdamW, as Muon's authors train transformers, each at a rate
of its own (`lr_scales`). In a prior Muon takes the gated blocks' weights, AdamW the embeddings,
positional map, biases and head: at the same steps the 5-minute demo's prior reaches a test NLL
0.2-0.3 bit lower than with AdamW alone and draws samples with fewer atypical outlines
(docs/decisions.md, muon). In a VQ-VAE Muon takes every convolution but the two at the pixels:
sharper reconstructions and codes its prior models better, at 64 px and 128 px (decisions,
vqvae-muon).

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/; Liu et al. 2025,
https://arxiv.org/abs/2502.16982) replaces each weight's Nesterov momentum by the nearest
semi-orthogonal matrix, found by a few Newton-Schulz iterations, so that every direction of the
update moves at the same rate. torch.optim.Muon (torch 2.9 on) takes two-dimensional weights
only; here a convolution's kernel is updated as the (out, in x kh x kw) matrix it multiplies, as
Muon's reference does for convolutions, and every supported torch has it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from vqgen.config import ADAMW_BESIDE_MUON_SCALE, MUON_LR_SCALE, TrainConfig
from vqgen.errors import UsageError
from vqgen.models.pixelcnn import GatedBlock
from vqgen.models.vqvae import VQVAE

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the reference's quintic: fast, not exact
NS_STEPS = 5


def lr_scales(optimizer: str) -> dict[str, float]:
    """Each optimiser's rate over the schedule's (vqgen.schedule.learning_rate) for
    TrainConfig.optimizer `optimizer`, by the name the train state keeps it under; not in its
    param groups, which a run saved before lacks."""
    if optimizer == "muon":
        return {"model": ADAMW_BESIDE_MUON_SCALE, "muon": MUON_LR_SCALE}
    return {"model": 1.0}


def orthogonalise(matrices: Tensor, steps: int = NS_STEPS) -> Tensor:
    """The semi-orthogonal matrix nearest each of `matrices` (..., rows, cols), approximately:
    its singular values are brought from any positive value into about [0.7, 1.2] by `steps`
    iterations of the reference's quintic Newton-Schulz map, its singular vectors kept."""
    a, b, c = NS_COEFFICIENTS
    norms = torch.linalg.matrix_norm(matrices, keepdim=True)  # Frobenius
    x = matrices / (norms + 1e-7)  # singular values at most 1, where the map converges
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for weights of two or more dimensions, each taken as (shape[0], the rest).

    Each step: momentum m = beta m + (1 - beta) g; the Nesterov update u = beta m + (1 - beta) g
    orthogonalised, scaled by sqrt(max(1, rows / cols)) as the reference does; decoupled
    weight decay. Weights of one shape are orthogonalised together, in batched products: a
    prior's dozens of small matrices cost a few launches, not hundreds. No number is read back
    to the host.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() < 2:
                    raise ValueError(f"Muon updates matrices and kernels, not {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        assert closure is None, "Muon takes no closure"
        for group in self.param_groups:
            lr, beta, decay = group["lr"], group["momentum"], group["weight_decay"]
            by_shape: dict[tuple[int, ...], list[tuple[Tensor, Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                momentum = state["momentum_buffer"]
                momentum.lerp_(p.grad, 1 - beta)
                update = p.grad.lerp(momentum, beta)  # Nesterov
                by_shape.setdefault(tuple(p.shape), []).append((p, update))
            for shape, pairs in by_shape.items():
                rows, cols = shape[0], math.prod(shape[1:])
                updates = orthogonalise(torch.stack([u.reshape(rows, cols) for _, u in pairs]))
                scale = max(1.0, rows / cols) ** 0.5
                for (p, _), update in zip(pairs, updates, strict=True):
                    p.mul_(1 - lr * decay)
                    p.add_(update.view(shape), alpha=-lr * scale)


def hidden_weights(model: nn.Module) -> list[Tensor]:
    """The weights Muon updates: those of the gated blocks' convolutions and linear maps, of
    every prior level (vqgen.models.pixelcnn.GatedBlock.hidden_weights), or a VQ-VAE's
    convolutions between pixels and codes (vqgen.models.vqvae.VQVAE.hidden_weights)."""
    owners = (GatedBlock, VQVAE)
    return [p for m in model.modules() if isinstance(m, owners) for p in m.hidden_weights()]


def build_optimizers(
    model: nn.Module, cfg: TrainConfig, device: torch.device
) -> dict[str, torch.optim.Optimizer]:
    """The stage's optimisers by name, as the train state keeps them: "model", AdamW (of every
    weight, or of those Muon does not update), and with cfg.optimizer "muon", "muon"; each at
    its `lr_scales` times the schedule's rate."""
    muon = hidden_weights(model) if cfg.optimizer == "muon" else []
    if cfg.optimizer == "muon" and not muon:
        raise UsageError(
            "--optimizer muon updates a prior's gated blocks or a VQ-VAE's convolutions; "
            "this model has neither"
        )
    scales = lr_scales(cfg.optimizer)
    taken = {id(p) for p in muon}
    rest = [p for p in model.parameters() if id(p) not in taken]
    # fused: one kernel for all parameters, its step count on the device (no host read);
    # a quarter of the optimiser's time on a CPU (docs/decisions.md, fused-adamw)
    optimizers: dict[str, torch.optim.Optimizer] = {
        "model": torch.optim.AdamW(
            rest,
            lr=cfg.lr * scales["model"],
            weight_decay=cfg.weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )
    }
    if muon:
        optimizers["muon"] = Muon(
            muon,
            lr=cfg.lr * scales["muon"],
            weight_decay=cfg.weight_decay,
        )
    return optimizers
