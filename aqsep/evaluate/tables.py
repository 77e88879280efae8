"""Summaries of an evaluation: the median over frames, then over tracks, per method and target,
as rows, a Markdown table and a CSV file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aqsep.audio import write_text_atomic
from aqsep.evaluate.methods import METHODS, method_label
from aqsep.evaluate.scoring import FAST_LABEL, MUSEVAL_LABEL, Scores


def track_medians(scores: Scores) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Median over frames: ``[method][track][target][metric]`` -> float (NaN if no valid frame)."""
    return {
        m: {
            tr: {t: {k: _nanmedian(v) for k, v in met.items()} for t, met in per.items()}
            for tr, per in by_track.items()
        }
        for m, by_track in scores.items()
    }


def _nanmedian(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


@dataclass
class SummaryRow:
    method: str
    target: str
    SDR: float
    SIR: float
    SAR: float
    tracks: int  # tracks with at least one scored frame


def summarize(scores: Scores) -> list[SummaryRow]:
    """Median over frames, then median over tracks, per method and target."""
    rows = []
    for method, by_track in track_medians(scores).items():
        targets = sorted({t for per in by_track.values() for t in per})
        for t in targets:
            vals = {
                k: np.array([per[t][k] for per in by_track.values() if t in per])
                for k in ("SDR", "SIR", "SAR")
            }
            n = int(np.isfinite(vals["SDR"]).sum())
            rows.append(
                SummaryRow(
                    method,
                    t,
                    _nanmedian(vals["SDR"]),
                    _nanmedian(vals["SIR"]),
                    _nanmedian(vals["SAR"]),
                    tracks=n,
                )
            )
    return rows


def _fmt(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2f}"


def summary_markdown(
    rows: Sequence[SummaryRow],
    *,
    fast: bool = False,
    refine: int = 1,
    dataset: str = "",
    title: str = "Evaluation",
) -> str:
    backend = FAST_LABEL if fast else MUSEVAL_LABEL
    lines = [
        f"# {title}",
        "",
        f"Data: {dataset}. Scores: {backend}; median over 1 s frames, then median over tracks.",
        "Each target is scored as target vs rest (a 2-source BSSEval problem; rest estimate = "
        "mixture - target estimate; the mixture is the sum of the stems).",
        "",
        "| method | target | SDR | SIR | SAR | tracks |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = r.method.removesuffix("-fast")
        m = "iterative" if base.startswith("iterative") else base
        steps = int(base[len("iterative") :] or 1) if m == "iterative" else refine
        label = method_label(m, steps) if m in METHODS else r.method
        lines.append(
            f"| {label} | {r.target} | {_fmt(r.SDR)} | {_fmt(r.SIR)} | {_fmt(r.SAR)} | {r.tracks} |"
        )
    return "\n".join(lines) + "\n"


def write_summary(
    rows: Sequence[SummaryRow],
    out_dir: str | Path,
    *,
    fast: bool = False,
    refine: int = 1,
    dataset: str = "",
    title: str = "Evaluation",
    stem: str = "summary",
) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.csv`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    md = out / f"{stem}.md"
    write_text_atomic(
        md, summary_markdown(rows, fast=fast, refine=refine, dataset=dataset, title=title)
    )
    path = out / f"{stem}.csv"
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["method", "target", "SDR", "SIR", "SAR", "tracks", "backend", "dataset"])
    for r in rows:
        w.writerow(
            [
                r.method,
                r.target,
                f"{r.SDR:.4f}",
                f"{r.SIR:.4f}",
                f"{r.SAR:.4f}",
                r.tracks,
                FAST_LABEL if fast else MUSEVAL_LABEL,
                dataset,
            ]
        )
    write_text_atomic(path, table.getvalue(), newline="")
    return md, path
