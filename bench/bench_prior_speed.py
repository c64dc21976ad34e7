"""Training steps/s of the prior beside a plain gated PixelCNN of the same size, in one run.

    .venv/bin/python bench/bench_prior_speed.py [--steps 12] [--threads 2]
    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python bench/bench_prior_speed.py   # another version

The plain model is the textbook gated PixelCNN as public VQ-VAE repositories write it
(e.g. ritheshkumar95/pytorch-vqvae): vertical and horizontal stacks built from symmetrically
padded convolutions that are cropped afterwards, the mask of the first layer applied to the
weights, tanh x sigmoid gates, a 1x1 output head, no positional bias and no condition. It is
written here from that description, not copied. Each model takes AdamW steps on random codes,
in float32 and under bf16 autocast (as `fit` trains where the device computes bf16 natively);
the table gives the median of `--steps` timed steps after two warm-up steps. The demo's row
uses the 5-minute demo's prior (`vqgen.demo.demo_prior`). Run it alone on the machine: a
second busy process makes every figure several times slower.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen.config import PriorConfig
from vqgen.demo import demo_prior
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.sampling import sample_codes
from vqgen.train import moving_average

# (name, prior, batch): the 5-minute demo's prior on its 32x32 grid of 128 codes, and the size
# of the plain gated PixelCNNs in public VQ-VAE repositories (with vqgen's other defaults)
SIZES = [
    ("demo", replace(demo_prior(5.0), codebook_size=128, grid=32), 16),
    (
        "64ch-15L-K512-16x16",
        PriorConfig(codebook_size=512, grid=16, channels=64, layers=15, condition="slice"),
        32,
    ),
]


class PlainGatedLayer(nn.Module):
    """One gated layer with padded-then-cropped stacks, the usual public formulation."""

    def __init__(self, dim: int, kernel: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.v = nn.Conv2d(dim, 2 * dim, (kernel // 2 + 1, kernel), padding=kernel // 2)
        self.h = nn.Conv2d(dim, 2 * dim, (1, kernel // 2 + 1), padding=(0, kernel // 2))
        self.v_to_h = nn.Conv2d(2 * dim, 2 * dim, 1)
        self.h_res = nn.Conv2d(dim, dim, 1)

    def forward(self, xv: Tensor, xh: Tensor) -> tuple[Tensor, Tensor]:
        if self.first:  # causal: the last row of the vertical and last column of the horizontal
            with torch.no_grad():
                self.v.weight[:, :, -1].zero_()
                self.h.weight[:, :, :, -1].zero_()
        side = xv.shape[-1]
        hv = self.v(xv)[:, :, :side, :]  # crop the rows below
        hh = self.h(xh)[:, :, :, :side]  # crop the columns to the right
        a, b = hv.chunk(2, dim=1)
        out_v = torch.tanh(a) * torch.sigmoid(b)
        a, b = (self.v_to_h(hv) + hh).chunk(2, dim=1)
        out_h = self.h_res(torch.tanh(a) * torch.sigmoid(b))
        return out_v, out_h if self.first else out_h + xh


class PlainGatedPixelCNN(nn.Module):
    def __init__(self, codebook: int, dim: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook, dim)
        self.layers = nn.ModuleList(PlainGatedLayer(dim, 3, i == 0) for i in range(layers))
        self.head = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, codebook, 1))

    def forward(self, codes: Tensor, cond: Tensor | None = None) -> Tensor:
        x = self.embedding(codes).permute(0, 3, 1, 2)
        xv = xh = x
        for layer in self.layers:
            xv, xh = layer(xv, xh)
        return self.head(xh)


def steps_per_second(
    model: nn.Module, codes: Tensor, cond: Tensor | None, steps: int, bf16: bool
) -> float:
    """Median AdamW steps/s of `model` on `codes` after two warm-up steps."""
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(codes, cond)
        loss = F.cross_entropy(logits.float(), codes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1 / sorted(times)[len(times) // 2]


def average_seconds(model: nn.Module, repeats: int = 50) -> float:
    """Median time of one update of the moving average of `model`'s weights (--ema)."""
    average = moving_average(model, 0.99)
    average.update_parameters(model)  # the first update copies
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        average.update_parameters(model)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("steps/s, float32 / bf16 autocast\n")
    print("| size | batch | plain gated PixelCNN | vqgen prior | vqgen grids/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    averages = []
    for name, cfg, batch in SIZES:
        torch.manual_seed(0)
        codes = torch.randint(0, cfg.codebook_size, (batch, cfg.grid, cfg.grid))
        cond = torch.rand(batch)
        rates = {}
        for bf16 in (False, True):
            torch.manual_seed(0)
            plain = PlainGatedPixelCNN(cfg.codebook_size, cfg.channels, cfg.layers)
            rates["plain", bf16] = steps_per_second(plain, codes, None, args.steps, bf16)
            ours = GatedPixelCNN(cfg).train()
            rates["ours", bf16] = steps_per_second(ours, codes, cond, args.steps, bf16)
        plain = f"{rates['plain', False]:.2f} / {rates['plain', True]:.2f}"
        ours = f"{rates['ours', False]:.2f} / {rates['ours', True]:.2f}"
        grids = f"{rates['ours', False] * batch:.0f} / {rates['ours', True] * batch:.0f}"
        print(f"| {name} | {batch} | {plain} | {ours} | {grids} |")
        update = average_seconds(GatedPixelCNN(cfg))
        averages.append(f"{name}: {1e3 * update:.2f} ms, {update * rates['ours', True]:.1%}")
    print(f"\n--ema, one update of the average and its share of a bf16 step: {'; '.join(averages)}")
    prior = GatedPixelCNN(SIZES[0][1]).eval()
    start = time.perf_counter()
    sample_codes(prior, 16, cond=torch.rand(16), generator=torch.Generator().manual_seed(0))
    print(f"\nsampling 16 grids of 32x32, demo's prior: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
