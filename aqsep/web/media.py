"""What the web page needs from audio files: their type told by content, a picture to draw, and
copies in another format for download.

Nothing here separates: that is :class:`aqsep.Separator`'s job.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np

from aqsep.audio import AtomicAudioWriter, AudioReader, to_mono
from aqsep.plots import log_spectrogram

SNIFF_BYTES = 16  # enough for every signature below
# The most STFT frames an overview transforms at once (memory: frames x n_fft float64 numbers,
# 32 MB at 44.1 kHz).
MAX_FRAMES = 2048


def sniff_audio(head: bytes) -> str | None:
    """The kind of audio file ``head`` (its first bytes) starts like, as an extension, or None.

    Only the content counts: a text file named ``song.wav`` is None, a WAV file named ``notes.txt``
    is ``"wav"``.
    """
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if len(head) >= 8 and head[4:8] == b"ftyp":  # ISO base media: mp4, m4a
        return "m4a"
    if head[:3] == b"ID3":  # an ID3v2 tag in front of MPEG audio
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS: 12 sync bits, then layer 00
            return "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # MPEG audio frame sync, layer I-III
            return "mp3"
    return None


def _log_rows(rows: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> np.ndarray:
    """Fractional STFT bin of each display row, log-spaced from ``fmax`` (row 0) down to ``fmin``."""
    freqs = np.geomspace(fmax, fmin, rows)
    return freqs * n_fft / sample_rate


def overview(
    path: str | Path,
    *,
    columns: int = 1000,
    rows: int = 160,
    floor_db: float = 80.0,
    start: float = 0.0,
    end: float | None = None,
    top_db: float | None = None,
) -> dict:
    """Waveform peaks and a log-frequency spectrogram of a file, or of its seconds ``start`` to
    ``end`` (a zoomed view), small enough to send to a page.

    The file is read a group of columns at a time (memory does not grow with its length). Each
    column's spectrum is the mean power of the frames of :func:`aqsep.plots.log_spectrogram`
    centred in it (4 to 8 a column).

    Args:
        top_db: the level drawn brightest (default: the loudest cell), so that a zoomed view
            can share the colours of the whole song's (pass the whole view's ``top_db``).

    Returns:
        ``{"seconds", "sample_rate", "channels", "start", "end", "columns", "peaks",
        "spectrogram"}``: ``seconds`` is the file's length and ``start``/``end`` the span drawn;
        ``peaks`` is ``[min_0, max_0, min_1, max_1, ...]`` of the mono mix per column;
        ``spectrogram`` holds ``width`` (= columns), ``height`` (= rows, highest frequency
        first), ``fmin``, ``fmax``, ``top_db`` and ``data``, the levels as base64 bytes (0 =
        ``floor_db`` below ``top_db``, 255 = ``top_db``), row by row.
    """
    with AudioReader(path) as reader:
        sr, frames = reader.sample_rate, reader.frames
        first = min(max(0, round(start * sr)), max(0, frames - 1))
        last = frames if end is None else min(frames, max(first + 1, round(end * sr)))
        columns = max(1, min(columns, last - first))
        n_fft = 1 << max(8, round(math.log2(0.046 * sr)))  # ~46 ms: 2048 at 44.1 kHz
        fmin, fmax = 40.0, min(sr / 2, 16000.0)
        bounds = first + np.arange(columns + 1, dtype=np.int64) * (last - first) // columns
        width = (last - first) / columns  # samples a column
        # 4 to 8 frames a column, at most half a window apart
        hop = max(1, min(n_fft // 2, int(width) // 4), int(width) // 8)
        group = max(1, int(MAX_FRAMES * hop // width))  # columns read and transformed at once
        peaks = np.zeros((columns, 2), dtype=np.float32)
        power = np.zeros((columns, n_fft // 2 + 1), dtype=np.float64)
        for g0 in range(0, columns, group):
            g1 = min(columns, g0 + group)
            lo = max(0, int(bounds[g0]) - n_fft // 2)  # with the audio around it, not zeros
            hi = min(frames, int(bounds[g1]) + n_fft // 2)
            block = to_mono(reader.read(lo, hi - lo))
            edges = bounds[g0 : g1 + 1] - lo
            inside = block[edges[0] : edges[-1]]
            peaks[g0:g1, 0] = np.minimum.reduceat(inside, edges[:-1] - edges[0])
            peaks[g0:g1, 1] = np.maximum.reduceat(inside, edges[:-1] - edges[0])
            db, _, _ = log_spectrogram(block, sr, n_fft=n_fft, hop=hop)
            column = np.searchsorted(edges, np.arange(db.shape[1]) * hop, side="right") - 1
            keep = (column >= 0) & (column < g1 - g0)
            column = column[keep]  # in order: each column's frames follow one another
            counts = np.bincount(column, minlength=g1 - g0)
            starts = np.searchsorted(column, np.arange(g1 - g0))
            sums = np.add.reduceat(
                np.power(10.0, db[:, keep] / 10), np.minimum(starts, len(column) - 1), axis=1
            )
            power[g0:g1] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).T
    where = _log_rows(rows, n_fft, sr, fmin, fmax)  # each row's fractional bin
    below = np.clip(np.floor(where).astype(int), 0, power.shape[1] - 2)
    share = np.clip(where - below, 0.0, 1.0)
    power = power[:, below] * (1 - share) + power[:, below + 1] * share  # (columns, rows)
    db = 10 * np.log10(power + 1e-12)
    top = float(db.max()) if top_db is None else float(top_db)
    level = np.clip((db - (top - floor_db)) / floor_db, 0.0, 1.0)
    image = np.round(level.T * 255).astype(np.uint8)  # (rows, columns)
    return {
        "seconds": frames / sr,
        "sample_rate": sr,
        "channels": reader.channels,
        "start": first / sr,
        "end": last / sr,
        "columns": columns,
        "peaks": [round(float(v), 4) for v in peaks.reshape(-1)],
        "spectrogram": {
            "width": columns,
            "height": rows,
            "fmin": fmin,
            "fmax": fmax,
            "top_db": round(top, 3),
            "data": base64.b64encode(image.tobytes()).decode("ascii"),
        },
    }


def convert(src: str | Path, dst: str | Path, fmt: str, *, bits: str = "16") -> Path:
    """Copy ``src`` to ``dst`` as ``fmt`` (wav or flac) at its own rate and channels, atomically."""
    with AudioReader(src) as reader:
        with AtomicAudioWriter(
            dst, reader.sample_rate, reader.channels, bits=bits, fmt=fmt, frames=reader.frames
        ) as w:
            for block in reader.blocks(1 << 18):
                w.write(block)
    return Path(dst)
