"""The options several verbs share, and `training_options`, which gives both training verbs
the TrainConfig options once. `vqgen.cli` holds the verbs."""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from vqgen.config import (
    ADAMW_BESIDE_MUON_SCALE,
    GUIDANCE,
    MUON_LR_SCALE,
    TrainConfig,
    with_options,
)
from vqgen.errors import UsageError


def run_path(value: str | Path) -> Path:
    """--run as a path; refused when empty, which would write the run into the current folder."""
    if str(value) == "":
        raise UsageError("--run is empty; name the run's folder, e.g. --run checkpoints/run")
    return Path(value)


def flag(*names: str, **settings: Any) -> Any:
    """A boolean option: given or not, it takes no value, so --help shows it no type."""
    return typer.Option(*names, metavar="", **settings)


# -- shared options --------------------------------------------------------------------------
RunOpt = Annotated[
    Path,
    typer.Option("--run", help="Run directory for checkpoints and outputs.", parser=run_path),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset folder (OASIS, ADNI, NIfTI, images) or 'mni152' (the default); with "
        "--resume, the run's dataset's new place, if it moved.",
    ),
]
MovedDataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", help="The dataset's place, if it moved since training (default: vqvae.json's)."
    ),
]
KindOpt = Annotated[
    str, typer.Option("--kind", help="Dataset layout: auto, oasis, adni, nifti, folder, mni152.")
]
SizeOpt = Annotated[int, typer.Option("--size", help="Slices are resized to SIZE x SIZE.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for weights, shuffling and sampling.")]
DrawSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the samples drawn.")]
EvalSeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed of the samples drawn and of the subsets scored.")
]
DataSeedOpt = Annotated[
    int,
    typer.Option("--data-seed", help="Seed of subject-level splits and mni152 virtual subjects."),
]
ResumeOpt = Annotated[bool, flag("--resume", help="Continue from the run's last checkpoint.")]
OverwriteOpt = Annotated[
    bool, flag("--overwrite", help="Replace the model this run already holds.")
]
StrictOpt = Annotated[bool, flag("--strict", help="Unreadable images are an error, not a warning.")]
TemperatureOpt = Annotated[
    float,
    typer.Option(
        "--temperature",
        help="Softmax temperature of the prior; below 1 draws likelier codes, 0 the likeliest.",
    ),
]
TopKOpt = Annotated[
    int | None, typer.Option("--top-k", help="Draw only from the K likeliest codes.")
]
# the VQ-VAE's shape (train-vqvae)
DownsampleOpt = Annotated[int, typer.Option(help="Code grid is SIZE/DOWNSAMPLE (2, 4 or 8).")]
LevelsOpt = Annotated[
    int,
    typer.Option(help="Code levels: 1, or 2 for a top grid of codes above the bottom (VQ-VAE-2)."),
]
TopDownsampleOpt = Annotated[
    int, typer.Option(help="With --levels 2: the top grid is the bottom grid / this (2 or 4).")
]
CodebookSizeOpt = Annotated[int, typer.Option(help="Number of codebook vectors K (per level).")]
CodeDimOpt = Annotated[int, typer.Option(help="Dimension of each code vector.")]
GuidanceOpt = Annotated[
    float | None,
    typer.Option(
        "--guidance",
        help="Classifier-free guidance scale for a prior trained with --cond-dropout: 1 draws "
        "as trained, above 1 holds closer to the label or slice level (default: "
        f"{GUIDANCE:g} for such a prior, 1 for others).",
    ),
]
# the prior's shape (train-prior)
DilationOpt = Annotated[
    int,
    typer.Option(
        help="Largest dilation of the gated layers: after the first they cycle through 1, 2, "
        "4, .. up to it, to see farther up the grid (1: none)."
    ),
]
DEFAULT_RUN = Path("checkpoints/run")

