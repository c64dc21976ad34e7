"""The vqgen command line: parse options, call one library function, print the result.

Each verb lives in the module of its name: `data` in vqgen/data/describe.py, `train-vqvae` in
vqgen/train_vqvae.py, `train-prior` in vqgen/train_prior.py, `sample` in vqgen/sample.py,
`evaluate` in vqgen/evaluate.py and `demo` in vqgen/demo.py. They are imported inside the
commands, so `--help` answers without loading torch. Defaults come from the config dataclasses.

Errors vqgen knows about print as one line and exit with their code (2 usage, 1 run time,
130 interrupted); `--debug` or VQGEN_DEBUG=1 shows their traceback too. The terminal plumbing
(warnings, pipes, signals, one-line errors) is vqgen/terminal.py.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

import vqgen
from vqgen import terminal
from vqgen.cli_options import (
    DEFAULT_RUN,
    PRIOR_TRAIN_OPTIONS,
    CodebookSizeOpt,
    CodeDimOpt,
    DataOpt,
    DataSeedOpt,
    DeviceOpt,
    DilationOpt,
    DownsampleOpt,
    DrawSeedOpt,
    EvalSeedOpt,
    GuidanceOpt,
    KindOpt,
    LevelsOpt,
    MovedDataOpt,
    OverwriteOpt,
    ResumeOpt,
    RunOpt,
    SeedOpt,
    SizeOpt,
    StrictOpt,
    TemperatureOpt,
    TopDownsampleOpt,
    TopKOpt,
    flag,
    training_options,
)
from vqgen.config import (
    EVAL_SAMPLES,
    PRIOR_TRAINING,
    VQVAE_TRAINING,
    DataConfig,
    EvalConfig,
    PriorConfig,
    SampleConfig,
    TrainConfig,
    VQLossConfig,
    VQVAEConfig,
    eval_sampling,
)
from vqgen.errors import Interrupted


class _HelpFlag:
    """--help takes no value: its row in --help shows no type, as `flag` gives other flags."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Group(_HelpFlag, TyperGroup):
    pass


class _Command(_HelpFlag, TyperCommand):
    pass


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Learn a generative model of brain MRI slices (VQ-VAE + gated PixelCNN) and score it.",
)
console = Console(soft_wrap=True)  # a line printed for a log stays one line
stderr = Console(stderr=True, soft_wrap=True)


