"""Latent interpolation between two class means (paper section 7.3).

The latent z(alpha) = slerp(z_from, z_to, alpha) separates every test track that holds both
classes, for each alpha (the paper's 0, 0.3, 0.5, 0.7, 1 by default). How much of each true source
is in an output is measured by a least-squares fit of the estimate on the track's true class
signals, over the whole track and all channels:

    estimate ~= sum_k g_k * s_k + e,

where s_k is the sum of the stems of coarse class k. The **gain** g_k says how much of class k
passes through (1: untouched, 0: removed); the **energy share** of class k is
g_k^2 |s_k|^2 / sum_j g_j^2 |s_j|^2. The table gives the median over tracks for each alpha, and the
summary says whether the gains of the two end classes move monotonically with alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aqsep.data.track import TrackAudio
from aqsep.errors import QueryError
from aqsep.experiments.common import (
    Context,
    excerpt,
    md_table,
    nanmedian,
    new_figure,
    palette,
    plot_spectrograms,
    save_figure,
    window_samples,
    write_csv,
    write_md,
)
from aqsep.query import slerp

NAME = "interpolate"
ALPHAS = (0.0, 0.3, 0.5, 0.7, 1.0)
TOLERANCE = 0.02  # gain steps smaller than this are not counted against monotonicity


def parse_alphas(text: str | None) -> tuple[float, ...]:
    if not text:
        return ALPHAS
    try:
        alphas = tuple(sorted(float(a) for a in text.split(",") if a.strip()))
    except ValueError:
        raise QueryError(f"alphas must be numbers in [0, 1], got {text!r}") from None
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):  # NaN fails too
        raise QueryError(f"alphas must be numbers in [0, 1], got {text!r}")
    return alphas


def class_gains(
    est: np.ndarray, track: TrackAudio, classes: list[str]
) -> dict[str, tuple[float, float]]:
    """``{class: (gain, energy share)}`` from the least-squares fit described in the module docstring."""
    sources = [track.source(c) for c in classes]
    k = len(classes)
    gram, proj = np.zeros((k, k)), np.zeros(k)
    step = 1 << 18  # normal equations accumulated block by block: memory stays flat for long tracks
    for lo in range(0, track.frames, step):
        basis = np.stack([s[:, lo : lo + step].reshape(-1) for s in sources], axis=1).astype(
            np.float64
        )
        gram += basis.T @ basis
        proj += basis.T @ est[:, lo : lo + step].reshape(-1).astype(np.float64)
    g = np.linalg.lstsq(gram, proj, rcond=None)[0]
    energy = g**2 * np.diag(gram)
    share = energy / max(float(energy.sum()), 1e-20)
    return {c: (float(g[i]), float(share[i])) for i, c in enumerate(classes)}


def _both_active(track: TrackAudio, a: str, b: str, win: int) -> int:
    """Start of the window where the quieter of the two classes is loudest."""
    sa, sb = track.source(a), track.source(b)
    hop = max(1, win // 2)
    starts = list(range(0, max(1, track.frames - win + 1), hop))
    level = [
        min(float(np.mean(sa[:, s : s + win] ** 2)), float(np.mean(sb[:, s : s + win] ** 2)))
        for s in starts
    ]
    return starts[int(np.argmax(level))]


def trend(values: list[float], increasing: bool) -> str:
    """Whether ``values`` rise (or fall) overall by more than TOLERANCE, and whether monotonically."""
    sign = 1.0 if increasing else -1.0
    steps = sign * np.diff(values)
    word = "rises" if increasing else "falls"
    if len(values) < 2 or sign * (values[-1] - values[0]) <= TOLERANCE:
        return f"does NOT {word[:-1]}"
    return (
        f"{word} monotonically"
        if bool(np.all(steps >= -TOLERANCE))
        else f"{word}, but not monotonically"
    )


def _class_option(ctx: Context, key: str, default: str) -> str:
    """A class named by an option: ``default`` when it is not given, never when it is empty."""
    value = ctx.options.get(key)
    if value is None:
        return default
    if not str(value).strip():
        raise QueryError(f"an empty class name was given as the {key} class; give a class name")
    return str(value).strip()


def run(ctx: Context) -> list[Path]:
    sep = ctx.separator
    a, b = _class_option(ctx, "source", "vocals"), _class_option(ctx, "dest", "drums")
    alphas = parse_alphas(ctx.options.get("alphas"))
    za, zb = sep.class_latent(a), sep.class_latent(b)
    tracks = [e for e in ctx.tracks if e.members(a) and e.members(b)]
    out = ctx.out_dir
    if not tracks:
        text = f"# Experiment: latent interpolation {a} -> {b}\n\nNo track of {ctx.dataset} holds both {a} and {b}.\n"
        return [write_md(out / "interpolate.md", text)]
    rows: list[dict[str, Any]] = []
    files: list[Path] = []
    all_classes: list[str] = []
    for i, entry in enumerate(tracks):
        ctx.notify({"stage": "track", "track": entry.name, "index": i, "total": len(tracks)})
        track = entry.load()
        classes = sorted({track.labels[s].coarse for s in track.stems})
        all_classes += [c for c in classes if c not in all_classes]
        panels = []
        win = window_samples(sep, track.sample_rate)
        start = _both_active(track, a, b, win) if i == 0 else 0
        for alpha in alphas:
            est = sep.separate(track.mixture, track.sample_rate, slerp(za, zb, alpha))["target"]
            for c, (g, share) in class_gains(est, track, classes).items():
                rows.append(
                    {
                        "track": entry.name,
                        "alpha": alpha,
                        "class": c,
                        "gain": g,
                        "energy_share": share,
                    }
                )
            if i == 0:
                panels.append((f"alpha {alpha:g}", excerpt(est, start, win), track.sample_rate))
        if i == 0:
            panels.insert(0, ("mixture", excerpt(track.mixture, start, win), track.sample_rate))
            files.append(
                plot_spectrograms(
                    out / "interpolate_spectrograms.png",
                    panels,
                    sep,
                    title=f"slerp {a} -> {b}: {entry.name} at {start / track.sample_rate:.1f} s",
                )
            )
    med = {
        (al, c): (
            nanmedian([r["gain"] for r in rows if r["alpha"] == al and r["class"] == c]),
            nanmedian([r["energy_share"] for r in rows if r["alpha"] == al and r["class"] == c]),
        )
        for al in alphas
        for c in all_classes
    }
    colours = palette(all_classes)
    fig = new_figure(5.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for c in all_classes:
        ax.plot(alphas, [med[(al, c)][0] for al in alphas], marker="o", color=colours[c], label=c)
    ax.set_xlabel(f"alpha ({a} -> {b})")
    ax.set_ylabel("gain of the class in the output")
    ax.set_title(f"least-squares class gains, median over {len(tracks)} tracks", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    files.append(save_figure(fig, out / "interpolate_gains.png"))
    table_rows = [
        {"alpha": al, "class": c, "gain": med[(al, c)][0], "energy_share": med[(al, c)][1]}
        for al in alphas
        for c in all_classes
    ]
    files += [
        write_csv(out / "interpolate.csv", table_rows),
        write_csv(out / "interpolate_tracks.csv", rows),
    ]
    gains_a = [med[(al, a)][0] for al in alphas]
    gains_b = [med[(al, b)][0] for al in alphas]
    steps = {
        c: float(np.max(np.abs(np.diff([med[(al, c)][0] for al in alphas]))))
        if len(alphas) > 1
        else 0.0
        for c in all_classes
    }
    header = ["alpha", *[f"{c} gain" for c in all_classes], *[f"{c} share" for c in all_classes]]
    body = [
        [al, *[med[(al, c)][0] for c in all_classes], *[med[(al, c)][1] for c in all_classes]]
        for al in alphas
    ]
    text = f"""# Experiment: latent interpolation {a} -> {b} (paper section 7.3)

Model: `{ctx.model_name}`. Data: {ctx.dataset}; {len(tracks)} tracks hold both {a} and {b}.
z(alpha) = slerp(class mean of {a}, class mean of {b}, alpha). Gain g_k: least-squares coefficient
of the true class-k signal in the estimate (estimate ~ sum_k g_k s_k + e, whole track, all
channels; 1 = passes untouched, 0 = removed). Share: g_k^2 |s_k|^2 / sum_j g_j^2 |s_j|^2. Medians
over tracks.

{md_table(header, body)}

- {a} gain {trend(gains_a, False)} with alpha ({gains_a[0]:.2f} -> {gains_a[-1]:.2f}); {b} gain
  {trend(gains_b, True)} ({gains_b[0]:.2f} -> {gains_b[-1]:.2f}) (changes under {TOLERANCE} count as flat).
- Largest change of a class gain between consecutive alphas: {", ".join(f"{c} {v:.2f}" for c, v in steps.items())}.

Figures: `interpolate_spectrograms.png` (mixture and the estimate at each alpha, one excerpt),
`interpolate_gains.png`. Numbers: `interpolate.csv` (medians), `interpolate_tracks.csv` (per track).
"""
    files.append(write_md(out / "interpolate.md", text))
    return files
