"""The vqgen command line: parse options, call one library function, print the result.

Errors vqgen knows about print as one line and exit with their code (2 usage, 1 run time);
`--debug` or VQGEN_DEBUG=1 shows their traceback too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vqgen import distributed
from vqgen.config import DataConfig, PriorConfig, TrainConfig, VQVAEConfig
from vqgen.errors import VqgenError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Learn a generative model of brain MRI slices (VQ-VAE + gated PixelCNN) and score it.",
)
console = Console()

# -- shared options --------------------------------------------------------------------------
RunOpt = Annotated[Path, typer.Option("--run", help="Run directory for checkpoints and outputs.")]
DataOpt = Annotated[
    str, typer.Option("--data", help="Dataset folder (OASIS, ADNI, NIfTI, images) or 'mni152'.")
]
KindOpt = Annotated[
    str, typer.Option("--kind", help="Dataset layout: auto, oasis, adni, nifti, folder, mni152.")
]
SizeOpt = Annotated[int, typer.Option("--size", help="Slices are resized to SIZE x SIZE.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the train split.")]
MaxStepsOpt = Annotated[
    int | None, typer.Option("--max-steps", help="Stop after N optimiser steps (if sooner).")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images or code grids per step.")]
MinutesOpt = Annotated[
    float | None, typer.Option("--max-minutes", help="Stop after this much training time.")
]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for weights, shuffling and sampling.")]
DataSeedOpt = Annotated[
    int,
    typer.Option("--data-seed", help="Seed of subject-level splits and mni152 virtual subjects."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Unreadable images are an error, not a warning.")
]


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of known errors.")
    ] = False,
) -> None:
    if debug:
        os.environ["VQGEN_DEBUG"] = "1"


@app.command("data")
def data_cmd(
    source: Annotated[str, typer.Argument(help="Dataset folder or 'mni152'.")],
    kind: KindOpt = "auto",
    size: SizeOpt = 128,
    data_seed: DataSeedOpt = 0,
    strict: StrictOpt = False,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Write a PNG grid of random slices per split.")
    ] = None,
) -> None:
    """Inspect a dataset: kind, images and subjects per split, labels, size, intensities."""
    from vqgen.describe import describe_dataset

    summary = describe_dataset(DataConfig(source, kind, size, data_seed, strict), preview)
    table = Table(title=f"{source}  (kind: {summary.kind})")
    for column in ("split", "images", "subjects", "labels", "size", "intensity"):
        table.add_column(column)
    for row in summary.rows:
        table.add_row(*row)
    console.print(table)
    if preview is not None:
        console.print(f"preview written to {preview}")


@app.command("train-vqvae")
def train_vqvae_cmd(
    data: DataOpt = "mni152",
    run: RunOpt = Path("checkpoints/run"),
    kind: KindOpt = "auto",
    size: SizeOpt = 128,
    downsample: Annotated[int, typer.Option(help="Code grid is SIZE/DOWNSAMPLE (4 or 8).")] = 4,
    codebook_size: Annotated[int, typer.Option(help="Number of codebook vectors K.")] = 512,
    code_dim: Annotated[int, typer.Option(help="Dimension of each code vector.")] = 64,
    hidden: Annotated[int, typer.Option(help="Channels of the conv trunk.")] = 64,
    beta: Annotated[float, typer.Option(help="Weight of the commitment loss.")] = 0.25,
    quantizer: Annotated[str, typer.Option(help="'ema' or 'st' (codebook loss).")] = "ema",
    epochs: EpochsOpt = 8,
    max_steps: MaxStepsOpt = None,
    max_minutes: MinutesOpt = None,
    batch_size: BatchOpt = 16,
    lr: LrOpt = 2e-3,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    data_seed: DataSeedOpt = 0,
    resume: ResumeOpt = False,
    workers: WorkersOpt = 0,
    strict: StrictOpt = False,
) -> None:
    """Train the stage-1 VQ-VAE; keeps the best checkpoint by validate SSIM."""
    from vqgen.stage1 import train_vqvae

    result = train_vqvae(
        DataConfig(data, kind, size, data_seed, strict),
        VQVAEConfig(
            size=size,
            hidden=hidden,
            downsample=downsample,
            codebook_size=codebook_size,
            code_dim=code_dim,
            beta=beta,
            quantizer=quantizer,
        ),
        TrainConfig(
            epochs=epochs,
            max_steps=max_steps,
            max_minutes=max_minutes,
            batch_size=batch_size,
            lr=lr,
            device=device,
            seed=seed,
            workers=workers,
        ),
        run,
        resume,
    )
    if distributed.is_main():  # under torchrun, rank 0 reports
        console.print(
            f"[bold]{escape(str(result.checkpoint))}[/]  validate SSIM {result.val_ssim:.3f}  "
            f"PSNR {result.val_psnr:.1f} dB  codes used {result.codebook_used:.0%}  "
            f"perplexity {result.perplexity:.0f}  ({result.steps} steps, {result.seconds:.0f} s)"
        )


@app.command("train-prior")
def train_prior_cmd(
    run: RunOpt = Path("checkpoints/run"),
    layers: Annotated[int, typer.Option(help="Gated layers of the PixelCNN.")] = 10,
    channels: Annotated[int, typer.Option(help="Channels of the PixelCNN.")] = 64,
    condition: Annotated[str, typer.Option(help="none, label or slice.")] = "none",
    epochs: EpochsOpt = 20,
    max_steps: MaxStepsOpt = None,
    max_minutes: MinutesOpt = None,
    batch_size: BatchOpt = 16,
    lr: LrOpt = 2e-3,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    resume: ResumeOpt = False,
    workers: WorkersOpt = 0,
) -> None:
    """Encode the data with the run's VQ-VAE and fit the gated PixelCNN prior."""
    from vqgen.stage2 import train_prior

    result = train_prior(
        run,
        PriorConfig(channels=channels, layers=layers, condition=condition),
        TrainConfig(
            epochs=epochs,
            max_steps=max_steps,
            max_minutes=max_minutes,
            batch_size=batch_size,
            lr=lr,
            device=device,
            seed=seed,
            workers=workers,
        ),
        resume,
    )
    if distributed.is_main():  # under torchrun, rank 0 reports
        console.print(
            f"[bold]{escape(str(result.checkpoint))}[/]  "
            f"validate NLL {result.val_bits:.3f} bits/code  "
            f"(uniform {result.uniform_bits:.2f}, unigram {result.unigram_bits:.2f})  "
            f"({result.steps} steps, {result.seconds:.0f} s)"
        )


