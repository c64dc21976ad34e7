"""The report as people read it: Markdown for report.md and the table `vqgen evaluate` and
`vqgen demo` print. Reads the report of vqgen.evaluate, typed as in vqgen.report; computes
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.markup import escape
from rich.table import Table

from vqgen.report import (
    OutlineScores,
    OutlineSection,
    PriorSection,
    RealismSection,
    Report,
    SamplesSection,
    SetScores,
)


def render_markdown(report: Report) -> str:
    """The report as a short Markdown document."""
    rec = report["reconstruction"]
    lines = [
        f"# vqgen report: {report['run']}",
        "",
        f"Data: `{report['data']}` ({report['kind']}), **{report['split']}** split, "
        f"{report['images']} slices.",
        "",
        "## Reconstruction",
        "",
        "| SSIM mean | std | min | 5th pct | >= 0.6 | brain SSIM | PSNR dB | MSE |",
        "|---|---|---|---|---|---|---|---|",
        f"| {rec['ssim']['mean']:.3f} | {rec['ssim']['std']:.3f} | {rec['ssim']['min']:.3f} | "
        f"{rec['ssim']['p5']:.3f} | {rec['ssim']['frac_ge_0.6']:.0%} | "
        f"{known(rec['brain_ssim_mean'], '.3f')} | {known(rec['psnr_mean'], '.2f')} | "
        f"{rec['mse_mean']:.5f} |",
        "",
        f"Codebook: {rec['codebook']['fraction_used']:.0%} of codes used, "
        f"perplexity {rec['codebook']['perplexity']:.1f}.",
    ]
    if "prior" in report:
        p = report["prior"]
        lines += [
            "",
            "## Prior",
            "",
            f"NLL {p['nll_bits']:.3f} bits/code{level_text(p)} ({baselines_text(p)}); "
            f"condition: {p['condition']}.",
        ]
    if "samples" in report:
        s = report["samples"]
        lines += [
            "",
            "## Samples",
            "",
            f"Drawn {sampling_text(s)}.",
            "",
            "| n | nearest-real SSIM | max SSIM to train | memorised (> 0.95) | "
            "pairwise SSIM (samples) | pairwise SSIM (real) |",
            "|---|---|---|---|---|---|",
            f"| {s['n']} | {s['nearest_real_ssim']['mean']:.3f} ± "
            f"{s['nearest_real_ssim']['std']:.3f} | {s['nearest_train_ssim_max']:.3f} | "
            f"{s['memorised']} | {s['diversity_pairwise_ssim']:.3f} | "
            f"{s['real_pairwise_ssim']:.3f} |",
        ]
    lines += [
        "",
        "## Realism",
        "",
        "Can the generated slices be told from real ones (the split, for mni152 with its",
        "evaluation subjects; reconstructions paired with their own slices)? Each figure stands",
        "beside its floor: the same for real train slices. C2ST 1.0: a small CNN tells the sets",
        "apart every time, 0.5 never; full scale sees noise and texture, half scale (2x pooled)",
        "anatomy. KID and FID: distances in features of a net trained on the train split.",
        "",
        *realism_markdown(report["realism"]),
    ]
    for name, section in report["realism"].get("per_label", {}).items():
        lines += ["", f"### Label {name}", "", *realism_markdown(section)]
    return "\n".join(lines) + "\n"


def sampling_text(samples: SamplesSection) -> str:
    """How the samples were drawn: 'at temperature 0.9, top-k 8'."""
    text = f"at temperature {samples['temperature']:g}"
    text += "" if samples["top_k"] is None else f", top-k {samples['top_k']}"
    guidance = samples.get("guidance", 1.0)  # reports before guidance have none
    return text + ("" if guidance == 1 else f", guidance {guidance:g}")


def known(value: float | None, spec: str) -> str:
    """`value` formatted, or "-" where it is undefined: no brain in any slice (brain SSIM),
    every reconstruction exact (PSNR)."""
    return "-" if value is None or math.isnan(value) else format(value, spec)


def baselines_text(prior: PriorSection) -> str:
    """'uniform 7.00, unigram 6.12': what a prior that learned nothing pays per code."""
    return f"uniform {prior['uniform_bits']:.2f}, unigram {prior['unigram_bits']:.2f}"


def level_text(prior: PriorSection) -> str:
    """Each level's NLL of a two-level prior: ' (top 3.012, bottom 2.101)'; else ''."""
    levels = prior.get("level_nll_bits")
    if not levels:
        return ""
    return " (" + ", ".join(f"{name} {bits:.3f}" for name, bits in levels.items()) + ")"


