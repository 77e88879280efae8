"""Write the synthetic-corpus section of docs/results.md: a model's scores, by one command.

    python benchmarks/results.py --model aqsep/models/default --data CORPUS [--max-tracks N]

Measures, with museval (BSSEval v4, 1 s windows; median over frames, then over tracks; each
target scored as target vs rest), the median SDR per coarse class of GT queries, class-mean queries
and one refinement step, next to two references computed the same way (the mixture itself and the
oracle ideal ratio mask), on the corpus's test split and on the MUSDB18 preview clip shipped in
``stempeg``; then quotes the paper's MUSDB18 numbers in a separate, labelled table. Per-track
scores are cached under ``--work`` (default ``build/results``), so an interrupted run resumes.

The section goes between this script's markers in ``--out``; the rest of the file (the real
recordings of ``benchmarks/real.py``, first) is kept. Paths are written relative to the
repository root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_common import command_line, shown  # noqa: E402

from aqsep.api import Separator  # noqa: E402
from aqsep.cli.evaluate import Bars  # noqa: E402
from aqsep.errors import AqsepError  # noqa: E402
from aqsep.evaluate import (  # noqa: E402
    FAST_LABEL,
    MUSEVAL_LABEL,
    SummaryRow,
    evaluate_tracks,
    list_tracks,
    method_name,
    model_fingerprint,
    summarize,
)
from aqsep.experiments.compare import PAPER_ROWS  # noqa: E402

METHODS = ("mixture", "irm", "gt", "mean", "iterative")
LABELS = {
    "mixture": "mixture (reference)",
    "irm": "oracle IRM (reference)",
    "gt": "GT query",
    "mean": "class-mean query",
    "iterative": "class mean + 1 refinement",
}
CLASSES = ("vocals", "drums", "bass", "other")
BEGIN = "<!-- benchmarks/results.py: generated section, begin -->"
END = "<!-- benchmarks/results.py: generated section, end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs{gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def measure(
    sep: Separator,
    data: Path,
    split: str,
    work: Path,
    *,
    max_tracks: int | None,
    fast: bool,
    quiet: bool,
) -> tuple[list[SummaryRow], int, float]:
    tracks = list_tracks(data, split=split, max_tracks=max_tracks)
    targets = sorted({c for t in tracks for c in t.classes("coarse")} & set(sep.classes))
    bars = Bars(len(tracks), quiet)
    start = time.perf_counter()
    try:
        scores = evaluate_tracks(
            sep,
            tracks,
            targets,
            list(METHODS),
            refine=1,
            fast=fast,
            out_dir=work,
            split=split,
            data_id=str(data.resolve()),
            progress=bars,
        )
    finally:
        bars.close()
    return summarize(scores), len(tracks), time.perf_counter() - start


def table(
    rows: list[SummaryRow], fast: bool, metric: str = "SDR"
) -> tuple[str, dict[tuple[str, str], float]]:
    values = {(r.method, r.target): getattr(r, metric) for r in rows}
    counts = {(r.method, r.target): r.tracks for r in rows}
    targets = [c for c in CLASSES if any(t == c for _, t in values)] + sorted(
        {t for _, t in values if t not in CLASSES}
    )
    lines = [f"| {metric} (dB) | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    by_method = {}
    for m in METHODS:
        key = method_name(m, 1, fast)
        cells = []
        for t in targets:
            v = values.get((key, t), math.nan)
            by_method[(m, t)] = v
            cells.append("n/a" if not math.isfinite(v) else f"{v:.2f}")
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    n = sorted({c for c in counts.values()})
    lines.append("")
    lines.append(f"Tracks scored per class: {', '.join(map(str, n))}.")
    return "\n".join(lines), by_method


def checks(by: dict[tuple[str, str], float], clip: bool) -> list[str]:
    """The issue's targets, with the measured gaps."""
    out = []
    targets = sorted({t for _, t in by})
    for t in targets:
        gt, irm, mean, mix = (by.get((m, t), math.nan) for m in ("gt", "irm", "mean", "mixture"))
        if clip:
            for m in ("gt", "mean", "iterative"):
                v = by.get((m, t), math.nan)
                if math.isfinite(v) and math.isfinite(mix):
                    out.append(
                        f"- {t}, {LABELS[m]}: {v:.2f} dB vs mixture {mix:.2f} dB: "
                        f"{'above' if v > mix else 'NOT above'} ({v - mix:+.2f} dB)"
                    )
        else:
            if math.isfinite(gt) and math.isfinite(irm):
                out.append(
                    f"- {t}: GT {gt:.2f} dB vs oracle IRM {irm:.2f} dB: gap {irm - gt:.2f} dB "
                    f"({'within' if irm - gt <= 3 else 'NOT within'} 3 dB)"
                )
            if math.isfinite(gt) and math.isfinite(mean):
                out.append(
                    f"- {t}: class mean {mean:.2f} dB vs GT {gt:.2f} dB: gap {gt - mean:.2f} dB "
                    f"({'within' if gt - mean <= 1.5 else 'NOT within'} 1.5 dB)"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", help="released model folder or bundled name (default: the bundled model)"
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="corpus built by `aqsep synth` (stems-folder layout)",
    )
    p.add_argument("--split", default="test")
    p.add_argument("--max-tracks", type=int, help="only the first N tracks of the split")
    p.add_argument(
        "--clip", type=Path, help="MUSDB18 .stem.mp4 to score too (default: stempeg's preview clip)"
    )
    p.add_argument("--no-clip", action="store_true", help="skip the MUSDB18 clip")
    p.add_argument(
        "--work", type=Path, default=ROOT / "build" / "results", help="score caches (resumable)"
    )
    p.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "results.md")
    p.add_argument(
        "--fast", action="store_true", help="fast-bss-eval instead of museval (not the protocol)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        sep = Separator(args.model, device=args.device)
        started = dt.datetime.now(dt.UTC)
        rows, n_tracks, secs = measure(
            sep,
            args.data,
            args.split,
            args.work / "synthetic",
            max_tracks=args.max_tracks,
            fast=args.fast,
            quiet=args.quiet,
        )
        clip_part = ""
        if not args.no_clip:
            clip_part = clip_section(sep, args)
    except AqsepError as err:
        print(f"results: error: {err}", file=sys.stderr)
        return err.exit_code
    synth_table, synth_by = table(rows, args.fast)
    backend = FAST_LABEL if args.fast else MUSEVAL_LABEL
    meta = sep.released.metadata or {}
    paper = "\n".join(
        f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for name, vals in PAPER_ROWS
    )
    model = shown(sep.released.path) if sep.released.path is not None else "bundled"
    doc = f"""## Synthetic corpus and the MUSDB18 clip, four classes (`benchmarks/results.py`)

Measured scores of the model `{model}` (weights fingerprint `{model_fingerprint(sep)}`).
Produced by one command from the repository root:

    {command_line("benchmarks/results.py", argv)}

Machine: {machine()}. Date: {started:%Y-%m-%d %H:%M} UTC.
{("Model metadata: " + ", ".join(f"{k}: {v}" for k, v in meta.items() if isinstance(v, (str, int, float)))) if meta else ""}

Protocol: {backend}; median SDR over 1 s frames, then median over tracks, per coarse class. Each
class is scored as target vs rest (a 2-source BSSEval problem: the true class signal and the sum of
all other stems, against the estimate and the mixture minus the estimate). The mixture is the sum of
the stems. Queries: **GT**, each chunk's query is the true class signal of that chunk (the paper's
upper bound); **class mean**, the mean latent stored with the model; **+1 refinement**, the class-mean
estimate re-encoded once. References: the mixture itself as the estimate, and the oracle ideal ratio
mask |T| / (|T| + |R|) on the STFT grid the model's separation uses.

### Synthetic corpus, {args.split} split ({n_tracks} tracks of `{shown(args.data)}`; {secs / 60:.1f} min)

{synth_table}

Targets of the project (measured gaps):

{chr(10).join(checks(synth_by, clip=False))}

{clip_part}

### Quoted from the paper (MUSDB18 test set; not measured here)

Median SDR (dB) from the paper's comparison table (section 7.5; SiSEC 2018 entries and the
paper's own rows) and its single-step row (section 7.4). These come from real recordings and a model
trained on MUSDB18: they are not comparable number for number with the synthetic-corpus rows above.

| method | vocals | drums | bass | other |
|---|---|---|---|---|
{paper}
"""
    write_section(args.out, doc.replace("\n\n\n", "\n\n"))
    print(f"wrote {shown(args.out)}")
    return 0


def write_section(md: Path, section: str) -> None:
    """Put ``section`` between this script's markers in ``md``, in place of the previous one or
    after what the file holds; the rest of the file is kept."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if md.is_file():
        text = md.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = f"# Results\n\n{block}\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    tmp = md.with_name(md.name + ".part")
    tmp.write_text(text)
    tmp.replace(md)


def clip_section(sep: Separator, args: argparse.Namespace) -> str:
    clip = args.clip
    if clip is None:
        import stempeg

        clip = Path(stempeg.example_stem_path())
    try:
        rows, n, secs = measure(
            sep,
            clip,
            "test",
            args.work / "musdb-clip",
            max_tracks=None,
            fast=args.fast,
            quiet=args.quiet,
        )
    except AqsepError as err:
        return f"### MUSDB18 preview clip\n\nNot measured: {err}\n"
    text, by = table(rows, args.fast)
    what = (
        "the 6 s MUSDB18 preview clip shipped in `stempeg` (real music, CC BY-NC-SA; its own mixture "
        "stream differs from the sum of its stems by 17 %)"
        if args.clip is None
        else f"`{shown(clip)}`"
    )
    return f"""### MUSDB18 clip: `{clip.name}` (measured in {secs:.0f} s)

Scored on {what}, against its four stems at the file's own rate and channels (44.1 kHz stereo),
with their sum as the mixture. {"One short clip: an indication, not a benchmark." if n == 1 else ""}

{text}

Targets of the project (every stem above the mixture's own SDR):

{chr(10).join(checks(by, clip=True))}
"""


if __name__ == "__main__":
    sys.exit(main())
