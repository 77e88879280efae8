"""The algorithm comparison table (paper section 7.5).

Our rows (class-mean single step, iterative, GT queries, and the mixture and oracle IRM
references) are measured here with museval on the given data set; the paper's rows are quoted
from the paper and were measured on the MUSDB18 test set. The two kinds of rows are never mixed
in one table without their label: numbers from different data sets are not comparable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aqsep.evaluate import method_label, method_name, summarize
from aqsep.experiments.common import Context, md_table, new_figure, save_figure, write_csv, write_md

NAME = "compare"
CLASSES = ("vocals", "drums", "bass", "other")
QUOTED_SOURCE = "quoted from the paper, MUSDB18 test set"

# Median SDR (dB) on the MUSDB18 test set, from the paper's section 7.5 table (SiSEC 2018 entries
# and the paper's own two rows) and, for the single-step row, its section 7.4.
PAPER_ROWS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("STL2 (SiSEC18)", (3.25, 4.22, 3.21, 2.25)),
    ("WK (SiSEC18)", (3.76, 4.00, 2.94, 2.43)),
    ("RGT1 (SiSEC18)", (3.85, 3.44, 2.70, 2.63)),
    ("JY3 (SiSEC18)", (5.74, 4.66, 3.67, 3.40)),
    ("UHL2 (SiSEC18)", (5.93, 5.92, 5.03, 4.19)),
    ("TAK1 (SiSEC18)", (6.60, 6.43, 5.16, 4.15)),
    ("Paper, mean (single step, sec. 7.4)", (4.84, 4.31, 3.11, 2.97)),
    ("Paper, mean (table; equals its iterative numbers)", (4.90, 4.34, 3.09, 3.16)),
    ("Paper, GT", (5.48, 4.59, 3.45, 3.26)),
)

OUR_METHODS = ("mixture", "irm", "mean", "iterative", "gt")


def run(ctx: Context) -> list[Path]:
    targets, missing = ctx.class_targets()
    scores = ctx.evaluate(targets, list(OUR_METHODS))
    summary = {(r.method, r.target): r for r in summarize(scores)}
    columns = [c for c in CLASSES if c in targets] + [t for t in targets if t not in CLASSES]
    measured = f"measured on {ctx.dataset}" + (
        " with fast-bss-eval (validation only)" if ctx.fast else ""
    )
    ours = []
    for m in OUR_METHODS:
        key = method_name(m, ctx.refine, ctx.fast)
        sdrs = [summary[(key, t)].SDR if (key, t) in summary else float("nan") for t in columns]
        counts = sorted({summary[(key, t)].tracks for t in columns if (key, t) in summary})
        ours.append(
            (
                f"{method_label(m, ctx.refine)}",
                sdrs,
                f"{measured}; tracks per class: {'/'.join(map(str, counts)) or '0'}",
            )
        )
    quoted = [
        (
            name,
            [vals[CLASSES.index(c)] if c in CLASSES else float("nan") for c in columns],
            QUOTED_SOURCE,
        )
        for name, vals in PAPER_ROWS
    ]
    rows = [
        {"row": n, "source": s, **{c: v for c, v in zip(columns, vals, strict=True)}}
        for n, vals, s in ours + quoted
    ]
    files = [write_csv(ctx.out_dir / "compare.csv", rows)]
    fig = new_figure(max(6.0, 0.5 * len(rows) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(rows)
    for i, (name, vals, source) in enumerate(ours + quoted):
        x = np.arange(len(columns)) + i * width
        ax.bar(
            x,
            vals,
            width,
            label=name,
            hatch="//" if source == QUOTED_SOURCE else None,
            edgecolor="white",
            linewidth=0.3,
        )
    ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2)
    ax.set_xticklabels(columns)
    ax.set_ylabel("median SDR (dB)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title(f"ours (plain, {ctx.dataset}) vs quoted (hatched, MUSDB18 test set)", fontsize=8)
    ax.legend(fontsize=5.5, frameon=False, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    files.append(save_figure(fig, ctx.out_dir / "compare.png"))
    text = f"""# Experiment: algorithm comparison (paper section 7.5)

Model: `{ctx.model_name}`. Median SDR (dB): median over 1 s frames, then over tracks; target vs rest.

## Ours, {measured}

{md_table(["method", *columns, "source"], [[n, *v, s] for n, v, s in ours])}

## Quoted from the paper (MUSDB18 test set; not measured here)

{md_table(["method", *columns, "source"], [[n, *v, s] for n, v, s in quoted])}

The paper's "mean" row of its comparison table equals its iterative numbers of section 7.4; its
single-step numbers are listed separately. The quoted rows come from a different data set (real
recordings, 44.1 kHz stereo) and are not comparable number for number with ours unless ours were
measured on MUSDB18.
{"Classes of the data without a class latent in the model (skipped): " + ", ".join(missing) if missing else ""}

Figure: `compare.png`. Numbers: `compare.csv`; per-track museval JSON under `scores/`.
"""
    files.append(write_md(ctx.out_dir / "compare.md", text))
    return files
