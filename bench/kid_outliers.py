"""Is a run's sample KID carried by a few samples? KID against the validate split with all the
samples, then without the ones farthest from the real slices in the feature net's space, and a
figure of the farthest ones (the test split is not read).

    .venv/bin/python bench/kid_outliers.py RUN [--n 192] [--out bench/out/kid_outliers.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

from vqgen import checkpoint, realism
from vqgen.conditioning import for_sampling
from vqgen.config import DataConfig, SampleConfig, load_config
from vqgen.data import load_data
from vqgen.evaluate import feature_net
from vqgen.inference import draw
from vqgen.rundir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=192)
    parser.add_argument("--out", type=Path, default=Path("bench/out/kid_outliers.png"))
    args = parser.parse_args()
    cpu = torch.device("cpu")
    vqvae, vqvae_meta = checkpoint.load_vqvae(RunDir(args.run))
    prior, prior_meta = checkpoint.load_prior(RunDir(args.run), vqvae_cfg=vqvae.cfg)
    cfg = SampleConfig(n=args.n, seed=0)
    cond = for_sampling(prior.cfg, prior_meta, cfg)
    samples, _ = draw(vqvae, prior, cond, cfg, cpu)
    data = load_config(DataConfig, vqvae_meta.get("data"), "vqvae.json 'data'")
    real, train = load_data(data, "validate"), load_data(data, "train")
    net = feature_net(train, cpu)
    real_features = realism.extract_features(net, real.images, cpu)
    features = realism.extract_features(net, samples, cpu)
    mean, std = real_features.mean(0), real_features.std(0)
    farthest = ((features - mean) / std).norm(dim=1).argsort(descending=True)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.n]
    floor = realism.feature_distances(
        real_features, realism.extract_features(net, train.images[pick], cpu)
    )
    print(f"floor ({args.n} real train slices): KID {floor['kid']:.3f} ± {floor['kid_std']:.3f}")
    print("| samples left out (farthest first) | KID | FID |")
    print("| ---: | --- | ---: |")
    for drop in (0, 5, 10, 20):
        d = realism.feature_distances(real_features, features[farthest[drop:]])
        print(f"| {drop} | {d['kid']:.3f} ± {d['kid_std']:.3f} | {d['fid']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(samples[farthest[:8]].clamp(0, 1), args.out, nrow=8, padding=2, pad_value=1)
    levels = "" if cond is None else f", conditions {cond[farthest[:8]].tolist()}"
    print(f"the 8 farthest samples: {args.out}{levels}")


if __name__ == "__main__":
    main()
