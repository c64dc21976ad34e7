"""Stage 2: encode the data to code grids with the frozen VQ-VAE and fit the gated PixelCNN prior.

    result = train_prior(Path("run"), PriorConfig(layers=10), TrainConfig(epochs=20))

Code grids are cached in run/codes/<split>.safetensors and reused while they were made by the
VQ-VAE now in the run (checked by its SHA-256). Selection uses the validate split only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from vqgen import checkpoint, distributed, metrics, plots
from vqgen.config import DataConfig, PriorConfig, TrainConfig, to_dict
from vqgen.data import load_data
from vqgen.errors import CheckpointError, UsageError
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.models.vqvae import VQVAE
from vqgen.train import Batch, Stage, fit, resolve_device

LN2 = math.log(2)


@dataclass
class CodeSet(Dataset):
    """Code grids of one split with what conditioning needs."""

    codes: Tensor  # (N, h, w) int16
    labels: Tensor  # (N,) long, -1 where unknown
    positions: Tensor  # (N,) float32, NaN where unknown
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.codes[i].long(), self.labels[i], self.positions[i]


@dataclass
class PriorResult:
    checkpoint: Path
    val_bits: float
    uniform_bits: float
    unigram_bits: float
    steps: int
    seconds: float


@torch.no_grad()
def encode(vqvae: VQVAE, images: Tensor, batch_size: int = 64) -> Tensor:
    """(N,1,S,S) images -> (N,h,w) int16 code grids, on the CPU."""
    vqvae.eval()
    device = next(vqvae.parameters()).device
    grids = [
        vqvae.codes(images[i : i + batch_size].to(device)).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(grids).to(torch.int16)


def split_codes(
    run_dir: Path, split: str, vqvae: VQVAE, data: DataConfig, vqvae_hash: str
) -> CodeSet:
    """The split's code grids: from run/codes when made by this VQ-VAE (its SHA-256 is
    `vqvae_hash`), else encoded now and saved there."""
    path = run_dir / "codes" / f"{split}.safetensors"
    if path.is_file():
        meta = checkpoint.load_tensor_meta(path)
        if meta.get("vqvae_sha256") == vqvae_hash:
            t = checkpoint.load_tensors(path)
            return CodeSet(t["codes"], t["labels"], t["positions"], tuple(meta["label_names"]))
    dataset = load_data(data, split)
    codes = CodeSet(
        encode(vqvae, dataset.images), dataset.labels, dataset.positions, tuple(dataset.label_names)
    )
    tensors = {"codes": codes.codes, "labels": codes.labels, "positions": codes.positions}
    meta = {
        "vqvae_sha256": vqvae_hash,
        "split": split,
        "label_names": list(codes.label_names),
        "subjects": list(dataset.subjects),
    }
    checkpoint.save_tensors(path, tensors, meta)
    return codes


def condition_input(condition: str, labels: Tensor, positions: Tensor) -> Tensor | None:
    """The prior's condition for a batch: labels, slice positions, or nothing."""
    if condition == "label":
        return labels
    if condition == "slice":
        return positions
    return None


def check_condition(condition: str, codes: CodeSet, source: str) -> None:
    """Refuse a condition the data cannot provide, naming the option."""
    if condition == "label" and (codes.labels < 0).any():
        raise UsageError(f"--condition label needs labelled data (e.g. ADNI); {source} has none")
    if condition == "slice" and torch.isnan(codes.positions).any():
        raise UsageError(f"--condition slice needs slice positions; {source} lacks some")


def prior_step(model: GatedPixelCNN, batch: Batch) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy of every code given those before it in raster order."""
    codes, labels, positions = batch
    condition = distributed.unwrap(model).cfg.condition
    logits = model(codes, condition_input(condition, labels, positions))
    loss = F.cross_entropy(logits.float(), codes)
    return loss, {"loss": loss.item(), "bits": loss.item() / LN2}


@torch.no_grad()
def nll_bits(model: GatedPixelCNN, codes: CodeSet, batch_size: int = 64) -> float:
    """Mean negative log-likelihood in bits per code over a whole split."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(codes), batch_size):
        grids = codes.codes[i : i + batch_size].long().to(device)
        cond = condition_input(
            model.cfg.condition,
            codes.labels[i : i + batch_size].to(device),
            codes.positions[i : i + batch_size].to(device),
        )
        logits = model(grids, cond).float()
        total += F.cross_entropy(logits, grids, reduction="sum").item()
        count += grids.numel()
    return total / count / LN2


def train_prior(
    run_dir: Path, prior: PriorConfig, train: TrainConfig, resume: bool = False
) -> PriorResult:
    """Fit the prior on the train split's codes, keep the best by validate NLL.

    `prior` gives the network's size and condition; its codebook size, grid and number of
    labels are taken from the run's VQ-VAE and data.
    """
    checkpoint.check_run_dir(run_dir)
    device = distributed.init(resolve_device(train.device))
    vqvae, vqvae_meta = checkpoint.load_vqvae(run_dir, device)
    data = checkpoint.load_config(
        DataConfig, vqvae_meta.get("data"), f"{run_dir}/vqvae.json 'data'"
    )
    vqvae_hash = checkpoint.sha256(run_dir / "vqvae.safetensors")
    with distributed.main_first():  # rank 0 encodes and caches the codes, the others read them
        train_codes = split_codes(run_dir, "train", vqvae, data, vqvae_hash)
        val_codes = split_codes(run_dir, "validate", vqvae, data, vqvae_hash)
    if resume:
        meta = checkpoint.read_meta(run_dir, "prior", last=True)
        if meta.get("vqvae_sha256") != vqvae_hash:
            raise CheckpointError(
                f"{run_dir}/prior-last.json was trained on codes of another VQ-VAE; "
                "train the prior again without --resume"
            )
        where = f"{run_dir}/prior-last.json 'model'"
        cfg = checkpoint.load_config(PriorConfig, meta.get("model"), where)
    else:
        cfg = replace(
            prior,
            codebook_size=vqvae.cfg.codebook_size,
            grid=vqvae.cfg.grid,
            num_labels=len(train_codes.label_names),
        )
    check_condition(cfg.condition, train_codes, data.source)
    baselines = {
        "uniform": metrics.uniform_bits(cfg.codebook_size),
        "unigram": metrics.entropy_bits(train_codes.codes.long(), cfg.codebook_size),
    }
    figure = run_dir / "figures" / "prior_curves.png"
    torch.manual_seed(train.seed)  # the initial weights too
    stage = Stage(
        name="prior",
        model=GatedPixelCNN(cfg),
        train_set=train_codes,
        step=prior_step,
        validate=lambda m: {"val_bits": nll_bits(m, val_codes)},
        monitor="val_bits",
        higher_is_better=False,
        meta={
            "model": to_dict(cfg),
            "data": to_dict(data),
            "vqvae_sha256": vqvae_hash,
            "label_names": list(train_codes.label_names),
            "baselines_bits": baselines,
        },
        after_epoch=lambda m: plots.training_curves(
            run_dir / "metrics-prior.jsonl", figure, "bits", ["val_bits"], baselines
        ),
    )
    start = time.perf_counter()
    result = fit(stage, train, run_dir, resume)
    return PriorResult(
        checkpoint=result.checkpoint,
        val_bits=result.best,
        uniform_bits=baselines["uniform"],
        unigram_bits=baselines["unigram"],
        steps=result.step,
        seconds=time.perf_counter() - start,
    )