@app.command("sample")
def sample_cmd(
    run: RunOpt = Path("checkpoints/run"),
    n: Annotated[int, typer.Option("--n", help="Number of slices to generate.")] = 16,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the prior.")] = 1.0,
    label: Annotated[str | None, typer.Option(help="Class for a label-conditioned prior.")] = None,
    slice_pos: Annotated[
        float | None, typer.Option("--slice", help="Slice position in [0,1] (slice prior).")
    ] = None,
    seed: SeedOpt = 0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/samples).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw new slices: prior -> code grid -> decoder -> PNG files and a grid."""
    from vqgen.generate import generate

    result = generate(run, n, temperature, label, slice_pos, seed, out, device)
    console.print(
        f"{len(result.paths)} samples in {result.paths[0].parent}  grid {result.grid}  "
        f"({result.seconds:.1f} s)"
    )


@app.command("evaluate")
def evaluate_cmd(
    run: RunOpt = Path("checkpoints/run"),
    split: Annotated[str, typer.Option(help="Split to score: test, validate or train.")] = "test",
    n_samples: Annotated[int, typer.Option(help="Samples drawn for realism and diversity.")] = 64,
    out: Annotated[Path | None, typer.Option(help="Report path (default RUN/report.json).")] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Score a run: reconstruction, codebook usage, prior NLL and samples; writes a report."""
    from vqgen.evaluate import evaluate

    report = evaluate(run, split, n_samples, out, device, seed)
    print_report(report)
    console.print(
        f"report written to {out or run / 'report.json'} (and .md), figures in {run / 'figures'}"
    )


@app.command("demo")
def demo_cmd(
    run: RunOpt = Path("checkpoints/demo"),
    minutes: Annotated[
        float, typer.Option(help="Wall-clock budget in minutes for the whole pipeline.")
    ] = 5.0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Everything, end to end, on the embedded MNI152 default: train, sample, evaluate."""
    from vqgen.demo import run_demo

    result = run_demo(run, minutes, device, seed)
    print_report(result.report)
    phases = ", ".join(f"{name} {s:.0f} s" for name, s in result.seconds.items())
    console.print(f"wall time {sum(result.seconds.values()) / 60:.1f} min ({phases})")
    console.print(f"samples: {result.samples}   report: {result.report_path.with_suffix('.md')}")


def print_report(report: dict) -> None:
    """The headline figures of a report as a rich table."""
    table = Table(
        title=f"{report['run']} on the {report['split']} split ({report['images']} slices)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rec = report["reconstruction"]
    table.add_row(
        "reconstruction SSIM (mean ± std)", f"{rec['ssim']['mean']:.3f} ± {rec['ssim']['std']:.3f}"
    )
    table.add_row("brain-region SSIM", f"{rec['brain_ssim_mean']:.3f}")
    table.add_row("PSNR (dB)", f"{rec['psnr_mean']:.2f}")
    table.add_row(
        "codes used / perplexity",
        f"{rec['codebook']['fraction_used']:.0%} / {rec['codebook']['perplexity']:.1f}",
    )
    if "prior" in report:
        p = report["prior"]
        table.add_row(
            "prior NLL (bits/code)",
            f"{p['nll_bits']:.3f}  (uniform {p['uniform_bits']:.2f}, "
            f"unigram {p['unigram_bits']:.2f})",
        )
    if "samples" in report:
        s = report["samples"]
        table.add_row("samples: nearest-real SSIM", f"{s['nearest_real_ssim']['mean']:.3f}")
        table.add_row("samples: memorised (> 0.95 to train)", str(s["memorised"]))
        table.add_row(
            "pairwise SSIM: samples / real",
            f"{s['diversity_pairwise_ssim']:.3f} / {s['real_pairwise_ssim']:.3f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: known errors become one line and an exit code."""
    try:
        app(args=argv)
    except VqgenError as err:
        if os.environ.get("VQGEN_DEBUG") == "1":
            raise
        Console(stderr=True).print(
            f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
        )
        raise SystemExit(err.exit_code) from None
    finally:
        distributed.shutdown()
