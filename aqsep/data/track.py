"""What every kind of data set gives: :class:`Track` objects, read two ways.

A **track** is one multitrack recording: stems of equal length whose sum is the mixture. It is
listed without decoding audio, then read either

- for training, :meth:`Track.read`: excerpts at the model's sample rate, each stem averaged to
  mono (lazy: a seek and a read of the excerpt only);
- for evaluation, :meth:`Track.load`: the whole track at the file's own rate and channel count
  (:attr:`Track.native_rate`, :attr:`Track.channels`), as a :class:`TrackAudio` in memory.

A kind of data set (a stems folder, MUSDB18, MIR-1K...) is one module that subclasses
:class:`Track` for its layout and describes itself with a :class:`SourceReader`; the registry in
:mod:`aqsep.data` lists the readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aqsep.audio import resample

#: The split names of every data set. Which tracks a split holds is decided by each kind's own
#: layout; the rules are written in one place, :mod:`aqsep.data`'s docstring.
SPLITS = ("train", "valid", "test")
_RESAMPLE_CONTEXT = 64  # extra input samples on each side of a resampled excerpt


def norm_label(name: str) -> str:
    """Labels compare without case, spaces, hyphens or underscores ("Hi-Hat" == "hihat")."""
    return "".join(ch for ch in name.lower() if ch not in " -_")


@dataclass(frozen=True)
class StemLabel:
    """Labels of one stem at a given level: the name used as its class, and its coarse class."""

    name: str
    coarse: str
    fine: str | None = None

    def matches(self, target: str) -> bool:
        """Whether the stem belongs to ``target``: its name, fine label or coarse class."""
        key = norm_label(target)
        return key in {norm_label(n) for n in (self.name, self.coarse, self.fine) if n is not None}


class Track:
    """A multitrack: stems of equal length, listed without decoding audio.

    ``stems`` are the stem names of the track at its data set's level (they are also the class
    names of the stems), ``labels`` their coarse/fine labels. ``sample_rate`` and ``length`` are
    those of :meth:`read` (the model's rate); ``native_rate``, ``native_length`` and ``channels``
    those of :meth:`load` (the files' own). ``path`` is the folder or file the track comes from:
    it identifies the track across data sets given as different paths.
    """

    name: str
    path: Path
    stems: tuple[str, ...]
    labels: dict[str, StemLabel]
    sample_rate: int
    length: int  # samples at ``sample_rate``
    native_rate: int
    native_length: int  # samples at ``native_rate``
    channels: int  # channels of the files (each stem as :meth:`load` gives it)
    has_fine_labels: bool = False

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        """Stems ``(n_stems, length)`` float32 mono at ``sample_rate`` from sample ``start``.

        ``stems`` selects and orders stems by name (all of ``self.stems`` by default).
        """
        raise NotImplementedError

    def load(self) -> TrackAudio:
        """The whole track in memory at ``native_rate``, every stem ``(channels, native_length)``."""
        raise NotImplementedError

    def members(self, target: str) -> list[str]:
        """The stems that belong to ``target`` (see :meth:`StemLabel.matches`)."""
        return [s for s in self.stems if self.labels[s].matches(target)]

    def classes(self, level: str = "coarse") -> list[str]:
        """The classes of the track's stems: ``"coarse"`` classes or ``"fine"`` labels."""
        return sorted(
            {
                (lab.fine or lab.name) if level == "fine" else lab.coarse
                for lab in self.labels.values()
            }
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, stems={list(self.stems)}, length={self.length})"
        )


@dataclass
class TrackAudio:
    """A track decoded whole at its own rate: stems ``(channels, samples)`` float32.

    The mixture is the sum of the stems (for every data set: a data set's own mixture file or
    stream may differ from that sum after mastering, and scoring against stems that do not add up
    to the input would blame the model for it).
    """

    name: str
    sample_rate: int
    stems: dict[str, np.ndarray]
    labels: dict[str, StemLabel]
    _mixture: np.ndarray | None = field(default=None, repr=False)

    @property
    def mixture(self) -> np.ndarray:
        if self._mixture is None:
            parts = iter(self.stems.values())
            mix = next(parts).astype(np.float32, copy=True)
            for x in parts:
                mix += x
            self._mixture = mix
        return self._mixture

    @property
    def channels(self) -> int:
        return self.mixture.shape[0]

    @property
    def frames(self) -> int:
        return self.mixture.shape[1]

    def members(self, target: str) -> list[str]:
        return [s for s in self.stems if self.labels[s].matches(target)]

    def source(self, target: str, stems: Iterable[str] | None = None) -> np.ndarray:
        """Sum of the stems of ``target`` (or of the given stems); zeros if there are none."""
        names = self.members(target) if stems is None else list(stems)
        out = np.zeros_like(self.mixture)
        for s in names:
            out += self.stems[s]
        return out

    def subset(self, stems: Sequence[str], name: str | None = None) -> TrackAudio:
        """A track made of some of the stems only (its mixture is their sum)."""
        return TrackAudio(
            name or self.name,
            self.sample_rate,
            {s: self.stems[s] for s in stems},
            {s: self.labels[s] for s in stems},
        )


class InMemoryTrack(Track):
    """A track decoded once into memory at the model rate (small data sets, slow decoders)."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self.name = track.name
        self.path = track.path
        self.stems = track.stems
        self.labels = track.labels
        self.sample_rate = track.sample_rate
        self.length = track.length
        self.native_rate = track.native_rate
        self.native_length = track.native_length
        self.channels = track.channels
        self.has_fine_labels = track.has_fine_labels
        self.audio = track.read(0, track.length)

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        rows = slice(None) if stems is None else [self.stems.index(s) for s in stems]
        out = np.zeros((self.audio[rows].shape[0], length), dtype=np.float32)
        lo, hi = max(start, 0), min(start + length, self.length)
        if hi > lo:
            out[:, lo - start : hi - start] = self.audio[rows, lo:hi]
        return out

    def load(self) -> TrackAudio:
        return self.track.load()


@dataclass(frozen=True)
class SourceReader:
    """One kind of data set, as the registry of :mod:`aqsep.data` knows it.

    Attributes:
        kind: the name in ``KIND:PATH`` (e.g. ``mir1k``).
        open: ``open(root, split, *, level, sample_rate) -> list[Track]``: the tracks of one
            split (``None``: all), checked; raises :class:`~aqsep.errors.DataError` for a
            malformed copy.
        paths: ``paths(root, split) -> list[Path]``: the :attr:`Track.path` of the tracks of a
            split, listed cheaply (no decoding): how evaluation tells whether a model was trained
            on a track.
        detect: whether a path given without a kind has this layout (``None``: never guessed).
    """

    kind: str
    open: Callable[..., Sequence[Track]]
    paths: Callable[[Path, str | None], list[Path]]
    detect: Callable[[Path], bool] | None = None


# ---- reading at the model rate -----------------------------------------------------------------
def model_rate_length(native_length: int, native_rate: int, sample_rate: int) -> int:
    """Samples of a track of ``native_length`` samples at ``native_rate`` once resampled to the
    model's ``sample_rate`` (rounded down)."""
    if native_rate == sample_rate:
        return native_length
    return int(native_length * sample_rate // native_rate)


def native_span(
    start: int, length: int, native_rate: int, sample_rate: int
) -> tuple[int, int, int]:
    """The native-rate span ``(first sample, count, offset)`` to read for an excerpt at the model rate.

    ``offset`` is where the excerpt starts (at the model rate) in the resampled span: the span has
    some context on both sides so that the resampler's edge effects fall outside the excerpt.
    """
    if native_rate == sample_rate:
        return start, length, 0
    ratio = native_rate / sample_rate
    first = math.floor(start * ratio)
    lo = max(first - _RESAMPLE_CONTEXT, 0)
    n = math.ceil(length * ratio) + (first - lo) + _RESAMPLE_CONTEXT
    return lo, n, round((first - lo) / ratio)


def to_model_rate(
    native: np.ndarray, offset: int, length: int, native_rate: int, sample_rate: int
) -> np.ndarray:
    """Resample a span read as :func:`native_span` says, ``(stems, n)`` -> ``(stems, length)``."""
    if native_rate == sample_rate:
        return native
    out = np.zeros((native.shape[0], length), dtype=np.float32)
    res = resample(native, native_rate, sample_rate)[:, offset : offset + length]
    out[:, : res.shape[1]] = res
    return out
