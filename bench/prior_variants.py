"""A run's prior trained again with other settings on the run's VQ-VAE, and scored on the
validate split: prior settings compared on one VQ-VAE, free of the spread that training a
VQ-VAE too adds.

    .venv/bin/python bench/prior_variants.py RUN OUT [--seeds 0,1] [key=value ...]

Keys are TrainConfig fields (`lr=4e-3`, `batch_size=32`, `max_minutes=5`) or PriorConfig fields
with a `prior.` prefix (`prior.channels=48`); without any, the run's own prior (as its
prior.json records it, time budget included) is trained again. RUN is any finished run, such as
a `vqgen demo`: its VQ-VAE and cached codes are reused. Run it alone on the machine: a time
budget is wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from demo_variants import print_rows
from prior_ema import copy_vqvae

from vqgen import demo
from vqgen.config import EvalConfig, PriorConfig, TrainConfig
from vqgen.evaluate import evaluate
from vqgen.train_prior import train_prior


def with_settings(
    given: list[str], train: TrainConfig, prior: PriorConfig
) -> tuple[TrainConfig, PriorConfig]:
    """The training and prior configs with the key=value settings applied (a time budget is a
    float, even where the run had none)."""
    train_fields, prior_fields = {}, {}
    for setting in given:
        key, value = setting.split("=", 1)
        if key.startswith("prior."):
            name = key.removeprefix("prior.")
            prior_fields[name] = type(getattr(prior, name))(value)
        else:
            train_fields[key] = (
                float(value) if key == "max_minutes" else type(getattr(train, key))(value)
            )
    return dataclasses.replace(train, **train_fields), dataclasses.replace(prior, **prior_fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0", help="the prior's training seeds, a run each")
    parser.add_argument("settings", nargs="*", help="key=value")
    args = parser.parse_intermixed_args()
    recorded = json.loads((args.run / "prior.json").read_text())
    budget = {k: recorded["train"][k] for k in ("max_minutes", "batch_size", "lr", "ema", "bf16")}
    name = " ".join(args.settings) or "the run's prior"
    for seed in (int(s) for s in args.seeds.split(",")):
        train, prior = with_settings(
            args.settings, TrainConfig(**budget, seed=seed), PriorConfig(**recorded["model"])
        )
        out = args.out / f"seed{seed}"
        copy_vqvae(args.run, out)
        result = train_prior(out, prior, train)
        print(f"# {name}, seed {seed}: {result.steps} steps, validate NLL {result.val_bits:.3f}")
        report = evaluate(out, EvalConfig("validate", demo.EVAL_SAMPLES, seed=0))
        print_rows(f"{name}, seed {seed}", report)


if __name__ == "__main__":
    main()
