"""Where a prior's samples go wrong: given the true codes before each position, or its own.

    .venv/bin/python bench/teacher_forced.py RUN OUT.png [--n 8]

On the validate split of a one-level run: the prior's NLL and the entropy of its prediction
inside the brain, at its outline and in the background; then, for n slices spread over the
levels, each code drawn from the prior given the *true* codes before it (teacher-forced), and
decoded. If those slices look real while free samples do not, the prior's errors come from
drawing on its own earlier draws (drift), not from any one prediction. OUT.png has rows: real,
reconstruction, teacher-forced draw, teacher-forced argmax.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from vqgen import checkpoint, conditioning, fileio, metrics
from vqgen.config import DataConfig, load_config
from vqgen.data import load_data
from vqgen.inference import LN2, split_codes
from vqgen.rundir import RunDir


def regions(images: torch.Tensor, grid: int) -> dict[str, torch.Tensor]:
    """(N, grid, grid) masks of code cells: all background, inside the brain (4 px or more from
    its outline) and the rest, the outline."""
    brain = metrics.foreground_mask(images).float()
    near_outside = F.max_pool2d(1 - brain, 9, 1, 4)
    background = F.adaptive_avg_pool2d(brain, grid)[:, 0] == 0
    inside = F.adaptive_avg_pool2d(near_outside, grid)[:, 0] == 0
    return {"background": background, "outline": ~background & ~inside, "inside": inside}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    run = RunDir(args.run)
    vqvae, meta = checkpoint.load_vqvae(run)
    prior, _ = checkpoint.load_prior(run, vqvae_cfg=vqvae.cfg)
    assert vqvae.cfg.levels == 1, "a one-level run"
    data = load_config(DataConfig, meta["data"], "vqvae.json 'data'")
    images = load_data(data, "validate").images
    codes = split_codes(run, "validate", vqvae, data, fileio.sha256(run.weights("vqvae")))
    grid = codes.levels[0].long()
    cond = conditioning.from_batch(prior.cfg.condition, codes.labels, codes.positions)
    logits = torch.cat([prior(grid[i : i + 64], cond[i : i + 64]) for i in range(0, len(grid), 64)])
    bits = F.cross_entropy(logits.float(), grid, reduction="none") / LN2
    probs = logits.float().softmax(1)
    entropy = -(probs * probs.clamp_min(1e-12).log2()).sum(1)
    for name, cells in regions(images, grid.shape[-1]).items():
        print(
            f"{name:10s} {cells.float().mean():.0%} of the codes: NLL {bits[cells].mean():.2f} "
            f"bits, entropy of the prediction {entropy[cells].mean():.2f} bits"
        )
    pick = torch.linspace(0, len(grid) - 1, args.n).long()
    p = probs[pick].movedim(1, -1)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.multinomial(p.reshape(-1, p.shape[-1]), 1, generator=generator).view(
        grid[pick].shape
    )

    def decode(c: torch.Tensor) -> torch.Tensor:
        return vqvae.decode_codes([c]).clamp(0, 1)

    recon, rows = decode(grid[pick]), {"draw": decode(drawn), "argmax": decode(p.argmax(-1))}
    for name, image in rows.items():
        ssim = metrics.ssim(recon, image).mean()
        print(f"teacher-forced {name}: SSIM to the reconstruction {ssim:.3f}")
    figure = torch.cat([images[pick], recon, *rows.values()])
    torchvision.utils.save_image(figure, args.out, nrow=args.n, padding=2)
    print(f"rows real, reconstruction, teacher-forced draw and argmax: {args.out}")


if __name__ == "__main__":
    main()