def command(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a verb. Ctrl-C outside a training loop (which saves first) is one line, 130."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except KeyboardInterrupt:
                raise Interrupted(
                    f"{name} interrupted; every file written so far is complete"
                ) from None

        return app.command(name, cls=_Command)(run)

    return register


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vqgen {vqgen.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, flag("--debug", help="Show tracebacks of known errors.")] = False,
    version: Annotated[
        bool,
        flag("--version", help="Print the version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    if debug:
        os.environ["VQGEN_DEBUG"] = "1"


@command("data")
def data_cmd(
    source: Annotated[str, typer.Argument(help="Dataset folder or 'mni152'.")],
    kind: KindOpt = DataConfig.kind,
    size: SizeOpt = VQVAEConfig.size,
    data_seed: DataSeedOpt = DataConfig.seed,
    strict: StrictOpt = DataConfig.strict,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Write a PNG grid of random slices per split.")
    ] = None,
) -> None:
    """Inspect a dataset: kind, images and subjects per split, labels, size, intensities."""
    from vqgen.data.describe import describe_dataset

    data = DataConfig(source=source, kind=kind, seed=data_seed, strict=strict)
    summary = describe_dataset(data, size, preview)
    table = Table(title=f"{escape(source)}  (kind: {summary.kind})")
    for column in ("split", "images", "subjects", "labels", "size", "intensity"):
        table.add_column(column)
    for row in summary.rows:
        table.add_row(*row)
    console.print(table)
    if preview is not None:
        console.print(f"preview written to {escape(str(preview))}")


@command("train-vqvae")
@training_options(VQVAE_TRAINING, resume_takes=frozenset({"data"}))
def train_vqvae_cmd(
    train: TrainConfig,
    data: DataOpt = None,
    run: RunOpt = DEFAULT_RUN,
    kind: KindOpt = DataConfig.kind,
    size: SizeOpt = VQVAEConfig.size,
    downsample: DownsampleOpt = VQVAEConfig.downsample,
    levels: LevelsOpt = VQVAEConfig.levels,
    top_downsample: TopDownsampleOpt = VQVAEConfig.top_downsample,
    codebook_size: CodebookSizeOpt = VQVAEConfig.codebook_size,
    code_dim: CodeDimOpt = VQVAEConfig.code_dim,
    hidden: Annotated[int, typer.Option(help="Channels of the conv trunk.")] = VQVAEConfig.hidden,
    beta: Annotated[float, typer.Option(help="Weight of the commitment loss.")] = VQVAEConfig.beta,
    quantizer: Annotated[
        str, typer.Option(help="'ema' or 'st' (codebook loss).")
    ] = VQVAEConfig.quantizer,
    l1_weight: Annotated[
        float, typer.Option(help="Weight of an L1 reconstruction term beside the MSE.")
    ] = VQLossConfig.l1_weight,
    data_seed: DataSeedOpt = DataConfig.seed,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    strict: StrictOpt = DataConfig.strict,
) -> None:
    """Train the stage-1 VQ-VAE; keeps the best checkpoint by validate SSIM."""
    from vqgen import distributed
    from vqgen.train_vqvae import train_vqvae

    model = VQVAEConfig(
        size=size,
        hidden=hidden,
        downsample=downsample,
        levels=levels,
        top_downsample=top_downsample,
        codebook_size=codebook_size,
        code_dim=code_dim,
        beta=beta,
        quantizer=quantizer,
    )
    loss = VQLossConfig(l1_weight=l1_weight)
    data_cfg = DataConfig(
        source=data or DataConfig.source, kind=kind, seed=data_seed, strict=strict
    )
    moved_to = data if resume else None  # a resumed run's data, where it has moved
    result = train_vqvae(data_cfg, model, train, run, resume, overwrite, loss, moved_to)
    if distributed.is_main():  # under torchrun, rank 0 reports
        console.print(
            f"[bold]{escape(str(result.checkpoint))}[/]  validate SSIM {result.val_ssim:.3f}  "
            f"PSNR {result.val_psnr:.1f} dB  codes used {result.codebook_used:.0%}  "
            f"perplexity {result.perplexity:.0f}  ({result.steps} steps, {result.seconds:.0f} s)"
        )


@command("train-prior")
@training_options(PRIOR_TRAINING, PRIOR_TRAIN_OPTIONS, resume_takes=frozenset({"data"}))
def train_prior_cmd(
    train: TrainConfig,
    run: RunOpt = DEFAULT_RUN,
    layers: Annotated[int, typer.Option(help="Gated layers of the PixelCNN.")] = PriorConfig.layers,
    channels: Annotated[int, typer.Option(help="Channels of the PixelCNN.")] = PriorConfig.channels,
    dilation: DilationOpt = PriorConfig.dilation,
    condition: Annotated[str, typer.Option(help="none, label or slice.")] = PriorConfig.condition,
    dropout: Annotated[
        float, typer.Option(help="Dropout in the gated blocks while training.")
    ] = PriorConfig.dropout,
    augment: Annotated[
        int,
        typer.Option(
            help="Extra copies of the train split to learn from: fresh virtual subjects for "
            "mni152, else slices under small random affine and intensity changes."
        ),
    ] = PriorConfig.augment,
    cond_dropout: Annotated[
        float,
        typer.Option(
            help="Share of training batches whose label or slice level is hidden, so that "
            "`sample --guidance` can use it (0.1 is usual)."
        ),
    ] = PriorConfig.cond_dropout,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    data: MovedDataOpt = None,
) -> None:
    """Encode the data with the run's VQ-VAE and fit the gated PixelCNN prior."""
    from vqgen import distributed
    from vqgen.train_prior import train_prior

    prior = PriorConfig(
        channels=channels,
        layers=layers,
        dilation=dilation,
        condition=condition,
        dropout=dropout,
        augment=augment,
        cond_dropout=cond_dropout,
    )
    result = train_prior(run, prior, train, resume, overwrite, data)
    if distributed.is_main():  # under torchrun, rank 0 reports
        console.print(
            f"[bold]{escape(str(result.checkpoint))}[/]  "
            f"validate NLL {result.val_bits:.3f} bits/code  "
            f"(uniform {result.uniform_bits:.2f}, unigram {result.unigram_bits:.2f})  "
            f"({result.steps} steps, {result.seconds:.0f} s)"
        )


@command("sample")
def sample_cmd(
    run: RunOpt = DEFAULT_RUN,
    n: Annotated[int, typer.Option("--n", help="Number of slices to generate.")] = SampleConfig.n,
    temperature: TemperatureOpt = SampleConfig.temperature,
    top_k: TopKOpt = SampleConfig.top_k,
    guidance: GuidanceOpt = SampleConfig.guidance,
    label: Annotated[
        str | None, typer.Option(help="Class for a label-conditioned prior.")
    ] = SampleConfig.label,
    slice_pos: Annotated[
        float | None, typer.Option("--slice", help="Slice position in [0,1] (slice prior).")
    ] = SampleConfig.slice_pos,
    seed: DrawSeedOpt = SampleConfig.seed,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/samples).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw new slices: prior -> code grid -> decoder -> PNG files and a grid."""
    from vqgen.loaded import LoadedRun
    from vqgen.sample import sample

    cfg = SampleConfig(
        n=n,
        temperature=temperature,
        top_k=top_k,
        label=label,
        slice_pos=slice_pos,
        seed=seed,
        guidance=guidance,
    )
    result = sample(LoadedRun.load(run, device), cfg, out)
    folder = escape(str(result.paths[0].parent))
    guided = "" if result.guidance == 1 else f" at guidance {result.guidance:g}"
    console.print(
        f"{len(result.paths)} samples{guided} in {folder}  grid {escape(str(result.grid))}  "
        f"({result.seconds:.1f} s)"
    )


@command("evaluate")
def evaluate_cmd(
    run: RunOpt = DEFAULT_RUN,
    split: Annotated[str, typer.Option(help="Split to score: test, validate or train.")] = "test",
    n_samples: Annotated[
        int, typer.Option(help="Samples drawn for realism and diversity.")
    ] = EVAL_SAMPLES,
    temperature: TemperatureOpt = SampleConfig.temperature,
    top_k: TopKOpt = SampleConfig.top_k,
    guidance: GuidanceOpt = SampleConfig.guidance,
    out: Annotated[Path | None, typer.Option(help="Report path (default RUN/report.json).")] = None,
    device: DeviceOpt = "auto",
    seed: EvalSeedOpt = 0,
    data: MovedDataOpt = None,
) -> None:
    """Score a run: reconstruction, codebook usage, prior NLL and samples; writes a report.
    The samples are drawn as `sample` draws them, at --temperature, --top-k and --guidance."""
    from vqgen.evaluate import evaluate
    from vqgen.loaded import LoadedRun
    from vqgen.report_text import report_table

    sampling = eval_sampling(
        n_samples, temperature=temperature, top_k=top_k, guidance=guidance, seed=seed
    )
    cfg = EvalConfig(split=split, sampling=sampling)  # a bad option fails before any loading
    loaded = LoadedRun.load(run, device, data)
    report = evaluate(loaded, cfg, out)
    console.print(report_table(report))
    written = out or loaded.dir.report
    figures = escape(str(loaded.dir.eval_figures(written)))
    console.print(f"report written to {escape(str(written))} (and .md), figures in {figures}")


@command("demo")
def demo_cmd(
    run: RunOpt = Path("checkpoints/demo"),
    minutes: Annotated[
        float,
        typer.Option(
            help="Wall-clock budget in minutes for the whole pipeline; the longer, the more "
            "fresh virtual subjects the prior learns from (and dropout from 15 minutes)."
        ),
    ] = 5.0,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    overwrite: Annotated[
        bool, flag("--overwrite", help="Replace the models of an earlier demo run.")
    ] = False,
) -> None:
    """Everything, end to end, on the embedded MNI152 default: train, sample, evaluate."""
    from vqgen.demo import run_demo
    from vqgen.report_text import report_table

    result = run_demo(run, minutes, device, seed, overwrite)
    console.print(report_table(result.report))
    phases = ", ".join(f"{name} {s:.0f} s" for name, s in result.seconds.items())
    console.print(f"wall time {sum(result.seconds.values()) / 60:.1f} min ({phases})")
    console.print(result.verdict(), highlight=False)
    report_md = escape(str(result.report_path.with_suffix(".md")))
    console.print(f"samples: {escape(str(result.samples))}   report: {report_md}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the app, with vqgen.terminal's one-line errors. --debug
    may follow the verb too (`vqgen sample --debug`): it is taken out and put first, where
    the app reads it."""
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    if "--debug" in args[1:end]:
        args = ["--debug", *(a for i, a in enumerate(args) if a != "--debug" or i >= end)]
    terminal.run(app, args)
