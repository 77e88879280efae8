"""Figures: stacked log-magnitude spectrograms of audio clips (mixtures, queries, estimates...).

>>> from aqsep.plots import save_spectrograms
>>> save_spectrograms("out.png", [("mixture", mix, 22050), ("estimate", est, 22050)])

Rendering uses matplotlib's non-interactive Agg backend, so it works without a display.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["log_spectrogram", "save_spectrograms"]


def log_spectrogram(
    audio: np.ndarray, sample_rate: int, *, n_fft: int = 1024, hop: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitude spectrogram in dB (Hann window), of the channel mean of ``audio``: the project's
    one display spectrogram, drawn by :func:`save_spectrograms`, the experiments' figures
    (:func:`aqsep.experiments.common.plot_spectrograms`) and the web page's overview
    (:func:`aqsep.web.media.overview`). Plain numpy: the page's server needs no PyTorch for it.

    Args:
        audio: ``(samples,)`` or ``(channels, samples)``.
    Returns:
        ``(db, times, freqs)``: ``db`` is ``(bins, frames)``, relative to full scale (a full-scale
        sine reads about 0 dB); ``times`` are frame centres in seconds, ``freqs`` in Hz.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    elif x.ndim != 1:
        raise ValueError(f"audio must be (samples,) or (channels, samples), got shape {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if n_fft < 2 or hop < 1:
        raise ValueError(f"n_fft must be at least 2 and hop at least 1, got {n_fft} and {hop}")
    x = np.nan_to_num(x)
    pad = n_fft // 2
    x = np.pad(x, (pad, pad + n_fft))  # centred frames; room for a last partial frame
    frames = max(1, (len(x) - n_fft - pad) // hop + 1)
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft + 1)[:-1]
    spec = np.abs(np.fft.rfft(x[index] * window, axis=1)).T
    db = 20 * np.log10(spec / (window.sum() / 2) + 1e-10)
    times = np.arange(frames) * hop / sample_rate
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    return db, times, freqs


def save_spectrograms(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray, int]],
    *,
    title: str | None = None,
    floor_db: float = -90.0,
    max_khz: float | None = None,
    n_fft: int = 1024,
    hop: int = 256,
    dpi: int = 100,
    width: float = 8.0,
    panel_height: float = 1.9,
    cmap: str = "magma",
) -> Path:
    """Write one PNG with a log-magnitude spectrogram per panel, stacked top to bottom.

    Args:
        path: the PNG to write (parent folders are created).
        panels: ``(label, audio, sample_rate)`` per panel; audio ``(samples,)`` or
            ``(channels, samples)`` (channels are averaged). Clips may differ in length and rate:
            every panel has its own time axis and all share one colour scale.
        title: a line above the first panel.
        floor_db: bottom of the colour scale, in dB relative to full scale (top: 0 dB).
        max_khz: highest frequency shown (default: half the highest sample rate).
        n_fft, hop: STFT size and hop in samples (Hann window).
        dpi, width, panel_height: figure resolution and size in inches.
        cmap: a matplotlib colour map; the PNG stores 224 of its levels and 32 greys.
    Returns:
        ``Path(path)``.
    """
    if not panels:
        raise ValueError("no panels to draw")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # a Figure without pyplot keeps no global state

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    top_khz = max_khz if max_khz is not None else max(sr for _, _, sr in panels) / 2000
    fig = Figure(figsize=(width, 0.6 + panel_height * len(panels)), dpi=dpi, layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    image = None
    for ax, (label, audio, sr) in zip(axes, panels, strict=True):
        db, times, freqs = log_spectrogram(audio, sr, n_fft=n_fft, hop=hop)
        duration = np.asarray(audio).shape[-1] / sr
        image = ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap=cmap,
            vmin=floor_db,
            vmax=0.0,
            extent=(0.0, max(duration, times[-1]), 0.0, freqs[-1] / 1000),
            interpolation="antialiased",
        )
        ax.set_ylim(0.0, top_khz)
        ax.set_ylabel("freq. (kHz)", fontsize=8)
        ax.set_xlabel("time (s)", fontsize=8, labelpad=1)
        ax.set_title(label, loc="left", fontsize=9)
        ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    assert image is not None
    bar = fig.colorbar(image, ax=list(axes), shrink=0.9, pad=0.01)
    bar.set_label("magnitude (dB re full scale)", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _write_palette_png(buffer, path, cmap)
    return path


def _write_palette_png(buffer: io.BytesIO, path: Path, cmap: str) -> None:
    """Store the figure with a 256-colour palette: 224 levels of the colour map and 32 greys (the
    text and axes), so nothing visible is lost and the file is 2-3x smaller than an RGBA PNG."""
    import matplotlib
    from PIL import Image  # a matplotlib dependency

    levels = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 224))[:, :3]
    greys = np.repeat(np.linspace(0.0, 1.0, 32)[:, None], 3, axis=1)
    colours = np.round(255 * np.concatenate([levels, greys])).astype(np.uint8)
    palette = Image.new("P", (1, 1))
    palette.putpalette(colours.flatten().tolist())
    buffer.seek(0)
    with Image.open(buffer) as image:
        indexed = image.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE)
    tmp = path.with_name(path.name + ".part")
    indexed.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
