"""Training throughput: the prior's steps/s beside a plain gated PixelCNN, and both stages'
models under each memory layout, bf16 autocast and torch.compile.

    python bench/bench_prior_speed.py                          # both tables
    python bench/bench_prior_speed.py --only prior --steps 20  # the prior beside a plain one
    python bench/bench_prior_speed.py --only profile            # where a bf16 step's time goes
    python bench/bench_prior_speed.py --only inference --run RUN  # the VQ-VAE, bf16 or float32
    python bench/bench_prior_speed.py --only layouts --model vqvae-128 --variant channels_last
    PYTHONPATH=OTHER_CHECKOUT python bench/bench_prior_speed.py   # another version of vqgen

`prior`: the textbook gated PixelCNN as public VQ-VAE repositories write it (e.g.
ritheshkumar95/pytorch-vqvae: vertical and horizontal stacks of symmetrically padded
convolutions cropped afterwards, the first layer's mask on its weights, tanh x sigmoid gates, a
1x1 head, no positional bias, no condition; written here from that description) beside vqgen's
prior of the same size, each taking optimiser steps on random codes in float32 and under bf16
autocast (as `fit` trains where the device computes bf16 natively): the median of `--steps`
timed steps after two warm-up steps. The plain model takes torch's default AdamW step, vqgen's
prior the step `fit` takes (clipping, then fused AdamW; or Muon for the gated blocks beside it,
the prior's default, vqgen.optim). The sizes are the 5-minute demo's prior
(`vqgen.demo.demo_prior`) and the plain size of public repositories. Then the cost of one
update of the moving average of the weights (`--ema`) and the time to sample 16 grids.

`profile`: five bf16 steps (the step `fit` takes, with Muon for vqgen's) of each model at each
size under torch.profiler: the convolutions' share of the step, and each kind of convolution's
milliseconds per step, forward and backward, beside its multiply-adds per output position.

`inference`: a trained run's (`--run RUN`) VQ-VAE encoding and decoding its validate split
under bf16 autocast, as every verb does where the device computes bf16, and in float32: the
time, how many codes both pick, the reconstructions' SSIM.

`layouts`: one optimiser step (forward, loss, backward, clipping, AdamW) on random inputs of
the real shapes, batch 32: the VQ-VAE at 64 and 128 px (hidden 128, K 512), train-prior's
default prior (64 channels, 10 layers, K 512) on the grids of 64 and 128 px slices, and the
report's feature net at 64 px (batch 64, as it trains). Variants:
  eager          the models as `fit` runs them in float32
  channels_last  weights (and VQ-VAE inputs) in NHWC memory format (train-vqvae keeps the
                 VQ-VAE so)
  bf16           under bf16 autocast (the VQ-VAE in channels_last)
  compile        torch.compile of the model (its first step is reported, not counted)

Run it alone on the machine: a second busy process makes every figure several times slower.
bench/README.md keeps the last tables.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqgen import inference, metrics
from vqgen.config import OPTIMIZERS, PriorConfig, TrainConfig, VQVAEConfig
from vqgen.demo import demo_prior
from vqgen.device import autocast
from vqgen.loaded import LoadedRun
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import VQVAE
from vqgen.optim import build_optimizers
from vqgen.realism.features import FeatureNet, FeatureNetConfig
from vqgen.sampling import sample_codes
from vqgen.train import MovingAverage
from vqgen.train_prior import prior_step

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
BATCH = 32  # of the layouts table
MODELS = ("vqvae-64", "vqvae-128", "prior-16", "prior-32", "featurenet-64")
VARIANTS = ("eager", "channels_last", "bf16", "compile")


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- the prior beside a plain gated PixelCNN ------------------------------------------------------


def plain_loss(model: nn.Module, codes: Tensor) -> Tensor:
    """The textbook step's loss: cross-entropy over the (B, K, h, w) logits as they come."""
    return F.cross_entropy(model(codes).float(), codes)


def vqgen_loss(model: nn.Module, codes: Tensor, positions: Tensor) -> Tensor:
    """vqgen's training step's loss (train_prior.prior_step: the slice level, hidden a tenth of
    the time where the prior is trained for guidance)."""
    labels = torch.zeros(len(codes), dtype=torch.long, device=codes.device)
    return prior_step(model, ([codes], labels, positions), 0)[0]