# The options of TrainConfig that both training verbs take: field -> (type, flag, help).
TRAIN_OPTIONS: dict[str, tuple[Any, str, str]] = {
    "epochs": (int | None, "--epochs", "Passes over the train split."),
    "max_steps": (int | None, "--max-steps", "Stop after N optimiser steps."),
    "max_minutes": (float | None, "--max-minutes", "Stop after this much training time."),
    "batch_size": (
        int | None,
        "--batch-size",
        "Images or code grids per step, global under torchrun (default: 16 on a CPU, 64 on a GPU).",
    ),
    "lr": (
        float | None,
        "--lr",
        "Peak learning rate (default: 2e-3 at batch 16, times sqrt(batch / 16)); a stage trained "
        f"with Muon takes {ADAMW_BESIDE_MUON_SCALE:g}x it for AdamW and {MUON_LR_SCALE:g}x for "
        "Muon.",
    ),
    "device": (str, "--device", "auto, cpu or cuda."),
    "seed": (int, "--seed", "Seed for weights and shuffling."),
    "tensorboard": (
        bool | None,
        "--tensorboard/--no-tensorboard",
        "Write a live TensorBoard log in RUN/tensorboard/ (default: if tensorboard is installed).",
    ),
    "optimizer": (
        str,
        "--optimizer",
        "muon: Muon for the hidden weights (a prior's gated blocks, a VQ-VAE's convolutions "
        "between pixels and codes), AdamW for the rest; adamw: AdamW for every weight.",
    ),
    "bf16": (
        bool | None,
        "--bf16/--no-bf16",
        "Train under bf16 autocast (default: where the device computes bf16 natively, CUDA and "
        "CPUs with AVX512-BF16). --no-bf16 trains in float32, the same numbers on every machine.",
    ),
}
# ... and those of train-prior alone
PRIOR_TRAIN_OPTIONS = TRAIN_OPTIONS | {
    "ema": (
        float,
        "--ema",
        "Decay of a moving average of the prior's weights, which is what is validated, saved "
        "and sampled from: smoother samples than the last step's weights (0: none).",
    ),
}


def training_options(
    defaults: TrainConfig,
    options: dict[str, tuple[Any, str, str]] | None = None,
    resume_takes: frozenset[str] = frozenset(),
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the `options` of TrainConfig (default TRAIN_OPTIONS), with `defaults`;
    it receives them as `train`. Under --resume, the command's options other than
    RESUME_TAKES and its own `resume_takes` are warned of as ignored.

    --epochs shows the stage's default but is None unless given, so that --max-steps or
    --max-minutes alone set the length of the run (`with_options`).
    """

    options = TRAIN_OPTIONS if options is None else options

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        extra = []
        for field, (kind, flag, help_) in options.items():
            default = getattr(defaults, field)
            if field == "epochs":
                help_ += f" Default {default}; with only --max-steps or --max-minutes, no limit."
                default = None
            # an on/off flag takes no value: no type in --help (as `flag` gives)
            option = typer.Option(flag, help=help_, metavar="" if "/" in flag else None)
            extra.append(
                inspect.Parameter(
                    field,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=Annotated[kind, option],
                )
            )
        own = inspect.signature(fn, eval_str=True)
        params = [p for p in own.parameters.values() if p.name != "train"]
        extra.append(
            inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        )

        @functools.wraps(fn)
        def run(**kwargs: Any) -> None:
            ctx = kwargs.pop("ctx")
            if kwargs["resume"]:
                warn_ignored_on_resume(ctx, RESUME_TAKES | resume_takes)
            given = {field: kwargs.pop(field) for field in options}
            if given["tensorboard"]:
                from vqgen import live

                live.wanted(True)  # not installed: say so before loading any data
            try:
                fn(**kwargs, train=with_options(defaults, **given))
            finally:
                from vqgen import distributed

                distributed.shutdown()  # leave torchrun's process group, if joined

        run.__signature__ = own.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in (*params, *extra)}
        return run

    return decorate


RESUME_TAKES = {"run", "resume", "overwrite", "device", "max_minutes", "tensorboard"}


def warn_ignored_on_resume(ctx: typer.Context, takes: set[str] = RESUME_TAKES) -> None:
    """--resume continues with the run's own settings: name the options given in vain (all
    but those it `takes`)."""
    ignored = [
        "--" + name.replace("_", "-")
        for name in ctx.params
        if name not in takes
        and getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    ]
    if ignored:
        warnings.warn(
            f"--resume continues with the run's own settings; ignoring {', '.join(ignored)}",
            stacklevel=2,
        )
