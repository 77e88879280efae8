"""t-SNE of the latent space (paper section 7.1), with numbers that say how well classes cluster.

Every stem of every test track is cut into excerpts of the model's segment length; up to
``windows`` non-silent excerpts per stem (evenly spread over the track) are encoded, and the
Query-net means (mu) are embedded in 2-D with t-SNE, coloured by coarse class (and by fine label).
A picture alone proves nothing, so two numbers are measured in the latent space itself (not in the
2-D embedding): the accuracy of a k-nearest-neighbour classifier under cross-validation grouped by
track (excerpts of one track are never both fitted and scored), next to chance; and the
silhouette score (-1..1, > 0 when points sit closer to their own class than to the next one).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.errors import DataError, QueryError
from aqsep.experiments.common import (
    Context,
    active_windows,
    embed_2d,
    md_table,
    new_figure,
    palette,
    save_figure,
    window_samples,
    write_csv,
    write_md,
)
from aqsep.query import encode_clip

NAME = "tsne"
DEFAULT_WINDOWS = 6


def collect_latents(ctx: Context, windows: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """mu of up to ``windows`` non-silent excerpts per stem: ``(n, latent_dim)`` and one row each."""
    sep = ctx.separator
    rows: list[dict[str, Any]] = []
    latents = []
    for i, entry in enumerate(ctx.tracks):
        ctx.notify({"stage": "track", "track": entry.name, "index": i, "total": len(ctx.tracks)})
        track = entry.load()
        win = window_samples(sep, track.sample_rate)
        for stem, audio in track.stems.items():
            starts = active_windows(audio, win)
            if len(starts) > windows:
                starts = [
                    starts[j] for j in np.linspace(0, len(starts) - 1, windows).round().astype(int)
                ]
            for s in starts:
                try:
                    z = encode_clip(
                        sep.model, audio[:, s : s + win], track.sample_rate, device=sep.device
                    )
                except QueryError:
                    continue  # silent once resampled to the model's rate
                latents.append(z)
                lab = track.labels[stem]
                rows.append(
                    {
                        "track": entry.name,
                        "stem": stem,
                        "fine": lab.fine or stem,
                        "coarse": lab.coarse,
                        "start_s": s / track.sample_rate,
                    }
                )
    if not latents:
        raise DataError("no non-silent excerpt found in the tracks: nothing to embed")
    return np.stack(latents), rows


def cluster_scores(
    x: np.ndarray, labels: list[str], groups: list[str], seed: int
) -> dict[str, Any]:
    """k-NN accuracy (cross-validated, grouped by track), chance levels and silhouette score."""
    from sklearn.metrics import balanced_accuracy_score, silhouette_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    y = np.array(labels)
    classes, counts = np.unique(y, return_counts=True)
    out: dict[str, Any] = {
        "points": len(y),
        "classes": len(classes),
        "chance_majority": float(counts.max() / counts.sum()),
        "chance_balanced": 1.0 / len(classes),
        "knn_accuracy": math.nan,
        "knn_balanced_accuracy": math.nan,
        "silhouette": math.nan,
        "cv": "n/a",
    }
    if len(classes) < 2:
        return out
    if 2 <= len(classes) <= len(y) - 1:
        out["silhouette"] = float(silhouette_score(x, y))
    n_groups = len(set(groups))
    if n_groups >= 2:
        folds = min(5, n_groups)
        cv: Any = GroupKFold(n_splits=folds)
        out["cv"] = f"{folds}-fold, grouped by track"
    elif counts.min() >= 2:
        folds = min(5, int(counts.min()))
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        out["cv"] = f"{folds}-fold stratified (one track only: excerpts of it on both sides)"
    else:
        return out
    k = max(1, min(5, len(y) - math.ceil(len(y) / folds) - 1))
    pred = cross_val_predict(
        KNeighborsClassifier(n_neighbors=k),
        x,
        y,
        cv=cv,
        groups=list(groups) if n_groups >= 2 else None,
    )
    out["knn_accuracy"] = float((pred == y).mean())
    out["knn_balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
    out["k"] = k
    return out


def scatter(
    path: Path,
    xy: np.ndarray,
    labels: list[str],
    title: str,
    xlabel: str = "",
    marks: dict[str, np.ndarray] | None = None,
) -> Path:
    names = sorted(set(labels))
    colours = palette(names)
    fig = new_figure(5.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    arr = np.array(labels)
    for n in names:
        sel = arr == n
        ax.scatter(
            xy[sel, 0],
            xy[sel, 1],
            s=10,
            color=colours[n],
            label=f"{n} ({int(sel.sum())})",
            alpha=0.8,
        )
    for n, p in (marks or {}).items():
        ax.scatter(
            [p[0]],
            [p[1]],
            marker="*",
            s=160,
            color=colours.get(n, "black"),
            edgecolor="black",
            linewidth=0.8,
        )
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.2, loc="best", frameon=False)
    return save_figure(fig, path)


def run(ctx: Context) -> list[Path]:
    given = ctx.options.get("windows")
    windows = DEFAULT_WINDOWS if given is None else given
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise QueryError(f"windows (excerpts per stem) must be a whole number >= 1, got {given!r}")
    x, rows = collect_latents(ctx, windows)
    coarse = [r["coarse"] for r in rows]
    fine = [r["fine"] for r in rows]
    groups = [r["track"] for r in rows]
    scores = [{"level": "coarse", **cluster_scores(x, coarse, groups, ctx.seed)}]
    if len(set(fine)) > len(set(coarse)):
        scores.append({"level": "fine", **cluster_scores(x, fine, groups, ctx.seed)})
    # class means stored with the model are embedded with the excerpts and drawn as stars
    means = {
        c: ctx.separator.class_latent(c) for c in sorted(set(coarse)) if c in ctx.separator.classes
    }
    xy_all, method = embed_2d(np.concatenate([x, *[m[None] for m in means.values()]]), ctx.seed)
    xy, xy_means = xy_all[: len(x)], dict(zip(means, xy_all[len(x) :], strict=True))
    for r, p in zip(rows, xy, strict=True):
        r["x"], r["y"] = float(p[0]), float(p[1])
    out = ctx.out_dir
    files = [
        scatter(
            out / "tsne_coarse.png",
            xy,
            coarse,
            "Query-net latents by coarse class (stars: class means)",
            method,
            xy_means,
        )
    ]
    if len(set(fine)) > len(set(coarse)):
        files.append(
            scatter(out / "tsne_fine.png", xy, fine, "Query-net latents by fine label", method)
        )
    latent_rows = [
        {
            **{k: r[k] for k in ("track", "stem", "fine", "coarse", "start_s")},
            **{f"mu{i}": float(v) for i, v in enumerate(z)},
        }
        for r, z in zip(rows, x, strict=True)
    ]
    files += [
        write_csv(out / "tsne_points.csv", rows),
        write_csv(out / "tsne_latents.csv", latent_rows),
        write_csv(out / "tsne_scores.csv", scores),
    ]
    table = md_table(
        [
            "labels",
            "points",
            "classes",
            "k-NN accuracy",
            "chance (majority)",
            "k-NN balanced acc.",
            "chance (balanced)",
            "silhouette",
            "cross-validation",
        ],
        [
            [
                s["level"],
                s["points"],
                s["classes"],
                s["knn_accuracy"],
                s["chance_majority"],
                s["knn_balanced_accuracy"],
                s["chance_balanced"],
                s["silhouette"],
                s["cv"],
            ]
            for s in scores
        ],
    )
    verdict = []
    for s in scores:
        if math.isfinite(s["knn_balanced_accuracy"]):
            better = s["knn_balanced_accuracy"] > s["chance_balanced"] + 0.1
            verdict.append(
                f"- {s['level']} labels: k-NN balanced accuracy {s['knn_balanced_accuracy']:.2f} vs "
                f"chance {s['chance_balanced']:.2f}: classes {'do' if better else 'do not clearly'} "
                "group in latent space."
            )
    text = f"""# Experiment: t-SNE of the latent space (paper section 7.1)

Model: `{ctx.model_name}`. Data: {ctx.dataset}. Up to {windows} non-silent excerpts of
{ctx.separator.model.config.audio.segment_seconds:.2f} s per stem, encoded with the Query-net (mu): {len(rows)} points
from {len(set(groups))} tracks. Embedding: {method}, seed {ctx.seed}.

Clustering measured in the latent space (not in the 2-D picture): k-NN class accuracy under
cross-validation grouped by track, and the silhouette score (euclidean).

{table}

{chr(10).join(verdict)}

Figures: {", ".join(f"`{f.name}`" for f in files if f.suffix == ".png")}. Numbers: `tsne_points.csv` (2-D
coordinates), `tsne_latents.csv` (the latents), `tsne_scores.csv`.
"""
    files.append(write_md(out / "tsne.md", text))
    return files
