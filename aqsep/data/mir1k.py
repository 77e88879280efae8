"""MIR-1K: real singing over its karaoke accompaniment, in the data set's own layout.

MIR-1K (Hsu and Jang, IEEE TASLP 2010; research use) is a set of 1000 short clips (3-12 s) of
amateur singers over the accompaniment of Chinese pop songs, 16 kHz, two channels: the **left
channel is the accompaniment, the right channel the singing voice**. Clip files are named
``<singer>_<song>_<clip>.wav`` (``.ogg``/``.flac`` copies work too). The folder may be the data
set's root (its ``Wavfile/`` folder is used, as distributed) or any folder of clip files, directly
or under ``audio/``.

Each clip is a :class:`~aqsep.data.stems.Track` with two stems: ``vocals`` (coarse class
``vocals``) and ``accompaniment`` (its own coarse class: a mix of the song's instruments, not one
MUSDB-style class). Clips of one singer share voice and songs, so the split is **by singer, never
by clip**: the singers of :data:`TEST_SINGERS` and :data:`VALID_SINGERS` are held out; any other
singer (all of the data set's 19, or the subset a copy holds) is a training singer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aqsep.audio import AudioReader, audio_info
from aqsep.data.track import (
    SPLITS,
    SourceReader,
    StemLabel,
    Track,
    TrackAudio,
    model_rate_length,
    native_span,
    to_model_rate,
)
from aqsep.errors import AqsepError, DataError

#: Held-out singers (folded to lower case). Test: 3 singers, 135 clips of the 871 in the
#: 16-singer copy used by this project; validation: 2 singers, 46 clips.
TEST_SINGERS = ("ani", "jmzen", "titon")
VALID_SINGERS = ("bug", "tammy")
VOCALS, ACCOMPANIMENT = "vocals", "accompaniment"
#: Channel of each stem in a clip file.
CHANNELS = {ACCOMPANIMENT: 0, VOCALS: 1}
CLIP_EXTENSIONS = (".wav", ".flac", ".ogg")
_CLIP_NAME = re.compile(r"^(?P<singer>[A-Za-z]+)_(?P<song>\d+)_(?P<clip>\d+)$")


def singer_of(clip: str) -> str:
    """The singer of a clip name such as ``abjones_1_01`` (lower case)."""
    match = _CLIP_NAME.match(clip)
    if match is None:
        raise DataError(f"{clip!r} is not a MIR-1K clip name (<singer>_<song>_<clip>)")
    return match["singer"].lower()


def split_of(clip: str) -> str:
    """``"test"``, ``"valid"`` or ``"train"``, decided by the clip's singer."""
    singer = singer_of(clip)
    if singer in TEST_SINGERS:
        return "test"
    if singer in VALID_SINGERS:
        return "valid"
    return "train"


def clip_folder(root: str | Path) -> Path:
    """The folder that holds a MIR-1K copy's clip files: ``Wavfile/``, ``audio/`` or ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MIR-1K folder {root} does not exist")
    for name in ("Wavfile", "audio"):
        if (root / name).is_dir():
            return root / name
    return root


def _clip_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in CLIP_EXTENSIONS and _CLIP_NAME.match(p.stem)
    )


def is_mir1k(root: str | Path) -> bool:
    """Whether ``root`` looks like a MIR-1K copy (clip files named ``<singer>_<song>_<clip>``)."""
    try:
        return bool(_clip_files(clip_folder(root)))
    except (DataError, OSError):
        return False


class Mir1kClip(Track):
    """One two-channel clip: accompaniment on the left, singing voice on the right."""

    def __init__(self, path: Path, *, native_rate: int, native_length: int, sample_rate: int):
        self.path = path
        self.name = path.stem
        self.singer = singer_of(path.stem)
        self.stems = (VOCALS, ACCOMPANIMENT)
        self.labels = {s: StemLabel(s, s) for s in self.stems}
        self.native_rate = native_rate
        self.native_length = native_length
        self.channels = 1  # each stem is one channel of the file
        self.sample_rate = sample_rate
        self.length = model_rate_length(native_length, native_rate, sample_rate)

    def load(self) -> TrackAudio:
        """Both stems, mono at the file's own rate: the mixture is accompaniment + voice."""
        native = self.read_native()
        stems = {s: np.ascontiguousarray(native[i : i + 1]) for i, s in enumerate(self.stems)}
        return TrackAudio(self.name, self.native_rate, stems, dict(self.labels))

    def read_native(self, start: int = 0, length: int = -1) -> np.ndarray:
        """Both stems ``(2, samples)`` at the file's own rate, ordered as :attr:`stems`."""
        length = self.native_length - start if length < 0 else length
        with AudioReader(self.path) as reader:
            block = reader.read(start, length)
        return block[[CHANNELS[s] for s in self.stems]]

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        names = self.stems if stems is None else tuple(stems)
        lo, n, offset = native_span(start, length, self.native_rate, self.sample_rate)
        native = self.read_native(lo, n)
        rows = [self.stems.index(s) for s in names]
        return to_model_rate(
            np.ascontiguousarray(native[rows]), offset, length, self.native_rate, self.sample_rate
        )


def clip_paths(root: str | Path, split: str | None = None) -> list[Path]:
    """The clip files of one split (``None``: all), by name, without reading them."""
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    files = _clip_files(clip_folder(root))
    return [p for p in files if split is None or split_of(p.stem) == split]


def open_mir1k(
    root: str | Path,
    split: str | None = "train",
    *,
    sample_rate: int = 22050,
    level: str = "coarse",
) -> list[Mir1kClip]:
    """The clips of one split (``None``: all) of a MIR-1K copy, by name.

    ``level`` is accepted for a uniform reader interface: a clip's two stems are its classes.

    Raises:
        DataError: no clip files, a clip that is not a readable two-channel file, or an unknown
            split name.
    """
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = clip_folder(root)
    files = _clip_files(folder)
    if not files:
        raise DataError(
            f"{folder}: no MIR-1K clips (files named <singer>_<song>_<clip>"
            f"{'|'.join(CLIP_EXTENSIONS)}, accompaniment left, voice right)"
        )
    clips = []
    for path in files:
        if split is not None and split_of(path.stem) != split:
            continue
        try:
            info = audio_info(path)
        except AqsepError as err:
            raise DataError(f"MIR-1K clip {path}: {err}") from None
        if info.channels != 2:
            raise DataError(
                f"MIR-1K clip {path}: {info.channels} channel(s); a clip has two "
                "(accompaniment left, voice right)"
            )
        clips.append(
            Mir1kClip(
                path,
                native_rate=info.sample_rate,
                native_length=info.frames,
                sample_rate=sample_rate,
            )
        )
    return clips


READER = SourceReader("mir1k", open_mir1k, clip_paths, is_mir1k)
