"""bench/gpu_check.sh, the script a lent GPU runs, runs end to end on a CPU at its smallest
size: a two-level run (the one with more parts) trained, sampled and scored, and its
paste-ready line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_a_cpu(tmp_path) -> None:
    env = {
        **os.environ,
        "PY": sys.executable,
        "DEVICE": "cpu",
        "SIZES": "32",
        "LEVELS": "2",
        "VQ_STEPS": "4",
        "PRIOR_STEPS": "4",
        "SAMPLES": "16",
        "VQGEN_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    figures = r"vqvae \d+ slices/s \| prior \d+ grids/s \| evaluate \d+ s \(16 samples\)"
    assert len(rows) == 1 and "| cpu | 32 px, 2 level(s) |" in rows[0], proc.stdout
    assert re.search(figures, rows[0]), rows[0]
    assert (tmp_path / "out" / "size32-levels2" / "report-validate.json").is_file()
    assert "CUDA tests skipped: DEVICE=cpu" in proc.stdout