def steps_per_second(
    model: nn.Module,
    loss_of: Callable[[], Tensor],
    steps: int,
    bf16: bool,
    optimizer: str | None = None,
) -> float:
    """Median optimiser steps/s of `model` on the loss `loss_of()` after two warm-up steps:
    torch's default AdamW, or with `optimizer` ("adamw", "muon") the step `vqgen.train.Trainer`
    takes with it (gradient clipping, then vqgen.optim's optimisers)."""
    device = next(model.parameters()).device
    if optimizer is None:
        optimizers = [torch.optim.AdamW(model.parameters(), 1e-3)]
    else:
        cfg = TrainConfig(epochs=1, lr=1e-3, optimizer=optimizer)
        optimizers = list(build_optimizers(model, cfg, device).values())

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer is not None:
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in optimizers:
            opt.step()

    step()
    step()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1 / sorted(times)[len(times) // 2]


def average_seconds(model: nn.Module, repeats: int = 50) -> float:
    """Median time of one update of the moving average of `model`'s weights (--ema)."""
    average = MovingAverage(model, 0.99)
    average.update_parameters(model)  # the first update copies
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        average.update_parameters(model)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def prior_table(steps: int, device: torch.device) -> None:
    print("\nsteps/s, float32 / bf16 autocast\n")
    print("| size | batch | plain gated PixelCNN | vqgen prior, AdamW | vqgen prior, Muon |")
    print("| --- | ---: | ---: | ---: | ---: |")
    averages = []
    for name, cfg, batch in SIZES:
        torch.manual_seed(0)
        codes = torch.randint(0, cfg.codebook_size, (batch, cfg.grid, cfg.grid), device=device)
        cond = torch.rand(batch, device=device)
        rates = {}
        for bf16 in (False, True):
            torch.manual_seed(0)
            plain = PlainGatedPixelCNN(cfg.codebook_size, cfg.channels, cfg.layers).to(device)
            loss = functools.partial(plain_loss, plain, codes)
            rates["plain", bf16] = steps_per_second(plain, loss, steps, bf16)
            for optimizer in OPTIMIZERS:
                torch.manual_seed(0)
                ours = GatedPixelCNN(cfg).to(device).train()
                loss = functools.partial(vqgen_loss, ours, codes, cond)
                rates[optimizer, bf16] = steps_per_second(ours, loss, steps, bf16, optimizer)
        cells = [f"{rates[k, False]:.2f} / {rates[k, True]:.2f}" for k in ("plain", *OPTIMIZERS)]
        print(f"| {name} | {batch} | {' | '.join(cells)} |", flush=True)
        update = average_seconds(GatedPixelCNN(cfg).to(device))
        averages.append(f"{name}: {1e3 * update:.2f} ms, {update * rates['muon', True]:.1%}")
    print(f"\n--ema, one update of the average and its share of a bf16 step: {'; '.join(averages)}")
    prior = GatedPixelCNN(SIZES[0][1]).to(device).eval()
    start = time.perf_counter()
    cond = torch.rand(16, device=device)
    sample_codes(prior, 16, cond=cond, generator=torch.Generator().manual_seed(0))
    sync(device)
    print(f"sampling 16 grids of 32x32, demo's prior: {time.perf_counter() - start:.2f} s")


# -- where a step's time goes --------------------------------------------------------------------


def profile_table(device: torch.device) -> None:
    from torch.profiler import profile

    print("\nbf16 autocast, 5 steps under torch.profiler; convolutions by weight shape\n")
    for name, cfg, batch in SIZES:
        codes = torch.randint(0, cfg.codebook_size, (batch, cfg.grid, cfg.grid), device=device)
        torch.manual_seed(0)
        plain = PlainGatedPixelCNN(cfg.codebook_size, cfg.channels, cfg.layers).to(device)
        ours = GatedPixelCNN(cfg).to(device).train()
        cond = torch.rand(batch, device=device)
        models = {
            "plain": (plain, functools.partial(plain_loss, plain, codes), None),
            "vqgen": (ours, functools.partial(vqgen_loss, ours, codes, cond), "muon"),
        }
        for label, (model, loss_of, optimizer) in models.items():
            with profile(record_shapes=True) as prof:
                steps_per_second(model, loss_of, 5, bf16=True, optimizer=optimizer)
            events = prof.key_averages(group_by_input_shape=True)
            total = sum(e.self_cpu_time_total for e in events)
            by_kind: dict[str, float] = {}
            for e in events:
                if e.key in ("aten::mkldnn_convolution", "aten::convolution_backward"):
                    shape = e.input_shapes[1 if e.key == "aten::mkldnn_convolution" else 2]
                    out_c, in_c, kh, kw = shape
                    kind = f"{in_c}->{out_c} {kh}x{kw} ({out_c * in_c * kh * kw:,} MACs)"
                    ms = e.self_cpu_time_total / 1e3 / 7  # 2 warm-up + 5 timed steps
                    by_kind[kind] = by_kind.get(kind, 0.0) + ms
            conv = sum(by_kind.values())
            print(f"{name}, {label}: convolutions {conv:.0f} ms of {total / 1e3 / 7:.0f} ms a step")
            for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
                print(f"  {kind:>30}: {ms:6.1f} ms, {ms / conv:4.0%} of the convolutions' time")


# -- the VQ-VAE's inference in float32 and bf16 ----------------------------------------------------


def inference_table(run_dir: Path, repeats: int, device: torch.device) -> None:
    """A trained run's VQ-VAE encoding and decoding its validate split as `vqgen.inference` does
    (bf16 autocast where the device computes bf16) against the same in float32: the median
    seconds of `repeats`, the codes both pick, the reconstructions' SSIM."""
    run = LoadedRun.load(run_dir, device)
    vqvae, images = run.vqvae, run.split("validate").images
    print(f"\nthe VQ-VAE of {run_dir} on its {len(images)} validate slices, median of {repeats}\n")
    print("| precision | encode s | decode s | codes as float32's | SSIM |")
    print("| --- | ---: | ---: | ---: | ---: |")
    float32_codes: list[Tensor] = []
    for bf16 in (False, True):
        encoded, decoded = [], []
        precision = functools.partial(autocast, enabled=bf16)
        with patch.object(inference, "autocast", precision):
            for _ in range(repeats):
                start = time.perf_counter()
                codes = inference.encode(vqvae, images)
                middle = time.perf_counter()
                recon = inference.decode(vqvae, codes)
                encoded.append(middle - start)
                decoded.append(time.perf_counter() - middle)
        float32_codes = float32_codes or codes
        same = float((torch.cat(codes) == torch.cat(float32_codes)).float().mean())
        ssim = float(metrics.ssim(images, recon).mean())
        name = "bf16 autocast" if bf16 else "float32"
        median = [sorted(times)[repeats // 2] for times in (encoded, decoded)]
        print(f"| {name} | {median[0]:.3f} | {median[1]:.3f} | {same:.2%} | {ssim:.4f} |")


# -- both stages under each layout, bf16 and compile ----------------------------------------------


def build(model_name: str, variant: str, device: torch.device):
    """(model, loss function, items per step, unit) for one row."""
    torch.manual_seed(0)
    kind, side = model_name.split("-")
    side = int(side)
    if kind == "vqvae":
        model = VQVAE(VQVAEConfig(size=side, hidden=128, codebook_size=512)).to(device)
        images = torch.rand(BATCH, 1, side, side, device=device)
        if variant in ("channels_last", "bf16"):
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)

        def vqvae_loss(net):
            recon, (q,) = net(images)
            return F.mse_loss(recon, images) + q.loss

        return model, vqvae_loss, BATCH, "img/s"
    if kind == "featurenet":  # the report's feature net on its side task, batch 64 as it trains
        model = FeatureNet(FeatureNetConfig(size=side, tasks=("position",))).to(device)
        images, positions = (
            torch.rand(64, 1, side, side, device=device),
            torch.rand(64, device=device),
        )
        if variant in ("channels_last", "bf16"):
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)

        def feature_loss(net):
            return F.mse_loss(net.position(net.raw(images))[:, 0], positions)

        return model, feature_loss, 64, "img/s"
    model = GatedPixelCNN(PriorConfig(codebook_size=512, grid=side)).to(device)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    codes = torch.randint(0, 512, (BATCH, side, side), device=device)

    def prior_loss(net):
        return F.cross_entropy(net(codes, None).float(), codes)

    return model, prior_loss, BATCH * side * side, "codes/s"


def measure(model_name: str, variant: str, steps: int, warmup: int, device: torch.device) -> str:
    """One table row: items/s, ms per step and the first step's seconds."""
    model, loss_fn, items, unit = build(model_name, variant, device)
    model.train()
    net = torch.compile(model) if variant == "compile" else model
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
    step()  # first step: compilation, k-means seeding of the codebook, allocations
    sync(device)
    first_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    rate = items * steps / seconds
    return (
        f"| {model_name} | {variant} | {rate:,.0f} {unit} | {1000 * seconds / steps:.0f} | "
        f"{first_s:.1f} |"
    )


def layouts_table(models, variants, steps: int, warmup: int, device: torch.device) -> None:
    print(f"\nbatch {BATCH}\n")
    print("| model | variant | throughput | ms/step | first step s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for model_name in models:
        for variant in variants:
            print(measure(model_name, variant, steps, warmup, device), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=("prior", "layouts", "profile", "inference"), help="one table"
    )
    parser.add_argument("--run", type=Path, help="inference: a trained run directory")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (layouts)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    parser.add_argument("--model", choices=MODELS, action="append", help="layouts: a row")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="layouts: a column")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"device: {name}, torch {torch.__version__}")
    if args.only in (None, "prior"):
        prior_table(args.steps, device)
    if args.only == "profile":
        profile_table(device)
    if args.only == "inference":
        if args.run is None:
            parser.error("--only inference needs --run RUN, a trained run directory")
        inference_table(args.run, args.steps, device)
    if args.only in (None, "layouts"):
        models, variants = args.model or MODELS, args.variant or VARIANTS
        layouts_table(models, variants, args.steps, args.warmup, device)


if __name__ == "__main__":
    main()