def realism_markdown(section: RealismSection) -> list[str]:
    """A realism section as a Markdown table."""
    rows = realism_rows(section)
    sets = rows[0][1].split(" / ")
    table = [
        "| measure | " + " | ".join(sets) + " |",
        "|---" * (len(sets) + 1) + "|",
        *("| " + " | ".join(row) + " |" for row in rows[1:]),
    ]
    if "outline" not in section:
        return table
    o = section["outline"]
    level = f"at the same level (±{o['window']:g})" if o["by_level"] else "of any level"
    return [
        *table,
        "",
        "Atypical outlines: slices whose brain mask has pieces and holes, or a solidity (a cut",
        f"outline), that fewer than {o['rare']:.0%} of real slices {level} have; the floor's",
        "real train slices are measured the same way. The rarest samples, outlines in green and",
        "holes in red: figures/eval_outline_worst.png.",
    ]


def report_table(report: Report) -> Table:
    """The headline figures of a report, as the CLI prints them."""
    table = Table(
        title=f"{escape(report['run'])} on the {report['split']} split ({report['images']} slices)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rec = report["reconstruction"]
    table.add_row(
        "reconstruction SSIM (mean ± std)", f"{rec['ssim']['mean']:.3f} ± {rec['ssim']['std']:.3f}"
    )
    table.add_row("brain-region SSIM", known(rec["brain_ssim_mean"], ".3f"))
    table.add_row("PSNR (dB)", known(rec["psnr_mean"], ".2f"))
    table.add_row(
        "codes used / perplexity",
        f"{rec['codebook']['fraction_used']:.0%} / {rec['codebook']['perplexity']:.1f}",
    )
    if "prior" in report:
        p = report["prior"]
        table.add_row(
            "prior NLL (bits/code)",
            f"{p['nll_bits']:.3f}{level_text(p)}  ({baselines_text(p)})",
        )
    if "samples" in report:
        s = report["samples"]
        table.add_row("samples: drawn", sampling_text(s))
        table.add_row("samples: nearest-real SSIM", f"{s['nearest_real_ssim']['mean']:.3f}")
        table.add_row("samples: memorised (> 0.95 to train)", str(s["memorised"]))
        table.add_row(
            "pairwise SSIM: samples / real",
            f"{s['diversity_pairwise_ssim']:.3f} / {s['real_pairwise_ssim']:.3f}",
        )
    rows = realism_rows(report["realism"])
    for measure, *values in rows[1:]:
        table.add_row(f"{measure}: {rows[0][1]}", "  ".join(values))
    for name, section in report["realism"].get("per_label", {}).items():
        label_rows = realism_rows(section)
        table.add_row(f"label {name}, C2ST: {label_rows[0][1]}", "  ".join(label_rows[1][1:]))
    return table


def realism_rows(section: RealismSection) -> list[list[str]]:
    """The realism section as rows: a header (measure, then the sets: samples if any,
    reconstructions, floor), then one row per measure."""
    if "skipped" in section:
        return [["measure", "-"], ["realism", f"skipped: {section['skipped']}"]]
    sets = [name for name in ("samples", "reconstructions", "floor") if name in section]

    def c2st(scale: str) -> Callable[[SetScores], str]:
        def show(s: SetScores) -> str:
            c = s["c2st"][scale]  # type: ignore[literal-required]
            return f"{c['accuracy']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"

        return show

    measures = [
        ("C2ST full scale [95% CI] (0.5 = alike; recon. paired)", c2st("full")),
        ("C2ST half scale (2x pool: anatomy)", c2st("half")),
        ("KID", lambda s: f"{s['kid']:.3f} ± {s['kid_std']:.3f}"),
        ("FID", lambda s: f"{s['fid']:.1f}"),
        ("precision / recall", lambda s: f"{s['precision']:.2f} / {s['recall']:.2f}"),
        ("density / coverage", lambda s: f"{s['density']:.2f} / {s['coverage']:.2f}"),
        ("sharpness (1 = as real)", lambda s: f"{s['sharpness']:.2f}"),
    ]
    rows = [["measure", " / ".join(sets)]]
    rows += [[label, *(show(section[name]) for name in sets)] for label, show in measures]
    if "ms_ssim" in section:
        ms = section["ms_ssim"]
        rows.append(
            ["MS-SSIM of pairs (real " + f"{ms['real']:.2f})", *(f"{ms[n]:.2f}" for n in sets)]
        )
    if "outline" in section:
        rows += outline_rows(section["outline"], sets)
    return rows


def outline_rows(section: OutlineSection, sets: list[str]) -> list[list[str]]:
    """The outline measure's rows: the share of atypical slices with its 95% interval, then
    pieces, holes and excess per slice; "-" for the reconstructions, which it does not score."""

    def cells(show: Callable[[OutlineScores], str]) -> list[str]:
        return [show(section[n]) if n in section else "-" for n in sets]  # type: ignore[literal-required]

    return [
        [
            "atypical outlines [95% CI] (share of slices)",
            *cells(lambda s: f"{s['atypical']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"),
        ],
        [
            "outline: pieces / holes / excess per slice",
            *cells(lambda s: f"{s['components']:.2f} / {s['holes']:.2f} / {s['excess']:.2f}"),
        ],
    ]
