"""The demo's prior trained again on a finished demo run's VQ-VAE, keeping moving averages of
its weights at several decays beside the raw weights; each set is then scored on the validate
split with the same sampling seeds, so that the averages are compared within one training run.

    .venv/bin/python bench/prior_ema.py DEMO_RUN OUT --decays 0.98,0.99 [--seed 1]
        [--eval-seeds 0,1,2] [--minutes 5]

DEMO_RUN is a `vqgen demo` (or bench/demo_variants.py) run: its VQ-VAE, cached codes and the
prior's time budget are reused; `--minutes` is the demo budget whose prior settings to use.
The training itself runs without --ema (the raw weights are its last checkpoint). Run it alone
on the machine: the prior's budget is wall clock.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

from demo_variants import print_rows
from torch.optim.swa_utils import AveragedModel

from vqgen import checkpoint, demo, train
from vqgen.config import EvalConfig, TrainConfig
from vqgen.evaluate import evaluate
from vqgen.rundir import RunDir
from vqgen.train_prior import train_prior

VQVAE_FILES = ["vqvae.json", "vqvae.safetensors", "vqvae-last.json", "vqvae-last.safetensors"]


def copy_vqvae(run: Path, out: Path) -> None:
    """Make `out` a fresh run holding `run`'s VQ-VAE and cached codes, for a prior to train on."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in VQVAE_FILES:
        shutil.copy(run / name, out / name)
    shutil.copytree(run / "codes", out / "codes")


def keep_averages(decays: list[float]) -> dict[float, AveragedModel]:
    """Make every prior training step also update one moving average per decay."""
    averages: dict[float, AveragedModel] = {}
    step = train.Trainer.step

    def step_and_average(self, *args, **kwargs):
        outcome = step(self, *args, **kwargs)
        if self.stage.name == "prior":
            model = self.models["model"]
            for decay in decays:
                if decay not in averages:
                    averages[decay] = train.moving_average(model, decay)
                averages[decay].update_parameters(model)
        return outcome

    train.Trainer.step = step_and_average
    return averages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--decays", default="0.99")
    parser.add_argument("--seed", type=int, default=0, help="the prior's training seed")
    parser.add_argument("--eval-seeds", default="0")
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    decays = [float(d) for d in args.decays.split(",")]
    copy_vqvae(args.demo_run, args.out)
    budget = json.loads((args.demo_run / "prior.json").read_text())["train"]
    averages = keep_averages(decays)
    budget = {k: budget[k] for k in ("max_minutes", "batch_size", "lr")}
    cfg = TrainConfig(**budget, seed=args.seed, ema=0.0)  # the raw weights: the run's own
    result = train_prior(args.out, demo.demo_prior(args.minutes), cfg)
    print(f"# {result.steps} steps, validate NLL {result.val_bits:.3f} bits")
    run = RunDir(args.out)
    meta = checkpoint.read_meta(run, "prior", last=True)
    for key in ("format", "stage", "vqgen_version", "torch_version", "weights", "weights_sha256"):
        meta.pop(key)
    net = copy.deepcopy(averages[decays[0]].module)
    for tag, decay in [("raw", None), *((f"ema {d}", d) for d in decays)]:
        if decay is None:
            checkpoint.load_weights(run, "prior", net, last=True)
        else:
            net.load_state_dict(averages[decay].module.state_dict())
        checkpoint.save_model(run, "prior", net, meta, last=False)
        for seed in (int(s) for s in args.eval_seeds.split(",")):
            cfg = EvalConfig("validate", demo.EVAL_SAMPLES, seed=seed)
            report = evaluate(args.out, cfg, out=args.out / f"report-{tag}-{seed}.json")
            print_rows(f"{tag}, evaluation seed {seed}", report)


if __name__ == "__main__":
    main()
