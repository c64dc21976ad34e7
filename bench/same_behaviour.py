"""Train, sample and evaluate three tiny runs with fixed steps on the CPU and write a digest of
everything they wrote: weights, train states, code grids, samples and the report. Two versions
of vqgen that write the same digests behave the same (a refactor's proof of no change).

    PYTHONPATH=CHECKOUT_A python bench/same_behaviour.py OUT_A > /dev/null
    PYTHONPATH=CHECKOUT_B python bench/same_behaviour.py OUT_B > /dev/null
    diff OUT_A/digests.txt OUT_B/digests.txt

The runs go through the CLI's verbs (in this process, so that mni152 can be shrunk): a
one-level VQ-VAE with an L1 term and a slice prior with an augmented copy and a hidden
condition (guided sampling) on a shrunken mni152; the same data on two code levels; and a
label prior on a tiny ADNI layout written here. It uses only options that vqgen has had since
d59ef28, so it can compare any later version with that one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ADNI_PATIENTS = {"train": 5, "test": 2}  # per class; validate is a tenth of the train patients
ADNI_SLICES = 3


def digest(path: Path) -> str:
    """Of a safetensors file's tensors (not its metadata), else of the file's bytes."""
    if path.suffix != ".safetensors":
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    import torch
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for key, tensor in sorted(load_file(str(path)).items()):
        h.update(key.encode())
        h.update(tensor.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def report_digest(path: Path, out: Path) -> str:
    """Of the report's content, with the output folder (in the run and data paths) as OUT."""
    report = json.loads(path.read_text().replace(str(out), "OUT"))
    return hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()[:16]


def write_adni(root: Path) -> Path:
    """root/AD_NC/{train,test}/{AD,NC}/PATIENT_SLICE.jpeg, 256 wide x 240 high: noisy bright
    ellipses with a dark centre on black, the same bytes on every run."""
    data = root / "AD_NC"
    patient = 100000
    y, x = np.mgrid[0:240, 0:256]
    for split, n_patients in ADNI_PATIENTS.items():
        for label in ("AD", "NC"):
            folder = data / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n_patients):
                patient += 7
                for s in range(ADNI_SLICES):
                    rng = np.random.default_rng(patient + s)
                    r = ((y - 120) / 96) ** 2 + ((x - 128) / 90) ** 2
                    image = np.where(r < 1, 150 + 60 * rng.random((240, 256)), 0)
                    image = np.where(r < 0.1 * rng.uniform(0.5, 1.5), 40, image)
                    path = folder / f"{patient}_{78 + s}.jpeg"
                    Image.fromarray(image.astype(np.uint8)).save(path, quality=90)
    return data


def cli(*args: object) -> None:
    """One `vqgen` command line, run in this process."""
    from vqgen.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        if exit_.code:
            raise


def digests(out: Path, runs: list[str]) -> list[str]:
    """One line per file a run wrote: weights, train states, code grids, samples, report."""
    lines = []
    for name in runs:
        run = out / name
        files = sorted(run.glob("*.safetensors")) + sorted((run / "codes").glob("*"))
        files += sorted((run / "samples").glob("*.png"))
        lines += [f"{name}/{path.relative_to(run)} {digest(path)}" for path in files]
        lines.append(f"{name}/report.json {report_digest(run / 'report.json', out)}")
    return lines


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    os.environ["VQGEN_CACHE"] = str(out / "cache")
    from vqgen.data import mni152

    mni152.SUBJECTS = {"train": 4, "validate": 2, "test": 2}
    mni152.SLICES = 6
    mni152.EVALUATION_SUBJECTS = 4  # the reference evaluate scores beside the test split
    cpu = ["--device", "cpu", "--no-tensorboard"]
    small = ["--size", "32", "--hidden", "16", "--codebook-size", "16", "--code-dim", "8"]
    slice_prior = ["--condition", "slice", "--augment", "1", "--cond-dropout", "0.1"]
    runs = {
        "mni152": (["--data", "mni152", "--l1-weight", "1"], slice_prior),
        "mni152-levels2": (
            ["--data", "mni152", "--levels", "2", "--top-downsample", "2"],
            ["--condition", "slice", "--augment", "0"],
        ),
        "adni": (
            ["--data", write_adni(out / "data")],
            ["--condition", "label", "--channels", "16"],
        ),
    }
    for name, (vqvae_args, prior_args) in runs.items():
        run = out / name
        common = ["--run", run, "--batch-size", "4", *cpu]
        cli("train-vqvae", *vqvae_args, *small, "--max-steps", "8", *common)
        cli("train-prior", "--layers", "2", *prior_args, "--max-steps", "8", *common)
        cli("sample", "--run", run, "--n", "4", "--device", "cpu")
        cli("evaluate", "--run", run, "--n-samples", "8", "--device", "cpu")
    lines = digests(out, list(runs))
    (out / "digests.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
