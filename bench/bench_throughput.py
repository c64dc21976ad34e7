"""Training throughput: VQ-VAE images/s and prior codes/s, the step `vqgen.train.fit` takes.

    .venv/bin/python bench/bench_throughput.py                      # every model and variant
    .venv/bin/python bench/bench_throughput.py --model vqvae-128 --variant channels_last

One step = forward, loss, backward, gradient clipping and an AdamW update, on random inputs of
the real shapes (VQ-VAE: batch 32, hidden 128, K 512; prior: the default 64 channels, 10 layers,
K 512, on the code grids of 64 and 128 px slices). Variants:
  eager          the models as `fit` runs them
  channels_last  weights (and VQ-VAE inputs) in NHWC memory format
  bf16           under bf16 autocast, as `fit` trains where the device computes bf16 natively
                 (the VQ-VAE in channels_last, as train-vqvae keeps it)
  compile        torch.compile of the model (compile time is reported, not counted)
Prints one Markdown table row per (model, variant); results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vqgen.config import PriorConfig, VQVAEConfig
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import VQVAE

BATCH = 32
MODELS = ("vqvae-64", "vqvae-128", "prior-16", "prior-32")
VARIANTS = ("eager", "channels_last", "bf16", "compile")


def build(model_name: str, variant: str, device: torch.device):
    """(model, step function, items per step, unit) for one benchmark."""
    torch.manual_seed(0)
    kind, side = model_name.split("-")
    side = int(side)
    if kind == "vqvae":
        model = VQVAE(VQVAEConfig(size=side, hidden=128, codebook_size=512)).to(device)
        images = torch.rand(BATCH, 1, side, side, device=device)
        if variant in ("channels_last", "bf16"):
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)

        def loss_fn(net):
            recon, (q,) = net(images)
            return F.mse_loss(recon, images) + q.loss

        return model, loss_fn, BATCH, "img/s"
    model = GatedPixelCNN(PriorConfig(codebook_size=512, grid=side)).to(device)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    codes = torch.randint(0, 512, (BATCH, side, side), device=device)

    def loss_fn(net):
        return F.cross_entropy(net(codes, None), codes)

    return model, loss_fn, BATCH * side * side, "codes/s"


def measure(model_name: str, variant: str, steps: int, warmup: int, device: torch.device) -> dict:
    model, loss_fn, items, unit = build(model_name, variant, device)
    model.train()
    net = model
    if variant == "compile":
        net = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "bf16")

    def step() -> None:
        with autocast:
            loss = loss_fn(net)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    start = time.perf_counter()
    step()  # first step: compilation, k-means initialisation of the codebook, allocations
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "model": model_name,
        "variant": variant,
        "rate": items * steps / seconds,
        "unit": unit,
        "step_ms": 1000 * seconds / steps,
        "first_step_s": compile_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, action="append")
    parser.add_argument("--variant", choices=VARIANTS, action="append")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}, torch {torch.__version__}, batch {BATCH}")
    print("| model | variant | throughput | ms/step | first step s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model_name in args.model or MODELS:
        for variant in args.variant or VARIANTS:
            r = measure(model_name, variant, args.steps, args.warmup, device)
            print(
                f"| {r['model']} | {r['variant']} | {r['rate']:,.0f} {r['unit']} | "
                f"{r['step_ms']:.0f} | {r['first_step_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
