"""The demo pipeline with other settings, scored on the validate split (the test split chooses
nothing): one table row of reconstruction and sample figures per run.

    python bench/demo_variants.py RUN [--minutes 5] [--seed 0] [key=value ...]
    python bench/demo_variants.py RUN --score-only [--guidance S]   # a run made before

Keys are VQVAEConfig fields (`downsample=2`, `codebook_size=512`), PriorConfig fields with a
`prior.` prefix (`prior.layers=12`), the prior's TrainConfig fields that the demo takes from
train-prior's defaults with a `train.` prefix (`train.lr=2e-3`, `train.ema=0`), the VQ-VAE's
that it takes from train-vqvae's with a `vqvae_train.` prefix (`vqvae_train.optimizer=adamw`),
or the demo's own constants with a `demo.` prefix (`demo.VQVAE_SHARE=0.3`). Without settings it
is the demo as it is. Run it alone on the machine: the demo's budget is wall clock. The report
goes to RUN/report-validate.json (the demo's own test-split report stays in RUN/report.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

import vqgen
from vqgen import config, demo


def field_value(cfg: Any, key: str, value: str) -> Any:
    """`value` read as the type of the config dataclass field `key`: the type an optional
    field takes when given, and "true"/"false" for a bool."""
    hint = typing.get_type_hints(type(cfg))[key]
    kind = next(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{key} takes true or false, got {value!r}")
        return value.lower() == "true"
    return kind(value)


def apply(settings: list[str]) -> None:
    """Set each key=value on the demo's VQ-VAE config, its prior config or the module."""
    vqvae, prior, train, vqvae_train = {}, {}, {}, {}
    for setting in settings:
        key, value = setting.split("=", 1)
        if key.startswith("train."):
            name = key.removeprefix("train.")
            train[name] = field_value(config.PRIOR_TRAINING, name, value)
        elif key.startswith("vqvae_train."):
            name = key.removeprefix("vqvae_train.")
            vqvae_train[name] = field_value(config.VQVAE_TRAINING, name, value)
        elif key.startswith("demo."):
            name = key.removeprefix("demo.")
            setattr(demo, name, type(getattr(demo, name))(value))
        elif key.startswith("prior."):
            name = key.removeprefix("prior.")
            prior[name] = field_value(demo.DEMO_PRIOR, name, value)
        else:
            vqvae[key] = field_value(demo.DEMO_VQVAE, key, value)
    demo.DEMO_VQVAE = dataclasses.replace(demo.DEMO_VQVAE, **vqvae)
    demo.DEMO_PRIOR = dataclasses.replace(demo.DEMO_PRIOR, **prior)
    config.PRIOR_TRAINING = dataclasses.replace(config.PRIOR_TRAINING, **train)
    config.VQVAE_TRAINING = dataclasses.replace(config.VQVAE_TRAINING, **vqvae_train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0, help="the demo's training seed")
    parser.add_argument("--score-only", action="store_true", help="score RUN as it is")
    parser.add_argument(
        "--guidance", type=float, help="score samples guided so (default: as `sample` draws them)"
    )
    parser.add_argument("settings", nargs="*", help="key=value")
    args = parser.parse_intermixed_args()  # options before, between or after the settings
    apply(args.settings)
    seconds, steps = {}, {}
    if not args.score_only:
        result = demo.run_demo(args.run, args.minutes, seed=args.seed, overwrite=True)
        seconds, steps = result.seconds, result.steps
    report = vqgen.load_run(args.run).evaluate(
        "validate",
        n_samples=demo.EVAL_SAMPLES,
        guidance=args.guidance,
        out=args.run / "report-validate.json",
    )
    name = " ".join(args.settings) or str(args.run)
    if args.seed:
        name += f" (seed {args.seed})"
    if args.guidance is not None:
        name += f" (guidance {args.guidance:g})"
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    counted = ", ".join(f"{k} {v:,} steps" for k, v in steps.items())
    print(f"# {name}: {timing}; {counted}")
    print_rows(name, report)


def print_rows(name: str, r: dict) -> None:
    """One table row of the run's validate report, and its floor."""
    rec, samples, realism = r["reconstruction"], r["samples"], r["realism"]
    if "skipped" in realism:  # a split too small for the realism measures
        nll, why = r["prior"]["nll_bits"], realism["skipped"]
        print(f"| {name} | brain SSIM {rec['brain_ssim_mean']:.3f} | prior NLL {nll:.2f} | {why} |")
        return
    s, c, f, o = (
        realism["samples"],
        realism["reconstructions"],
        realism["floor"],
        realism["outline"],
    )
    print(
        "| setting | brain SSIM | recon C2ST full / half | prior NLL | sample C2ST full / half | "
        "sample KID | recall | atypical outlines | memorised |"
    )
    print(
        f"| {name} | {rec['brain_ssim_mean']:.3f} | {scales(c)} | {r['prior']['nll_bits']:.2f} | "
        f"{scales(s)} | {s['kid']:.3f} | {s['recall']:.2f} | {o['samples']['atypical']:.2f} | "
        f"{samples['memorised']} |"
    )
    print(
        f"floor (real train slices): C2ST {scales(f)}, KID {f['kid']:.3f}, recall "
        f"{f['recall']:.2f}, atypical outlines {o['floor']['atypical']:.2f}"
    )


def scales(scores: dict) -> str:
    """'0.99 / 0.86': the C2ST's accuracy at full and half scale."""
    return " / ".join(f"{scores['c2st'][k]['accuracy']:.2f}" for k in ("full", "half"))


if __name__ == "__main__":
    main()
