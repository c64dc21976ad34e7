"""What a person sees in a terminal of 80 columns: the report's table and the progress line."""

from __future__ import annotations

import io
import re
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from vqgen.report_text import report_table


def set_scores(accuracy: float) -> dict[str, Any]:
    """One set's realism scores, with the widest figures a report holds."""
    c2st = {"accuracy": accuracy, "ci_low": accuracy - 0.05, "ci_high": min(accuracy + 0.05, 1)}
    return {
        "c2st": {"full": c2st, "half": c2st, "paired": False},
        **{"kid": 12.345, "kid_std": 1.234, "fid": 1234.5, "sharpness": 1.01},
        **{"precision": 0.43, "recall": 0.39, "density": 1.19, "coverage": 0.05},
    }


def outline(atypical: float) -> dict[str, Any]:
    return {"atypical": atypical, "ci_low": 0.72, "ci_high": 0.82, "components": 12.22}


def full_report() -> dict[str, Any]:
    """A report with every section: two levels, guidance, labels, MS-SSIM and outlines."""
    realism: dict[str, Any] = {
        name: set_scores(a)
        for name, a in (("samples", 1.0), ("reconstructions", 0.9), ("floor", 0.5))
    }
    realism["ms_ssim"] = {"samples": 0.4, "reconstructions": 0.38, "floor": 0.38, "real": 0.39}
    realism["outline"] = {
        **{name: {**outline(0.78), "holes": 0.08, "excess": 0.91} for name in ("samples", "floor")},
        **{"by_level": True, "window": 0.05, "rare": 0.05},
    }
    realism["per_label"] = {"AD": dict(realism), "NC": dict(realism)}
    summary = {"mean": 0.948, "std": 0.012, "min": 0.9, "p5": 0.91, "frac_ge_0.6": 1.0}
    nearest = {"mean": 0.488, "std": 0.1}
    return {
        **{"run": "checkpoints/a-run-with-a-long-name", "split": "validate", "images": 192},
        **{"data": "mni152", "kind": "mni152"},
        "reconstruction": {
            **{"ssim": summary, "brain_ssim_mean": 0.912, "psnr_mean": 28.21, "mse_mean": 0.001},
            "codebook": {"fraction_used": 0.51, "perplexity": 31.1},
        },
        "prior": {
            **{"nll_bits": 2.508, "uniform_bits": 7.0, "unigram_bits": 5.08, "condition": "label"},
            "level_nll_bits": {"top": 2.915, "bottom": 2.483},
        },
        "samples": {
            **{"n": 256, "nearest_real_ssim": nearest, "nearest_train_ssim_max": 0.7},
            **{"memorised": 0, "diversity_pairwise_ssim": 0.356, "real_pairwise_ssim": 0.424},
            **{"temperature": 0.9, "top_k": 128, "guidance": 2.5},
        },
        "realism": realism,
    }


def lines_of(table: Table) -> int:
    """The lines a table takes when no cell wraps: title, borders, header, rows, caption."""
    caption = 0 if table.caption is None else str(table.caption).count("\n") + 1
    return 1 + 3 + table.row_count + 1 + caption


def test_the_report_table_fits_80_columns_with_one_column_per_set() -> None:
    group = report_table(full_report())
    console = Console(width=80, record=True)
    console.print(group)
    text = console.export_text()
    lines = text.rstrip("\n").split("\n")
    assert max(len(line.rstrip()) for line in lines) <= 80
    tables = list(group.renderables)
    assert len(lines) == sum(lines_of(t) for t in tables)  # no cell wraps
    realism = tables[1]
    assert [c.header for c in realism.columns] == ["measure", "samples", "reconstructions", "floor"]
    row = next(line for line in lines if "C2ST full scale" in line)
    assert "1.00 [0.95, 1.00]" in row and "0.90 [0.85, 0.95]" in row and "0.50 [0.45, 0.55]" in row
    for figure in ("2.915", "uniform 7.00", "guidance 2.5", "12.345 ± 1.234", "0.39", "label AD"):
        assert figure in text


def test_the_progress_total_is_unknown_until_a_time_budget_is_fitted(monkeypatch, tmp_path, capsys):
    """--max-minutes alone: the plain lines (and the bar) say 'step 10/?' until the budget
    has measured the pace, then the fitted total; never a placeholder of 10**9 steps."""
    from vqgen import schedule
    from vqgen.config import TrainConfig
    from vqgen.progress import Reporter
    from vqgen.schedule import LoopState

    clock = {"t": 0.0}
    monkeypatch.setattr(schedule.time, "perf_counter", lambda: clock["t"])
    plan = schedule.Plan(
        TrainConfig(max_minutes=1.0, batch_size=2), 8, "vqvae", torch.device("cpu")
    )
    plan.start(0)
    report = Reporter("vqvae", tmp_path / "metrics.jsonl", log_every=10)
    assert report.plain  # stderr is not a terminal under pytest
    report.live(plan.known_total(), 0)
    for step in range(1, 31):
        clock["t"] += 0.5
        plan.after_step(step, out_of_time=False)
        report.step(LoopState(step=step), plan.known_total(), {"loss": 1.0}, 2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[4] for line in lines] == [
        "10/?",
        "20/115",
        "30/115",
    ]  # 20 + 0.95 * 50 s / 0.5 s
    assert lines[0].endswith(" elapsed, ETA ?")
    assert report.progress.tasks[0].total == 115
    limited = schedule.Plan(
        TrainConfig(max_steps=25, batch_size=2), 8, "vqvae", torch.device("cpu")
    )
    assert limited.known_total() == 25


def test_phases_show_a_bar_on_a_terminal_and_a_line_each_in_a_log(monkeypatch, capsys):
    from rich.console import Console

    from vqgen import progress

    terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
    monkeypatch.setattr(progress, "console", terminal)
    with progress.Phases("evaluate", total=2) as phase:
        with phase("drawing 8 samples"):
            phase.progress.refresh()
            assert "evaluate: drawing 8 samples" in terminal.file.getvalue()
        assert phase.progress.tasks[0].completed == 1
    monkeypatch.setattr(progress, "console", Console(file=io.StringIO(), width=100))
    with progress.Phases("evaluate", total=2) as phase, phase("the outline measure"):
        pass
    assert re.fullmatch(
        r"evaluate: the outline measure \(\d\.\d s\)\n", progress.console.file.getvalue()
    )
