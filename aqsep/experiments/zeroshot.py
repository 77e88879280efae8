"""Zero-shot sub-class targeting (paper section 7.2), measured rather than only shown.

For each pair (a fine-grained query label, the stems it is mixed with), every test track that has
those stems gives a mixture made of exactly them (e.g. hi-hat + kick + bass). The query is the
loudest excerpt (model segment length) of the same fine stem taken from a DIFFERENT test track
(the next one, by name, that has it); only when no other track has it does the query come from the
same track, from the loudest excerpt away from the figure's excerpt (the table says which). The
estimate is scored with museval against the true sub-class stem (target vs rest), next to the
mixture's own score and, when the model stores them, the class-mean latents of the query's fine
label and of its coarse class (a hi-hat query should beat the "drums" mean on a hi-hat target if the
latent carries sub-class information).

This is zero-shot only if the model was trained with coarse targets (the corpus's fine labels
never used as training targets); the summary quotes what the model's metadata says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.data.track import StemLabel, Track, TrackAudio, norm_label
from aqsep.errors import QueryError
from aqsep.evaluate import score
from aqsep.experiments.common import (
    Context,
    excerpt,
    loudest_window,
    md_table,
    nanmedian,
    plot_spectrograms,
    training_note,
    window_samples,
    write_csv,
    write_md,
)

NAME = "zeroshot"


@dataclass(frozen=True)
class Pair:
    """Query the ``query`` fine label out of a mixture of it and the stems matching ``others``
    (fine labels or coarse classes; stems of the query label are never counted as others)."""

    query: str
    others: tuple[str, ...]
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or f"{self.query} out of {' + '.join((self.query, *self.others))}"


PAIRS = (
    Pair("hi-hat", ("kick", "bass")),  # the paper's first example
    Pair("piano", ("electric guitar",)),  # the paper's second example
    Pair("snare", ("drums",), "snare out of its kit (all drum stems)"),
)


def parse_pairs(text: str | None) -> tuple[Pair, ...]:
    """``"hi-hat:kick+bass,piano:electric guitar"`` -> pairs (default: :data:`PAIRS`)."""
    if not text:
        return PAIRS
    pairs = []
    for item in text.split(","):
        query, sep, others = item.partition(":")
        stems = tuple(o.strip() for o in others.split("+") if o.strip())
        if not sep or not query.strip() or not stems or ":" in others:
            raise QueryError(
                f"bad pair {item!r} in {text!r}: write QUERY:OTHER+OTHER, e.g. hi-hat:kick+bass"
            )
        pairs.append(Pair(query.strip(), stems))
    return tuple(pairs)


def _split_stems(labels: dict[str, StemLabel], pair: Pair) -> tuple[list[str], list[list[str]]]:
    key = norm_label(pair.query)
    q = [s for s, lab in labels.items() if norm_label(lab.fine or s) == key or norm_label(s) == key]
    others = [
        [s for s, lab in labels.items() if s not in q and lab.matches(o)] for o in pair.others
    ]
    return q, others


def eligible(entries: list[Track], pair: Pair) -> list[Track]:
    out = []
    for e in entries:
        q, others = _split_stems(e.labels, pair)
        if q and others and all(others):
            out.append(e)
    return out


def donors(entries: list[Track], pair: Pair) -> list[Track]:
    return [e for e in entries if _split_stems(e.labels, pair)[0]]


def pick_query(
    ctx: Context, pair: Pair, track: TrackAudio, pool: list[Track], avoid: tuple[int, int]
) -> tuple[Any, np.ndarray, int, str, float] | None:
    """A query excerpt and its latent: the query stem of the next other track in ``pool`` (by
    name) that the Query-net does not find silent, else of ``track`` (None if neither has one).

    Returns ``(latent, audio, sample_rate, where from, start seconds)``.
    """
    sep = ctx.separator
    names = [e.name for e in pool]
    i = names.index(track.name) if track.name in names else -1
    candidates: list[tuple[np.ndarray, int, str, float]] = []
    for donor in pool[i + 1 :] + pool[: i + 1]:
        if donor.name == track.name:
            continue
        d = donor.load()
        q, _ = _split_stems(d.labels, pair)
        src = d.source("", stems=q)
        if not np.any(src):
            continue
        win = window_samples(sep, d.sample_rate)
        s = loudest_window(src, win)
        candidates.append(
            (excerpt(src, s, win), d.sample_rate, f"other track: {donor.name}", s / d.sample_rate)
        )
    q, _ = _split_stems(track.labels, pair)
    src = track.source("", stems=q)
    win = window_samples(sep, track.sample_rate)
    s = loudest_window(src, win, exclude=avoid)
    same = (
        excerpt(src, s, win),
        track.sample_rate,
        "same track, other time",
        s / track.sample_rate,
    )
    for audio, sr, where, start in [*candidates, same]:
        try:  # a stem can be near silence at the Query-net's rate (a hi-hat above 11 kHz)
            return sep.query_latent([(audio, sr)]), audio, sr, where, start
        except QueryError:
            continue
    return None


def run(ctx: Context) -> list[Path]:
    pairs = parse_pairs(ctx.options.get("pairs"))
    sep = ctx.separator
    out = ctx.out_dir
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for pair in pairs:
        tracks = eligible(ctx.tracks, pair)
        if not tracks:
            notes.append(
                f"- {pair.name}: no track has these stems (needs fine labels, as in the synthetic corpus)."
            )
            continue
        pool = donors(ctx.tracks, pair)
        fine_known = pair.query.lower() in sep.classes
        for i, entry in enumerate(tracks):
            ctx.notify(
                {
                    "stage": "track",
                    "track": f"{pair.query}: {entry.name}",
                    "index": i,
                    "total": len(tracks),
                }
            )
            full = entry.load()
            q, others = _split_stems(full.labels, pair)
            track = full.subset(q + sorted({s for o in others for s in o}), name=entry.name)
            truth = track.source("", stems=q)
            if not np.any(truth):
                continue
            rest = track.mixture - truth
            win = window_samples(sep, track.sample_rate)
            fig_start = loudest_window(truth, win)
            picked = pick_query(ctx, pair, track, pool, (fig_start, fig_start + win))
            if picked is None:
                notes.append(
                    f"- {pair.name}, {entry.name}: no track has a query that is not silent."
                )
                continue
            query_latent, query, q_sr, q_from, q_start = picked
            coarse = full.labels[q[0]].coarse
            latents: dict[str, Any] = {"query": query_latent}
            if fine_known:
                latents[f"class mean '{pair.query}'"] = sep.class_latent(pair.query)
            if coarse and coarse in sep.classes:
                latents[f"class mean '{coarse}'"] = sep.class_latent(coarse)
            base = {
                "pair": pair.name,
                "track": entry.name,
                "query_from": q_from,
                "query_start_s": q_start,
            }
            mix_scores = score(
                truth, rest, track.mixture, track.sample_rate, est_rest=track.mixture, fast=ctx.fast
            )
            rows.append(
                {
                    **base,
                    "latent": "mixture (reference)",
                    **{k: nanmedian(mix_scores[k]) for k in ("SDR", "SIR", "SAR")},
                }
            )
            estimates = {}
            for name, z in latents.items():
                est = sep.separate(track.mixture, track.sample_rate, z)["target"]
                estimates[name] = est
                m = score(truth, rest, est, track.sample_rate, fast=ctx.fast)
                rows.append(
                    {**base, "latent": name, **{k: nanmedian(m[k]) for k in ("SDR", "SIR", "SAR")}}
                )
            if i == 0:
                files.append(
                    plot_spectrograms(
                        out / f"zeroshot_{_file(pair.query)}.png",
                        [
                            (f"query ({pair.query})", query, q_sr),
                            *[
                                (title, excerpt(x, fig_start, win), track.sample_rate)
                                for title, x in (
                                    ("mixture", track.mixture),
                                    ("estimate", estimates["query"]),
                                    (f"truth ({pair.query})", truth),
                                )
                            ],
                        ],
                        sep,
                        title=f"{pair.name}: {entry.name} at {fig_start / track.sample_rate:.1f} s; "
                        f"query from {q_from}",
                    )
                )
    files.append(write_csv(out / "zeroshot.csv", rows))
    summary = []
    for pair in pairs:
        sub = [r for r in rows if r["pair"] == pair.name]
        if not sub:
            continue
        mix = nanmedian([r["SDR"] for r in sub if r["latent"] == "mixture (reference)"])
        for latent in dict.fromkeys(r["latent"] for r in sub):
            sdr = nanmedian([r["SDR"] for r in sub if r["latent"] == latent])
            n = len([r for r in sub if r["latent"] == latent])
            summary.append(
                [pair.name, latent, n, sdr, sdr - mix if latent != "mixture (reference)" else 0.0]
            )
    sources = sorted({r["query_from"].split(":")[0] for r in rows})
    text = f"""# Experiment: zero-shot sub-class targeting (paper section 7.2)

Model: `{ctx.model_name}` ({training_note(sep)}). Data: {ctx.dataset}.
Each mixture is made of the listed stems of one test track only (whole track); the query is the
loudest {
        sep.model.config.audio.segment_seconds:.2f} s excerpt of the same fine stem from another test track
(query sources used here: {", ".join(sources) or "none"}). Scores: median SDR over 1 s frames, then
over tracks, target vs rest, with {
        "fast-bss-eval (validation only)" if ctx.fast else "museval (BSSEval v4)"
    }.

{
        md_table(["pair", "latent", "tracks", "median SDR (dB)", "gain over mixture (dB)"], summary)
        if summary
        else "No pair could be measured on this data."
    }

{chr(10).join(notes)}

Figures (query | mixture | estimate | truth, one excerpt of the first track of each pair):
{
        ", ".join(f"`{f.name}`" for f in files if f.suffix == ".png") or "none"
    }. Per-track numbers: `zeroshot.csv`.
"""
    files.append(write_md(out / "zeroshot.md", text))
    return files


def _file(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label.lower())
