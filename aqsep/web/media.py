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

    The file is read one column at a time (memory does not grow with its length). Each column's
    spectrum is the mean power of :func:`aqsep.plots.log_spectrogram` over the column's span.

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
        span_frames = last - first
        columns = max(1, min(columns, span_frames))
        n_fft = 1 << max(8, round(math.log2(0.046 * sr)))  # ~46 ms: 2048 at 44.1 kHz
        fmin, fmax = 40.0, min(sr / 2, 16000.0)
        where = _log_rows(rows, n_fft, sr, fmin, fmax)
        peaks = np.zeros((columns, 2), dtype=np.float32)
        power = np.zeros((columns, rows), dtype=np.float64)
        for c in range(columns):
            s = first + c * span_frames // columns
            e = first + (c + 1) * span_frames // columns
            span = max(e - s, n_fft)
            at = max(0, (s + e) // 2 - span // 2)
            block = to_mono(reader.read(at, span))
            inside = block[s - at : e - at] if e > s else block[:1]
            peaks[c] = inside.min(), inside.max()
            db, _, _ = log_spectrogram(block, sr, n_fft=n_fft, hop=max(n_fft // 2, span // 8))
            mean_power = np.power(10.0, db / 10).mean(axis=-1)
            power[c] = np.interp(where, np.arange(mean_power.shape[0]), mean_power)
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
