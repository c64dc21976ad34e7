"""A run's prior trained again with other settings on the run's VQ-VAE, and scored on the
validate split: prior settings compared on one VQ-VAE, free of the spread that training a
VQ-VAE too adds.

    python bench/prior_variants.py RUN OUT [--seeds 0,1] [key=value ...]

Keys are TrainConfig fields (`lr=4e-3`, `ema=0`, `optimizer=adamw`, `max_minutes=5`) or
PriorConfig fields with a `prior.` prefix (`prior.channels=48`, `prior.cond_dropout=0.1`);
without any, the run's own prior (as its prior.json records it, time budget included) is
trained again. RUN is any finished run, such as a `vqgen demo`: its VQ-VAE and cached codes
are copied to OUT/seedN, one run per training seed. Run it alone on the machine: a time
budget is wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from demo_variants import field_value, print_rows  # bench/ is on the path when this runs

import vqgen
from vqgen import demo
from vqgen.config import PriorConfig, TrainConfig
from vqgen.train_prior import train_prior

# the run's training settings that its prior is trained again with, unless a setting says else
BUDGET = ("epochs", "max_steps", "max_minutes", "batch_size", "lr", "ema", "bf16", "optimizer")
VQVAE_FILES = ["vqvae.json", "vqvae.safetensors", "vqvae-last.json", "vqvae-last.safetensors"]


def copy_vqvae(run: Path, out: Path) -> None:
    """Make `out` a fresh run holding `run`'s VQ-VAE and cached codes, for a prior to train on."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in VQVAE_FILES:
        shutil.copy(run / name, out / name)
    shutil.copytree(run / "codes", out / "codes")


def with_settings(
    given: list[str], train: TrainConfig, prior: PriorConfig
) -> tuple[TrainConfig, PriorConfig]:
    """The training and prior configs with the key=value settings applied."""
    train_fields, prior_fields = {}, {}
    for setting in given:
        key, value = setting.split("=", 1)
        if key.startswith("prior."):
            name = key.removeprefix("prior.")
            prior_fields[name] = field_value(prior, name, value)
        else:
            train_fields[key] = field_value(train, key, value)
    return dataclasses.replace(train, **train_fields), dataclasses.replace(prior, **prior_fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0", help="the prior's training seeds, a run each")
    parser.add_argument("settings", nargs="*", help="key=value")
    args = parser.parse_intermixed_args()
    source = vqgen.load_run(args.run, device="cpu")  # its prior's settings, as vqgen reads them
    recorded, model = source.prior_meta["train"], source.prior.cfg
    budget = {k: recorded[k] for k in BUDGET if k in recorded}  # older runs: no optimizer
    name = " ".join(args.settings) or "the run's prior"
    for seed in (int(s) for s in args.seeds.split(",")):
        train, prior = with_settings(args.settings, TrainConfig(**budget, seed=seed), model)
        out = args.out / f"seed{seed}"
        copy_vqvae(args.run, out)
        result = train_prior(out, prior, train)
        print(f"# {name}, seed {seed}: {result.steps} steps, validate NLL {result.val_bits:.3f}")
        report = vqgen.load_run(out).evaluate(
            "validate", n_samples=demo.EVAL_SAMPLES, seed=0, out=out / "report-validate.json"
        )
        print_rows(f"{name}, seed {seed}", report)


if __name__ == "__main__":
    main()
