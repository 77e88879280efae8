"""A dataset of stems in a folder: one folder per track, one audio file per stem.

Layouts::

    ROOT/<track>/<stem>.wav|flac|...              any stem names, every stem its own class
    ROOT/<split>/<track>/<stem>.wav|flac|...      with split folders train/valid/test
    ROOT/[<split>/]<track>/metadata.json          optional labels (written by ``aqsep synth``):
        {"stems": {"<file stem>": {"fine": "hi-hat", "coarse": "drums"}, ...}}

Splits (the rule of :mod:`aqsep.data`): with split folders, each folder is its split. A folder
without split folders is the split its own name says when it is named ``train``, ``valid`` or
``test`` (``CORPUS/test`` given directly is CORPUS's test split); any other folder holds training
tracks only (its ``valid`` and ``test`` splits are empty).

Files named ``mixture.*`` are never stems (the mixture is always a sum of stems). With labels, the
``level`` decides what one stem of a track is: ``"coarse"`` sums the stem files of each coarse
class (a track then has vocals/drums/bass/other stems), ``"fine"`` sums the files of each fine
label, and ``"stems"`` keeps every file apart.

Tracks are checked when the folder is opened (a clear :class:`~aqsep.errors.DataError` for
unreadable files, stems listed in the metadata but missing, stems of different lengths or sample
rates, a track with fewer than two stem files) but only a few probes of each file are read; a
silent track, or one left with fewer than two stems at the chosen level, is skipped with a
:class:`DataWarning`. Excerpts are read lazily: a seek and a read of the excerpt only, resampled
to the model rate and averaged to mono. :meth:`StemsTrack.load` reads the files whole at their
own rate and channels (a mono file in a stereo track is played on both channels).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aqsep.audio import AudioReader, audio_info, rms_db
from aqsep.data.track import (
    SPLITS,
    InMemoryTrack,
    SourceReader,
    StemLabel,
    Track,
    TrackAudio,
    model_rate_length,
    native_span,
    to_model_rate,
)
from aqsep.errors import AqsepError, DataError

#: Formats that libsndfile reads with seeking (lazy excerpt reads need it).
STEM_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LEVELS = ("coarse", "fine", "stems")
METADATA = "metadata.json"
#: A track whose probes all lie below this RMS (dBFS, sum of its stems) counts as silent.
SILENT_TRACK_DB = -70.0
_PROBES = 16  # probe windows per file for the silence check

__all__ = [  # the names of aqsep.data.track stay importable from here
    "SPLITS",
    "InMemoryTrack",
    "StemLabel",
    "Track",
    "TrackAudio",
    "model_rate_length",
    "native_span",
    "to_model_rate",
]


class DataWarning(UserWarning):
    """A track was left out of a data set (silent, or too few stems at the chosen level)."""


@dataclass
class _StemFiles:
    label: StemLabel
    files: list[Path] = field(default_factory=list)


class StemsTrack(Track):
    """A track folder whose stems are (sums of) audio files at one native sample rate."""

    def __init__(
        self,
        name: str,
        groups: dict[str, _StemFiles],
        *,
        path: Path,
        native_rate: int,
        native_length: int,
        channels: int,
        sample_rate: int,
        has_fine_labels: bool = False,
    ) -> None:
        self.name = name
        self.path = path
        self._groups = groups
        self.stems = tuple(groups)
        self.labels = {k: g.label for k, g in groups.items()}
        self.native_rate = native_rate
        self.native_length = native_length
        self.channels = channels
        self.sample_rate = sample_rate
        self.length = model_rate_length(native_length, native_rate, sample_rate)
        self.has_fine_labels = has_fine_labels

    def files(self, stem: str) -> list[Path]:
        return list(self._groups[stem].files)

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        names = self.stems if stems is None else tuple(stems)
        lo, n, offset = native_span(start, length, self.native_rate, self.sample_rate)
        native = np.zeros((len(names), n), dtype=np.float32)
        for i, stem in enumerate(names):
            for path in self._groups[stem].files:
                native[i] += _read_mono(path, lo, n)
        return to_model_rate(native, offset, length, self.native_rate, self.sample_rate)

    def load(self) -> TrackAudio:
        stems = {}
        for stem, group in self._groups.items():
            total = np.zeros((self.channels, self.native_length), dtype=np.float32)
            for path in group.files:
                with AudioReader(path) as reader:
                    audio = reader.read(0, self.native_length)
                if audio.shape[0] not in (1, self.channels):
                    raise DataError(
                        f"track {self.path}: {path.name} has {audio.shape[0]} channels where "
                        f"other stems have {self.channels}; give every stem the same channels "
                        "(or one)"
                    )
                total += audio  # a mono file is broadcast to every channel
            stems[stem] = total
        return TrackAudio(self.name, self.native_rate, stems, dict(self.labels))


def _read_mono(path: Path, start: int, length: int) -> np.ndarray:
    with AudioReader(path) as reader:
        block = reader.read(start, length)
    return block.mean(axis=0) if block.shape[0] > 1 else block[0]


def _is_stem_file(path: Path) -> bool:
    return (
        path.is_file()
        and path.suffix.lower() in STEM_EXTENSIONS
        and not path.name.startswith(".")
        and path.stem.lower() != "mixture"
    )


def _is_track_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def has_split_folders(root: str | Path) -> bool:
    root = Path(root)
    return any((root / s).is_dir() for s in SPLITS)


def _read_labels(track_dir: Path) -> dict[str, dict[str, str]] | None:
    path = track_dir / METADATA
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); fix or delete it") from None
    stems = meta.get("stems") if isinstance(meta, dict) else None
    if not isinstance(stems, dict) or not all(isinstance(v, dict) for v in stems.values()):
        raise DataError(
            f'{path}: expected {{"stems": {{"<stem file name>": {{"fine": ..., "coarse": ...}}}}}}; '
            "fix or delete it"
        )
    return stems


def _label(stem: str, labels: dict[str, dict[str, str]] | None, level: str) -> StemLabel:
    entry = (labels or {}).get(stem, {})
    fine = str(entry.get("fine", stem)).lower() if labels is not None else None
    coarse = str(entry.get("coarse", fine or stem)).lower()
    if level == "coarse":
        return StemLabel(coarse, coarse, fine if labels is not None else None)
    if level == "fine" and fine is not None:
        return StemLabel(fine, coarse, fine)
    return StemLabel(stem.lower() if labels is None else stem, coarse, fine)


def open_track(
    track_dir: str | Path, *, level: str = "coarse", sample_rate: int = 22050
) -> StemsTrack | None:
    """Scan and check one track folder; ``None`` (with a :class:`DataWarning`) if it is skipped.

    Raises:
        DataError: the folder's files are inconsistent (see the module docstring).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    track_dir = Path(track_dir)
    files = sorted(p for p in track_dir.iterdir() if _is_stem_file(p))
    labels = _read_labels(track_dir)
    if not files:
        raise DataError(
            f"track {track_dir}: no stem files ({', '.join(STEM_EXTENSIONS)}); "
            "put one audio file per stem in it, or remove the folder"
        )
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise DataError(
                f"track {track_dir}: two files for stem {p.stem!r} ({by_stem[p.stem].name}, {p.name})"
            )
        by_stem[p.stem] = p
    if labels is not None:
        missing = sorted(set(labels) - set(by_stem))
        if missing:
            raise DataError(
                f"track {track_dir}: {METADATA} lists stem(s) {missing} but their files are missing; "
                "restore them or remove the track"
            )
    if len(files) < 2:
        raise DataError(
            f"track {track_dir}: only one stem ({files[0].name}); a training mixture needs at least "
            "two stems: add stems or remove the track"
        )
    return build_track(track_dir, by_stem, labels=labels, level=level, sample_rate=sample_rate)


