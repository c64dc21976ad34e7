"""Train, sample and evaluate two tiny runs with fixed steps and print a digest of everything
they wrote: weights, code grids, samples and the report. Two checkouts that print the same
digests behave the same (used to prove a refactor changed no behaviour).

    python bench/same_behaviour.py OUT_DIR > /dev/null; cat OUT_DIR/digests.txt

Compare OUT_DIR/digests.txt of the two checkouts with `diff`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    """Of a safetensors file's tensors (not its metadata), else of the file's bytes."""
    if path.suffix != ".safetensors":
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for key, tensor in sorted(load_file(str(path)).items()):
        h.update(key.encode())
        h.update(
            tensor.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes()
        )
    return h.hexdigest()[:16]


def report_digest(path: Path, out: Path) -> str:
    """Of the report's content, with the output folder (in the run and data paths) as OUT."""
    report = json.loads(path.read_text().replace(str(out), "OUT"))
    return hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()[:16]


def cli(*args: object) -> None:
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
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures import make_adni

    from vqgen.data import mni152

    mni152.SUBJECTS = {"train": 4, "validate": 2, "test": 2}
    mni152.SLICES = 6
    cpu = ["--device", "cpu"]
    small = ["--size", "32", "--hidden", "16", "--codebook-size", "16", "--code-dim", "8"]
    runs = {
        "mni152": (
            ["--data", "mni152", "--adversarial", "--disc-start", "3", "--l1-weight", "1"],
            ["--condition", "slice", "--augment", "1"],
        ),
        "adni": (
            ["--data", make_adni(out / "data")],
            ["--condition", "label", "--attention", "--channels", "16"],
        ),
    }
    for name, (vqvae_args, prior_args) in runs.items():
        run = out / name
        common = ["--run", run, "--batch-size", "4", *cpu]
        cli("train-vqvae", *vqvae_args, *small, "--max-steps", "8", *common)
        cli("train-prior", "--layers", "2", *prior_args, "--max-steps", "8", *common)
        cli("sample", "--run", run, "--n", "4", *cpu)
        cli("evaluate", "--run", run, "--n-samples", "8", *cpu)
    lines = digests(out, list(runs))
    (out / "digests.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
