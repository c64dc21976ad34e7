"""What nearest-real SSIM a perfect prior would score: real validate slices, and the VQ-VAE's
reconstructions of them, each scored like samples against their nearest test slice.

    .venv/bin/python bench/realism_ceiling.py RUN [N]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vqgen import checkpoint, metrics
from vqgen.config import DataConfig, load_config
from vqgen.data import load_data
from vqgen.inference import reconstruct
from vqgen.rundir import RunDir


def main() -> None:
    run = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    vqvae, meta = checkpoint.load_vqvae(RunDir(run))
    data = load_config(DataConfig, meta.get("data"), f"{run}/vqvae.json 'data'")
    validate, test = load_data(data, "validate").images, load_data(data, "test").images
    pick = torch.randperm(len(validate), generator=torch.Generator().manual_seed(0))[:n]
    real = validate[pick]
    recon, _ = reconstruct(vqvae, real)
    real_ssim, _ = metrics.nearest_ssim(real, test)
    recon_ssim, _ = metrics.nearest_ssim(recon, test)
    print(
        f"{n} validate slices -> nearest test slice SSIM: real {real_ssim.mean():.3f}, "
        f"reconstructed {recon_ssim.mean():.3f}"
    )


if __name__ == "__main__":
    main()