def build_track(
    track_dir: Path,
    by_stem: dict[str, Path],
    *,
    labels: dict[str, dict[str, str]] | None = None,
    level: str = "coarse",
    sample_rate: int = 22050,
    check_silence: bool = True,
) -> StemsTrack | None:
    """Check stem files (rates, lengths, silence) and group them by label at ``level``."""
    files = list(by_stem.values())
    infos = []
    for p in files:
        try:
            infos.append(audio_info(p))
        except AqsepError as err:
            raise DataError(f"track {track_dir}: {err}") from None
    rates = {i.sample_rate for i in infos}
    if len(rates) > 1:
        detail = ", ".join(f"{i.path.name} {i.sample_rate} Hz" for i in infos)
        raise DataError(
            f"track {track_dir}: stems have different sample rates ({detail}); resample them to one rate"
        )
    lengths = {i.frames for i in infos}
    if len(lengths) > 1:
        detail = ", ".join(f"{i.path.name} {i.frames}" for i in infos)
        raise DataError(
            f"track {track_dir}: stems have different lengths in samples ({detail}); "
            "pad or trim them to the same length"
        )
    native_rate, native_length = rates.pop(), lengths.pop()
    channels = max(i.channels for i in infos)

    if check_silence and _probe_db(files, native_length) < SILENT_TRACK_DB:
        warnings.warn(f"skipping silent track {track_dir}", DataWarning, stacklevel=3)
        return None
    groups: dict[str, _StemFiles] = {}
    for stem, path in by_stem.items():
        label = _label(stem, labels, level)
        groups.setdefault(label.name, _StemFiles(label)).files.append(path)
    if len(groups) < 2:
        warnings.warn(
            f"skipping track {track_dir}: all its stems are {next(iter(groups))!r} at level {level!r}, "
            "so it cannot make a mixture",
            DataWarning,
            stacklevel=3,
        )
        return None
    fine_labels = labels is not None and any("fine" in v for v in labels.values())
    return StemsTrack(
        track_dir.name,
        groups,
        path=track_dir,
        native_rate=native_rate,
        native_length=native_length,
        channels=channels,
        sample_rate=sample_rate,
        has_fine_labels=fine_labels,
    )


