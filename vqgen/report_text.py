"""The report as people read it: Markdown for report.md and the table `vqgen evaluate` and
`vqgen demo` print. Reads the report of vqgen.evaluate, typed as in vqgen.report; computes
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Group
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
        lines += samples_markdown(report["samples"])
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


def samples_markdown(s: SamplesSection) -> list[str]:
    """The samples section of report.md: how they were drawn and a table of their scores."""
    return [
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
    sets = rows[0][1:]
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


def report_table(report: Report) -> Group:
    """The headline figures of a report, as the CLI prints them: the reconstruction, prior and
    samples, then the realism figures with one column per set; each fits 80 columns."""
    tables = [headline_table(report)]
    if "skipped" not in report["realism"]:
        tables.append(realism_table(report["realism"]))
    return Group(*tables)


def headline_table(report: Report) -> Table:
    """Reconstruction, prior and samples: a figure or two a row, labels of 29 characters at
    most so that the values have room in 80 columns."""
    table = Table(
        title=f"{escape(report['run'])} on the {report['split']} split ({report['images']} slices)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rec = report["reconstruction"]
    table.add_row(
        "reconstruction SSIM ± std", f"{rec['ssim']['mean']:.3f} ± {rec['ssim']['std']:.3f}"
    )
    table.add_row("brain-region SSIM", known(rec["brain_ssim_mean"], ".3f"))
    table.add_row("PSNR (dB)", known(rec["psnr_mean"], ".2f"))
    table.add_row(
        "codes used / perplexity",
        f"{rec['codebook']['fraction_used']:.0%} / {rec['codebook']['perplexity']:.1f}",
    )
    if "prior" in report:
        p = report["prior"]
        table.add_row("prior NLL (bits/code)", f"{p['nll_bits']:.3f}{level_text(p)}")
        table.add_row("prior NLL learning nothing", baselines_text(p))
    if "samples" in report:
        s = report["samples"]
        table.add_row("samples: drawn", sampling_text(s))
        table.add_row("samples: nearest-real SSIM", f"{s['nearest_real_ssim']['mean']:.3f}")
        table.add_row("memorised (> 0.95 to train)", str(s["memorised"]))
        table.add_row(
            "pairwise SSIM: samples / real",
            f"{s['diversity_pairwise_ssim']:.3f} / {s['real_pairwise_ssim']:.3f}",
        )
    if "skipped" in report["realism"]:
        table.add_row("realism", f"skipped: {report['realism']['skipped']}")
    return table


def realism_table(section: RealismSection) -> Table:
    """The realism figures, one column per set (samples, reconstructions, floor), short labels
    and what they mean in the caption."""
    rows = realism_rows(section, short=True)
    table = Table(
        title="realism: each set beside its floor (real train slices)", caption_justify="left"
    )
    table.add_column("measure")
    for name in rows[0][1:]:
        table.add_column(name, justify="right")
    for row in rows[1:]:
        table.add_row(*row)
    for name, labelled in section.get("per_label", {}).items():
        label_rows = realism_rows(labelled, short=True)
        table.add_row(f"label {escape(name)}, C2ST", *label_rows[1][1:])
    notes = [
        "C2ST: 0.5 = alike, 1 = told apart every time, [95% CI]; reconstructions paired",
        "with their own slices; half scale: 2x pooled (anatomy). sharpness: 1 = as real.",
    ]
    if "ms_ssim" in section:
        notes.append(
            f"MS-SSIM of pairs of the split's real slices: {section['ms_ssim']['real']:.2f}"
        )
    if "outline" in section:
        notes.append("outline faults: pieces/holes per slice/excess over the nearest real outline.")
    table.caption = "\n".join(notes)
    return table


def realism_rows(section: RealismSection, short: bool = False) -> list[list[str]]:
    """The realism section as rows: a header (measure, then the sets: samples if any,
    reconstructions, floor), then one row per measure. `short` labels fit a terminal table;
    the long ones (report.md) say what the figures mean."""
    if "skipped" in section:
        return [["measure", "-"], ["realism", f"skipped: {section['skipped']}"]]
    sets = [name for name in ("samples", "reconstructions", "floor") if name in section]
    rows = [["measure", *sets]]
    for long_label, short_label, show in MEASURES:
        label = short_label if short else long_label
        rows.append([label, *(show(section[name]) for name in sets)])  # type: ignore[literal-required]
    if "ms_ssim" in section:
        ms = section["ms_ssim"]
        label = "MS-SSIM of pairs" if short else f"MS-SSIM of pairs (real {ms['real']:.2f})"
        rows.append([label, *(f"{ms[n]:.2f}" for n in sets)])  # type: ignore[literal-required]
    if "outline" in section:
        rows += outline_rows(section["outline"], sets, short)
    return rows


def c2st_cell(scale: str) -> Callable[[SetScores], str]:
    """A set's C2ST accuracy at `scale` with its 95% interval: '0.68 [0.61, 0.74]'."""

    def show(s: SetScores) -> str:
        c = s["c2st"][scale]  # type: ignore[literal-required]
        return f"{c['accuracy']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]"

    return show


# each realism measure: its label in report.md, in the terminal, and one set's cell
MEASURES: list[tuple[str, str, Callable[[SetScores], str]]] = [
    ("C2ST full scale [95% CI] (0.5 = alike; recon. paired)", "C2ST full scale", c2st_cell("full")),
    ("C2ST half scale (2x pool: anatomy)", "C2ST half scale", c2st_cell("half")),
    ("KID", "KID", lambda s: f"{s['kid']:.3f} ± {s['kid_std']:.3f}"),
    ("FID", "FID", lambda s: f"{s['fid']:.1f}"),
    (
        "precision / recall",
        "precision/recall",
        lambda s: f"{s['precision']:.2f} / {s['recall']:.2f}",
    ),
    (
        "density / coverage",
        "density/coverage",
        lambda s: f"{s['density']:.2f} / {s['coverage']:.2f}",
    ),
    ("sharpness (1 = as real)", "sharpness", lambda s: f"{s['sharpness']:.2f}"),
]


def outline_rows(section: OutlineSection, sets: list[str], short: bool = False) -> list[list[str]]:
    """The outline measure's rows: the share of atypical slices with its 95% interval, then
    pieces, holes and excess per slice; "-" for the reconstructions, which it does not score."""

    def cells(show: Callable[[OutlineScores], str]) -> list[str]:
        return [show(section[n]) if n in section else "-" for n in sets]  # type: ignore[literal-required]

    atypical = "atypical outline" if short else "atypical outlines [95% CI] (share of slices)"
    faults = "outline faults" if short else "outline: pieces / holes / excess per slice"
    sep = "/" if short else " / "  # a terminal cell fits 17 characters
    return [
        [
            atypical,
            *cells(lambda s: f"{s['atypical']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"),
        ],
        [
            faults,
            *cells(lambda s: f"{s['components']:.2f}{sep}{s['holes']:.2f}{sep}{s['excess']:.2f}"),
        ],
    ]
