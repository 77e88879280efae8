"""What the experiments share: their context, figures, tables and a few signal helpers.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas (no pyplot
state, no display needed) and saved small (dpi 100).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aqsep.api import Separator
from aqsep.audio import resample, rms_db, to_mono
from aqsep.data.track import Track
from aqsep.errors import QueryError
from aqsep.evaluate import Progress, Scores, coarse_targets, evaluate_tracks
from aqsep.plots import log_spectrogram
from aqsep.query import SILENCE_DB, window_length

DPI = 100


@dataclass
class Context:
    """Everything an experiment needs: the model, the tracks, where to write, and its options."""

    separator: Separator
    tracks: list[Track]
    out_dir: Path
    split: str = "test"
    data_id: str = ""
    dataset: str = ""  # human-readable name of the data, written next to every number
    seed: int = 0
    fast: bool = False
    refine: int = 1
    targets: list[str] | None = None
    progress: Progress | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def scores_dir(self) -> Path:
        """Per-track scores shared by the experiments that evaluate (resumable caches)."""
        return self.out_dir / "scores"

    @property
    def model_name(self) -> str:
        path = self.separator.released.path
        return str(path) if path is not None else "<in-memory model>"

    def class_targets(self) -> tuple[list[str], list[str]]:
        """(targets to use, coarse classes of the data that the model has no latent for).

        Raises :class:`QueryError` when no class of the data has a latent in the model.
        """
        if self.targets:
            return list(self.targets), []
        known = set(self.separator.classes)
        present = coarse_targets(self.tracks)
        targets = [t for t in present if t in known]
        if not targets:
            raise QueryError(
                "no class of the data has a class latent in the model "
                f"(it knows: {', '.join(self.separator.classes)})"
            )
        return targets, [t for t in present if t not in known]

    def evaluate(self, targets: list[str], methods: list[str]) -> Scores:
        """Scores of ``methods`` for ``targets`` on every track, cached under :attr:`scores_dir`."""
        return evaluate_tracks(
            self.separator,
            self.tracks,
            targets,
            methods,
            refine=self.refine,
            fast=self.fast,
            out_dir=self.scores_dir,
            split=self.split,
            data_id=self.data_id,
            progress=self.progress,
        )

    def notify(self, info: dict) -> None:
        if self.progress is not None:
            self.progress(info)


def training_note(separator: Separator) -> str:
    """What the model's metadata says about the level (coarse/fine) of its training targets."""
    meta = separator.released.metadata or {}
    for key in ("target_level", "level", "train_level"):
        if key in meta:
            return f"training targets: {meta[key]} (from the model's metadata)"
    train = meta.get("train") if isinstance(meta.get("train"), dict) else None
    if train:
        for key in ("target_level", "level"):
            if key in train:
                return f"training targets: {train[key]} (from the model's metadata)"
    return "the model's metadata does not record the level of its training targets"


# ---- tables ---------------------------------------------------------------------------------------
def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v) for k, v in r.items()})
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.4f}"
    return v


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(fmt(v) for v in r) + " |")
    return "\n".join(out)


def fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
    return str(v)


def write_md(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
    return path


def nanmedian(values: Sequence[float] | np.ndarray) -> float:
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


# ---- figures --------------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def spectrogram_db(
    audio: np.ndarray, sample_rate: int, separator: Separator
) -> tuple[np.ndarray, float, float]:
    """:func:`aqsep.plots.log_spectrogram` of the mono mix at the model's rate, on the model's STFT
    size and hop: dB ``(bins, frames)``, seconds, top Hz."""
    a = separator.model.config.audio
    mono = resample(to_mono(np.atleast_2d(audio))[None], sample_rate, a.sample_rate)[0]
    db, _, _ = log_spectrogram(mono, a.sample_rate, n_fft=a.n_fft, hop=a.hop_length)
    return db, len(mono) / a.sample_rate, a.sample_rate / 2


def plot_spectrograms(
    path: Path, panels: Sequence[tuple[str, np.ndarray, int]], separator: Separator, title: str = ""
) -> Path:
    """One row of spectrograms ``(title, audio, sample_rate)`` on a shared dB scale."""
    specs = [(t, *spectrogram_db(x, sr, separator)) for t, x, sr in panels]
    vmax = max(float(s.max()) for _, s, _, _ in specs)
    fig = new_figure(2.4 * len(specs), 2.6)
    for i, (name, spec, seconds, top) in enumerate(specs):
        ax = fig.add_subplot(1, len(specs), i + 1)
        ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmax - 80,
            vmax=vmax,
            extent=(0, seconds, 0, top / 1000),
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("s", fontsize=8)
        if i == 0:
            ax.set_ylabel("kHz", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def embed_2d(x: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """2-D t-SNE of ``(n, dim)`` points (PCA when there are too few points for t-SNE)."""
    n = x.shape[0]
    if n < 5:
        from sklearn.decomposition import PCA

        k = min(2, n, x.shape[1])
        xy = PCA(n_components=k).fit_transform(x) if n > 1 else np.zeros((n, 2))
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        return xy, "PCA (too few points for t-SNE)"
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x), f"t-SNE (perplexity {perplexity:g})"


def palette(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


# ---- signals --------------------------------------------------------------------------------------
def window_samples(separator: Separator, sample_rate: int) -> int:
    """The model's excerpt length, in samples at ``sample_rate``."""
    return window_length(separator.model, sample_rate)


def active_windows(audio: np.ndarray, win: int, silence_db: float = SILENCE_DB) -> list[int]:
    """Starts of the full windows of ``(channels, samples)`` whose mono mix is not below
    ``silence_db`` (the silence rule of :mod:`aqsep.query`)."""
    full = audio.shape[-1] // win
    mono = to_mono(np.atleast_2d(audio))[: full * win].reshape(full, win)
    levels = rms_db(mono, axis=-1)
    return [i * win for i in range(full) if levels[i] >= silence_db]


def loudest_window(audio: np.ndarray, win: int, exclude: tuple[int, int] | None = None) -> int:
    """Start of the loudest full window (hop of half a window), optionally outside ``exclude``."""
    hop = max(1, win // 2)
    starts = list(range(0, max(1, audio.shape[-1] - win + 1), hop))
    if exclude is not None:
        lo, hi = exclude
        kept = [s for s in starts if s + win <= lo or s >= hi]
        starts = kept or starts
    levels = [float(np.mean(np.square(audio[..., s : s + win], dtype=np.float64))) for s in starts]
    return starts[int(np.argmax(levels))]


def excerpt(audio: np.ndarray, start: int, win: int) -> np.ndarray:
    out = np.zeros((audio.shape[0], win), dtype=np.float32)
    block = audio[:, start : start + win]
    out[:, : block.shape[1]] = block
    return out
