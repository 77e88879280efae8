"""Training data: stems folders, MUSDB18, MIR-1K, the paper's sampling strategy, the corpus.

A data set is a :class:`DataSource`: a kind (the reader for a data set's own layout), a path and a
weight. One training run may draw from several sources (:class:`aqsep.data.sampling.TrackPool`).
A new kind of data set is one small module: a :class:`~aqsep.data.track.Track` subclass for its
layout and a :class:`~aqsep.data.track.SourceReader` (``open``, ``paths``, ``detect``), listed in
:data:`READERS`.

**Splits** (one rule for training and evaluation): a data set with split folders (``train/``,
``valid/``, ``test/``; MUSDB18's ``train/`` and ``test/``, its validation tracks taken from
``train/`` by ``musdb``'s list) is split by them; MIR-1K is split by singer. A folder without split
folders is the split its name says when it is called ``train``, ``valid`` or ``test`` (so
``CORPUS/test`` is CORPUS's test split), and otherwise holds training tracks only (its ``valid``
and ``test`` splits are empty). One track file given alone (a ``.stem.mp4``) is a test track.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from aqsep.data import mir1k, musdb, stems
from aqsep.data.track import InMemoryTrack, SourceReader, Track
from aqsep.errors import DataError

#: The kinds of data set, by name; a path without a kind is the first whose ``detect`` accepts
#: it, else a stems folder.
READERS: dict[str, SourceReader] = {
    r.kind: r for r in (stems.READER, musdb.READER, musdb.HQ_READER, mir1k.READER)
}
#: Kinds of data set: a stems folder, MUSDB18 (stem.mp4), MUSDB18-HQ (wav), MIR-1K.
SOURCE_KINDS = tuple(READERS)


@dataclass(frozen=True)
class DataSource:
    """One data set of a training run: ``kind`` (one of :data:`SOURCE_KINDS`), ``path``, and the
    ``weight`` of its share of the training excerpts (relative to the other sources)."""

    kind: str
    path: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise DataError(f"the path of a {self.kind} data set is empty")
        if self.kind not in SOURCE_KINDS:
            raise DataError(
                f"unknown kind of data set {self.kind!r}; choose one of {', '.join(SOURCE_KINDS)}"
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise DataError(
                f"the weight of data set {self.path} must be a finite number > 0, got {self.weight}"
            )

    @classmethod
    def parse(cls, text: str, *, musdb: bool = False, is_wav: bool = False) -> DataSource:
        """``[KIND:]PATH[@WEIGHT]``, e.g. ``corpus``, ``mir1k:/data/MIR-1K@2``.

        Without a kind, ``musdb``/``is_wav`` choose MUSDB18; otherwise the first reader of
        :data:`READERS` that detects its layout at the path (MIR-1K clip files, ``.stem.mp4``
        files) decides, and anything else is a stems folder.
        """
        if not text.strip():
            raise DataError("a data set path is empty")
        body, weight = text, 1.0
        if "@" in text:
            head, _, tail = text.rpartition("@")
            try:
                body, weight = head, float(tail)
            except ValueError:
                body, weight = text, 1.0  # an "@" that is part of the path
        kind, sep, path = body.partition(":")
        if not sep or kind not in SOURCE_KINDS:
            path = body
            if musdb:
                kind = "musdb-hq" if is_wav else "musdb"
            else:
                kind = next(
                    (r.kind for r in READERS.values() if r.detect and r.detect(Path(path))),
                    "stems",
                )
        return cls(kind, path, weight)

    def __str__(self) -> str:
        weight = "" if self.weight == 1.0 else f"@{self.weight:g}"
        return f"{self.kind}:{self.path}{weight}"

    def open(
        self,
        split: str | None = "train",
        *,
        level: str = "coarse",
        sample_rate: int = 22050,
        preload: bool = False,
    ) -> list[Track]:
        """The tracks of one split; ``preload`` decodes them all into memory once."""
        reader = READERS[self.kind]
        tracks = list(reader.open(Path(self.path), split, level=level, sample_rate=sample_rate))
        return [InMemoryTrack(t) for t in tracks] if preload else tracks

    def track_paths(self, split: str | None = "train") -> list[Path]:
        """:attr:`Track.path` of the tracks of one split, listed without reading audio."""
        return READERS[self.kind].paths(Path(self.path), split)


def open_tracks(
    path: str | Path,
    split: str | None = "train",
    *,
    musdb: bool = False,
    is_wav: bool = False,
    level: str = "coarse",
    sample_rate: int = 22050,
    preload: bool = False,
) -> list[Track]:
    """Tracks of one data set given as ``[KIND:]PATH`` (see :meth:`DataSource.parse`)."""
    source = DataSource.parse(str(path), musdb=musdb, is_wav=is_wav)
    return source.open(split, level=level, sample_rate=sample_rate, preload=preload)
