"""Training data: stems folders, MUSDB18, MIR-1K, the paper's sampling strategy, the corpus.

A data set is a :class:`DataSource`: a kind (the reader for a data set's own layout), a path and a
weight. One training run may draw from several sources (:class:`aqsep.data.sampling.TrackPool`).
A new kind of data set is one small module with an ``open_...(root, split, sample_rate=...)``
function returning :class:`~aqsep.data.stems.Track` objects, registered in :meth:`DataSource.open`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from aqsep.data.stems import InMemoryTrack, Track, open_stems
from aqsep.errors import DataError

#: Kinds of data set: a stems folder, MUSDB18 (stem.mp4), MUSDB18-HQ (wav), MIR-1K.
SOURCE_KINDS = ("stems", "musdb", "musdb-hq", "mir1k")


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
            raise DataError(f"the weight of data set {self.path} must be > 0, got {self.weight}")

    @classmethod
    def parse(cls, text: str, *, musdb: bool = False, is_wav: bool = False) -> DataSource:
        """``[KIND:]PATH[@WEIGHT]``, e.g. ``corpus``, ``mir1k:/data/MIR-1K@2``.

        Without a kind, ``musdb``/``is_wav`` choose MUSDB18, a folder of MIR-1K clip files is
        MIR-1K, and anything else is a stems folder.
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
                from aqsep.data.mir1k import is_mir1k

                kind = "mir1k" if is_mir1k(path) else "stems"
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
        tracks: list[Track]
        if self.kind in ("musdb", "musdb-hq"):
            from aqsep.data.musdb import open_musdb

            tracks = open_musdb(
                self.path, split, is_wav=self.kind == "musdb-hq", sample_rate=sample_rate
            )
        elif self.kind == "mir1k":
            from aqsep.data.mir1k import open_mir1k

            tracks = list(open_mir1k(self.path, split, sample_rate=sample_rate))
        else:
            tracks = list(open_stems(self.path, split, level=level, sample_rate=sample_rate))
        return [InMemoryTrack(t) for t in tracks] if preload else tracks


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