def _probe_db(files: list[Path], length: int) -> float:
    """Loudest RMS (dBFS) of the sum of the files over a few windows spread along the track."""
    win = max(1, min(length // _PROBES, 22050))
    starts = np.linspace(0, max(length - win, 0), _PROBES).astype(int)
    total = np.zeros((_PROBES, win), dtype=np.float32)
    for p in files:
        with AudioReader(p) as reader:
            for k, s in enumerate(starts):
                block = reader.read(int(s), win)
                total[k] += block.mean(axis=0)
    return max(rms_db(row) for row in total)


def folder_split(root: str | Path) -> str:
    """The split of a folder without split folders: its own name if that is a split name
    (``CORPUS/test`` given directly), else ``"train"``."""
    name = Path(root).resolve().name
    return name if name in SPLITS else "train"


def track_folders(root: str | Path, split: str | None = None) -> list[Path]:
    """Track folders of ``root/split`` (``None``: of every split), by name.

    Without split folders, every track folder of ``root`` is in the split :func:`folder_split`
    names, and the other splits are empty.
    """
    root = Path(root)
    if root.is_file():
        raise DataError(
            f"{root} is a file; a stems data set is a folder with one folder per track holding "
            "one audio file per stem"
        )
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    base = root
    if has_split_folders(root):
        if split is None:
            return [t for s in SPLITS for t in track_folders(root, s)]
        base = root / split
        if not base.is_dir():
            return []
    elif split not in (None, folder_split(root)):
        return []
    return [p for p in sorted(base.iterdir()) if _is_track_dir(p)]


def open_stems(
    root: str | Path,
    split: str | None = "train",
    *,
    level: str = "coarse",
    sample_rate: int = 22050,
) -> list[StemsTrack]:
    """All valid tracks of a stems folder (of one split when it has split folders).

    See :func:`track_folders` for folders without splits. Raises :class:`DataError` for
    inconsistent tracks; returns an empty list when the split has no track.
    """
    folders = track_folders(root, split)
    tracks = [
        t
        for t in (open_track(f, level=level, sample_rate=sample_rate) for f in folders)
        if t is not None
    ]
    return tracks


READER = SourceReader("stems", open_stems, track_folders)
