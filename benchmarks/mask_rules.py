"""Does normalising the masks of several targets help or hurt each class's SDR?

Separates held-out tracks into every coarse class of a model in one pass
(``Separator.separate(audio, rate, {class: class mean latent})``) under each mask rule of
``aqsep.inference.combine_masks``, and scores every class with the package's scoring
(``aqsep.evaluate.score``: museval v4, 1 s windows, target vs rest, median over frames):

* ``independent``: each class's mask as predicted (what one-target runs give);
* ``ratio``: the classes' masks normalised to add up to one in every bin, so the stems sum to
  the mixture;
* ``wiener``: the ratio masks' estimates refined by one EM iteration of a multichannel Wiener
  filter (``aqsep.inference.wiener_filter``); the stems still sum to the mixture.

Tracks: the MUSDB18 preview clip that ships in ``stempeg`` (real music, 6 s) and the first
``--tracks`` tracks of a synthetic corpus' test split (refused if the model trained on them).
Run from the repository root:

    python benchmarks/mask_rules.py --corpus /work/corpus --tracks 6
    python benchmarks/mask_rules.py --corpus /work/corpus --tracks 2 --fast --no-write

Prints a Markdown section and (unless ``--no-write``) appends it to ``docs/results.md``, or
replaces it there between its markers, and writes the per-track figures to
``docs/mask_rules.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import REPO, command_line, cpu_model, replace_section, shown

SECTION = "benchmarks/mask_rules.py"
RULES = ("independent", "ratio", "wiener")


def musdb_clip() -> tuple[str, int, dict[str, np.ndarray]]:
    """The stempeg preview clip: (name, rate, {class: (channels, samples)})."""
    import stempeg

    from aqsep.data.musdb import STEM_IDS

    path = Path(stempeg.__file__).parent / "data" / "The Easton Ellises - Falcon 69.stem.mp4"
    audio, rate = stempeg.read_stems(str(path), dtype=np.float32)  # (streams, samples, ch)
    stems = {c: np.ascontiguousarray(audio[i].T) for c, i in STEM_IDS.items()}
    return "MUSDB18 preview: The Easton Ellises - Falcon 69", int(rate), stems


def corpus_tracks(sep: Any, corpus: Path, count: int) -> list[tuple[str, int, dict[str, Any]]]:
    """The first ``count`` test tracks of a stems corpus: (name, rate, {class: source})."""
    from aqsep.evaluate import check_held_out, list_tracks

    tracks = list_tracks(corpus, split="test", max_tracks=count)
    check_held_out(sep, tracks, str(corpus))
    out = []
    for track in tracks:
        audio = track.load()
        classes = sorted({audio.labels[s].coarse for s in audio.stems})
        out.append(
            (f"corpus test: {track.name}", audio.sample_rate, {c: audio.source(c) for c in classes})
        )
    return out


def score_track(
    sep: Any, rate: int, sources: dict[str, np.ndarray], fast: bool
) -> dict[str, dict[str, float]]:
    """``{rule: {class: median SDR}}`` for every class of the model present in ``sources``, and
    ``{rule: {"sum error": max |sum of stems - mixture|}}``."""
    from aqsep.evaluate import score

    mixture = sum(sources.values())
    assert isinstance(mixture, np.ndarray)
    latents = {c: sep.class_latent(c) for c in sep.coarse_classes}
    figures: dict[str, dict[str, float]] = {}
    for rule in RULES:
        stems = sep.separate(mixture, rate, latents, masks=rule)
        row = {"sum error": float(np.abs(sum(stems.values()) - mixture).max())}
        for c, truth in sources.items():
            if c not in stems or not np.any(truth):
                continue
            frames = score(truth, mixture - truth, stems[c], rate, fast=fast)["SDR"]
            row[c] = float(np.nanmedian(frames)) if np.isfinite(frames).any() else float("nan")
        figures[rule] = row
    mix_row = {}
    for c, truth in sources.items():
        if c in latents and np.any(truth):
            frames = score(truth, mixture - truth, mixture, rate, est_rest=mixture, fast=fast)
            mix_row[c] = float(np.nanmedian(frames["SDR"]))
    figures["mixture"] = mix_row
    return figures


def _f(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.2f}"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    classes = meta["classes"]
    metric = (
        "fast-bss-eval SDR (validation only, not museval)"
        if meta["fast"]
        else ("museval v4 median SDR (1 s windows, target vs rest)")
    )
    lines = [
        "## Several targets in one pass: normalised or independent masks",
        "",
        f"`aqsep separate --targets all` (here `Separator.separate` with every coarse class's "
        f"mean latent) on held-out tracks, with model `{meta['model']}` (weights fingerprint "
        f"`{meta['fingerprint']}`), under the mask rules "
        "of `aqsep.inference.combine_masks`: *independent* (each class's mask as predicted: "
        "what one-target runs give), *ratio* (normalised ratio masks: the four masks scaled "
        "to add up to one in every time-frequency bin, so that the stems sum to the mixture) "
        "and *wiener* (the ratio masks' estimates refined by one EM iteration of a multichannel "
        f"Wiener filter; they sum to the mixture too). Scores: {metric}, per class and track; "
        "the differences are taken per track, then the median (and the range) over tracks. "
        "Produced by:",
        "",
        f"    {meta['command']}",
        "",
        f"Machine: {meta['cpu']}, shared with other jobs (speed does not enter these figures); "
        f"{meta['date']}, commit {meta['commit']}; {meta['minutes']:.1f} min.",
        "",
        "| tracks | class | mixture | independent | ratio | wiener | ratio - independent "
        "(median; min / max) | wiener - independent (median; min / max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    groups = [
        ("MUSDB18 preview clip (real, 6 s)", [r for r in results if r["name"].startswith("MUSDB")]),
        (
            f"synthetic corpus test split ({meta['corpus_tracks']} tracks of 30 s)",
            [r for r in results if not r["name"].startswith("MUSDB")],
        ),
    ]
    for label, rows in groups:
        if not rows:
            continue
        for c in classes:
            have = [r for r in rows if c in r["figures"]["ratio"]]
            if not have:
                continue
            med = {
                rule: statistics.median(r["figures"][rule][c] for r in have)
                for rule in ("mixture", *RULES)
            }
            cells = []
            for rule in ("ratio", "wiener"):
                change = [r["figures"][rule][c] - r["figures"]["independent"][c] for r in have]
                cells.append(
                    f"{_f(statistics.median(change))}"
                    + (f" ({_f(min(change))} / {_f(max(change))})" if len(have) > 1 else "")
                )
            n = f" ({len(have)})" if len(rows) > 1 else ""
            lines.append(
                f"| {label} | {c}{n} | {_f(med['mixture'])} | {_f(med['independent'])} | "
                f"{_f(med['ratio'])} | {_f(med['wiener'])} | {cells[0]} | {cells[1]} |"
            )
    worst = {rule: max(r["figures"][rule]["sum error"] for r in results) for rule in RULES}
    lines += [
        "",
        "Largest |sum of the four stems - mixture| over all tracks (full scale 1): "
        + ", ".join(f"{rule} {worst[rule]:.2g}" for rule in RULES)
        + ". Medians over tracks of the "
        "medians over frames; a class absent from a track is not scored there (the count is in "
        "brackets).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="aqsep/models/default", help="released model folder")
    ap.add_argument("--corpus", type=Path, help="a stems corpus with a test split")
    ap.add_argument("--tracks", type=int, default=6, help="corpus test tracks (default 6)")
    ap.add_argument("--fast", action="store_true", help="fast-bss-eval instead of museval")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    from aqsep.api import Separator
    from aqsep.evaluate import model_fingerprint

    began = time.perf_counter()
    sep = Separator(args.model, device="cpu")
    inputs = [musdb_clip()]
    if args.corpus:
        inputs += corpus_tracks(sep, args.corpus, args.tracks)
    results = []
    for name, rate, sources in inputs:
        figures = score_track(sep, rate, sources, args.fast)
        results.append({"name": name, "rate": rate, "figures": figures})
        shown_row = {
            rule: {k: round(v, 2) for k, v in row.items()} for rule, row in figures.items()
        }
        print(f"{name}: {json.dumps(shown_row)}", flush=True)
    import subprocess

    commit = (
        subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or "unknown"
    )
    meta = {
        "command": command_line(SECTION, sys.argv[1:] if argv is None else argv),
        "model": shown(Path(args.model).resolve()),
        "fingerprint": model_fingerprint(sep),
        "classes": sep.coarse_classes,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "minutes": (time.perf_counter() - began) / 60,
        "fast": args.fast,
        "corpus_tracks": len(inputs) - 1,
    }
    text = markdown(results, meta)
    print("\n" + text)
    if not args.no_write:
        (REPO / "docs" / "mask_rules.json").write_text(
            json.dumps({"meta": meta, "results": results}, indent=1) + "\n"
        )
        replace_section(REPO / "docs" / "results.md", SECTION, text)
        print("wrote docs/mask_rules.json and its section of docs/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
