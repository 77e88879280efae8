"""The tracks of an evaluation: one split of a data set, the tracks a model was trained on
(refused unless allowed), and the targets to score when none are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aqsep.data import DataSource
from aqsep.data.track import SPLITS, Track
from aqsep.errors import DataError

if TYPE_CHECKING:
    from aqsep.api import Separator


def list_tracks(
    data: str | Path,
    *,
    split: str = "test",
    musdb: bool = False,
    is_wav: bool = False,
    max_tracks: int | None = None,
) -> list[Track]:
    """The tracks of one split of a data set, sorted by name, listed through :mod:`aqsep.data`.

    Args:
        data: ``[KIND:]PATH`` (:meth:`aqsep.data.DataSource.parse`): a stems folder (such as
            the synthetic corpus), MIR-1K, a MUSDB18 root, or one ``.stem.mp4`` file. Every stem
            file is a stem; targets match a stem's name, fine label or coarse class.
        split: ``test``, ``train`` or ``valid``, by the rule of :mod:`aqsep.data`.
        musdb, is_wav: read ``data`` as MUSDB18 (``is_wav``: MUSDB18-HQ).
        max_tracks: keep the first N tracks.

    Raises:
        DataError: the split has no track (the message says why, e.g. a folder without split
            folders, whose tracks are training tracks).
    """
    source = DataSource.parse(str(data), musdb=musdb, is_wav=is_wav)
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_file() and source.kind != "musdb":
        raise DataError(
            f"{path} is a file: give a data set folder (stems, MIR-1K, MUSDB18) or one .stem.mp4"
        )
    tracks = source.open(split, level="stems")
    if not tracks:
        raise DataError(f"no {split} tracks in {source}{_why_empty(source, split)}")
    return tracks[:max_tracks] if max_tracks else tracks


def _why_empty(source: DataSource, split: str) -> str:
    if split == "train" or source.kind not in ("stems", "musdb", "musdb-hq"):
        return ""
    others = [s for s in SPLITS if s != split and source.track_paths(s)]
    if not others:
        return ""
    return (
        f": it holds {' and '.join(others)} tracks only (a folder without train/valid/test "
        "folders holds training tracks, unless it is itself named train, valid or test); "
        f"give the folder of the {split} tracks, or another split"
    )


def trained_on(separator: Separator, tracks: Sequence[Track]) -> list[Track]:
    """The tracks that the model was trained on: those in the training split of a data set
    that its metadata names (``"data"``: ``[KIND:]PATH`` strings), compared by resolved path.

    A data set that is not on this machine (or a free-text description) cannot be compared and
    is passed over.
    """
    metadata = separator.released.metadata
    data = metadata.get("data") if isinstance(metadata, dict) else None  # edited by hand: any
    seen: set[Path] = set()
    for text in [data] if isinstance(data, str) else data if isinstance(data, list) else []:
        try:
            source = DataSource.parse(str(text))
            if Path(source.path).exists():
                seen.update(p.resolve() for p in source.track_paths("train"))
        except (DataError, OSError):
            continue
    return [t for t in tracks if Path(t.path).resolve() in seen]


def check_held_out(separator: Separator, tracks: Sequence[Track], data: str) -> None:
    """Refuse tracks that the model was trained on (:func:`trained_on`): their scores would
    not measure separation of unheard music.

    Raises:
        DataError: naming how many tracks and an example.
    """
    seen = trained_on(separator, tracks)
    if seen:
        raise DataError(
            f"{len(seen)} of the {len(tracks)} tracks of {data} are training tracks of this model "
            f"(e.g. {seen[0].name}): their scores would not measure separation of unheard music; "
            "evaluate on its test split, or allow training tracks explicitly"
        )


def coarse_targets(tracks: Sequence[Track]) -> list[str]:
    """The coarse classes present in any of the tracks."""
    return sorted({c for t in tracks for c in t.classes("coarse")})


def default_targets(
    separator: Separator, tracks: Sequence[Track], methods: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The targets when none are given: every coarse class of the data, less (returned second)
    those the model has no class latent for when a method needs one (MIR-1K's
    ``accompaniment``, say)."""
    present = coarse_targets(tracks)
    if not any(m in ("mean", "iterative") for m in methods):
        return present, []
    known = set(separator.classes)
    return [t for t in present if t in known], [t for t in present if t not in known]
