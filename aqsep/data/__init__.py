"""Training data: stems folders, MUSDB18, the paper's sampling strategy, the synthetic corpus."""

from __future__ import annotations

from pathlib import Path

from aqsep.data.stems import InMemoryTrack, Track, open_stems


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
    """Tracks of a stems folder (:mod:`aqsep.data.stems`) or, with ``musdb``, of MUSDB18
    (:mod:`aqsep.data.musdb`); ``preload`` decodes them all into memory once."""
    if musdb:
        from aqsep.data.musdb import open_musdb

        tracks = open_musdb(path, split, is_wav=is_wav, sample_rate=sample_rate)
    else:
        tracks = list(open_stems(path, split, level=level, sample_rate=sample_rate))
    return [InMemoryTrack(t) for t in tracks] if preload else tracks
