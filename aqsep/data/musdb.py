"""MUSDB18 (``*.stem.mp4``) and MUSDB18-HQ (``is_wav``: a folder of wav files per track).

Tracks and splits come from the ``musdb`` package: ``"train"`` and ``"valid"`` are its standard
split of the training subset (the 14 validation tracks of its ``mus.yaml``), ``"test"`` is the test
subset. The stems are ``vocals``, ``drums``, ``bass`` and ``other``, each its own (coarse) class.
The mixture stored in the files is never read: training mixtures are sums of stems (in the MUSDB18
preview clip shipped with ``stempeg`` the stored mixture differs from the sum of its stems).

Excerpts are read lazily. Stem files (``.stem.mp4``) are decoded in-process with PyAV: a seek and
the decoding of the excerpt only, about ten times faster than ``stempeg``'s three ffmpeg
processes per read, which remain the fallback when PyAV is missing. ``musdb`` lists tracks with
``ffprobe``; without it the folders are listed directly, with ``musdb``'s validation track names.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.data.stems import (
    StemLabel,
    StemsTrack,
    Track,
    build_track,
    model_rate_length,
    native_span,
    to_model_rate,
)
from aqsep.errors import DataError

STEMS = ("vocals", "drums", "bass", "other")
#: Substream of each stem in a ``.stem.mp4`` file (0 is the mixture).
STEM_IDS = {"drums": 1, "bass": 2, "other": 3, "vocals": 4}


def _musdb_setup() -> dict[str, Any]:
    import musdb
    import yaml

    with open(Path(musdb.__path__[0]) / "configs" / "mus.yaml") as fh:
        return dict(yaml.safe_load(fh))


def validation_tracks() -> list[str]:
    """Names of musdb's standard validation tracks (part of the training subset)."""
    return list(_musdb_setup()["validation_tracks"])


class MusdbStemTrack(Track):
    """One ``.stem.mp4`` file of MUSDB18."""

    def __init__(
        self, name: str, path: Path, *, native_length: int, native_rate: int, sample_rate: int
    ) -> None:
        self.name = name
        self.path = path
        self.stems = STEMS
        self.labels = {s: StemLabel(s, s) for s in STEMS}
        self.native_rate = native_rate
        self.native_length = native_length
        self.sample_rate = sample_rate
        self.length = model_rate_length(native_length, native_rate, sample_rate)

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        names = self.stems if stems is None else tuple(stems)
        lo, n, offset = native_span(start, length, self.native_rate, self.sample_rate)
        ids = [STEM_IDS[s] for s in names]
        try:
            native = _decode_av(self.path, lo, n, ids)
        except ImportError:
            native = _decode_stempeg(self.path, lo, n, ids, self.native_rate)
        return to_model_rate(native, offset, length, self.native_rate, self.sample_rate)


def _decode_av(path: Path, start: int, length: int, stream_ids: list[int]) -> np.ndarray:
    """Decode ``length`` samples from ``start`` of the given audio substreams: ``(streams, length)`` mono."""
    import av  # type: ignore[import-not-found]

    frame: Any
    out = np.zeros((len(stream_ids), length), dtype=np.float32)
    end = start + length
    try:
        with av.open(str(path)) as container:
            streams: list[Any] = [container.streams.audio[i] for i in stream_ids]
            rate = int(streams[0].rate)
            seek_s = max(
                start / rate - 0.1, 0.0
            )  # a little early: the seek lands on a packet start
            container.seek(int(seek_s / streams[0].time_base), stream=streams[0], backward=True)
            slot = {s.index: k for k, s in enumerate(streams)}
            reached = dict.fromkeys(slot, False)
            for packet in container.demux(streams):
                k = slot[packet.stream.index]
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    first = int(round(frame.pts * frame.time_base * rate))
                    arr = frame.to_ndarray()
                    if frame.format.is_packed:
                        arr = arr.reshape(-1, len(frame.layout.channels)).T
                    if np.issubdtype(arr.dtype, np.integer):
                        arr = arr / float(np.iinfo(arr.dtype).max)
                    mono = arr.mean(axis=0)
                    lo, hi = max(first, start), min(first + mono.shape[0], end)
                    if hi > lo:
                        out[k, lo - start : hi - start] = mono[lo - first : hi - first]
                    if first + mono.shape[0] >= end:
                        reached[packet.stream.index] = True
                if all(reached.values()):
                    break
    except (OSError, ValueError, IndexError) as err:  # PyAV's errors derive from these
        raise DataError(f"{path}: cannot decode its stems ({type(err).__name__}: {err})") from None
    return out


def _decode_stempeg(
    path: Path, start: int, length: int, stream_ids: list[int], rate: int
) -> np.ndarray:
    import stempeg

    audio, _ = stempeg.read_stems(
        str(path),
        start=start / rate,
        duration=length / rate,
        stem_id=stream_ids,
        always_3d=True,
        dtype=np.float32,
    )  # (streams, samples, channels)
    out = np.zeros((len(stream_ids), length), dtype=np.float32)
    mono = audio.mean(axis=-1)[:, :length]
    out[:, : mono.shape[1]] = mono
    return out


def _stream_length(path: Path) -> tuple[int, int]:
    """``(samples, rate)`` of a stem file's first substream, via PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            st: Any = container.streams.audio[0]
            rate = int(st.rate)
            if st.duration is not None:
                return int(round(st.duration * st.time_base * rate)), rate
            return int(round((container.duration or 0) / 1_000_000 * rate)), rate
    except (OSError, ValueError, IndexError) as err:
        raise DataError(f"{path}: not a readable stem file ({type(err).__name__}: {err})") from None


def _subsets(split: str | None) -> tuple[list[str], str | None]:
    if split in ("train", "valid"):
        return ["train"], split
    if split == "test":
        return ["test"], None
    if split is None:
        return ["train", "test"], None
    raise ValueError(f"split must be train, valid, test or None, got {split!r}")


def _list_tracks(
    root: Path, split: str | None, is_wav: bool
) -> list[tuple[str, Path, tuple[int, int] | None]]:
    """``(name, path, (samples, rate))`` of each track: via ``musdb`` when ffprobe exists (the
    length is then known), else from the folders."""
    subsets, sub_split = _subsets(split)
    if shutil.which("ffprobe"):
        import musdb

        db = musdb.DB(root=str(root), subsets=subsets, split=sub_split, is_wav=is_wav)
        return [
            (t.name, Path(t.path).parent, None)
            if is_wav
            else (t.name, Path(t.path), (int(t.samples), int(t.rate)))
            for t in db.tracks
        ]
    valid = set(validation_tracks())
    found: list[tuple[str, Path, tuple[int, int] | None]] = []
    for subset in subsets:
        folder = root / subset
        if not folder.is_dir():
            continue
        if is_wav:
            items = [(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir()]
        else:
            items = [(p.name[: -len(".stem.mp4")], p) for p in sorted(folder.glob("*.stem.mp4"))]
        for name, path in items:
            if subset == "train" and sub_split == "train" and name in valid:
                continue
            if subset == "train" and sub_split == "valid" and name not in valid:
                continue
            found.append((name, path, None))
    return found


def open_musdb(
    root: str | Path,
    split: str | None = "train",
    *,
    is_wav: bool = False,
    sample_rate: int = 22050,
) -> list[Track]:
    """Tracks of a MUSDB18 (or, with ``is_wav``, MUSDB18-HQ) folder with ``train/`` and ``test/``.

    Raises:
        DataError: the folder does not exist or does not have MUSDB18's layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MUSDB18 folder {root} does not exist")
    if not any((root / s).is_dir() for s in ("train", "test")):
        raise DataError(
            f"{root} is not a MUSDB18 folder: expected {root}/train and {root}/test holding "
            + ("one folder of wav stems per track" if is_wav else "*.stem.mp4 files")
        )
    tracks: list[Track] = []
    for name, path, known in _list_tracks(root, split, is_wav):
        if is_wav:
            by_stem = {s: path / f"{s}.wav" for s in STEMS}
            missing = [p.name for p in by_stem.values() if not p.is_file()]
            if missing:
                raise DataError(
                    f"MUSDB18-HQ track {path} lacks {missing}; restore the files or remove the track"
                )
            track = build_track(
                path, by_stem, level="stems", sample_rate=sample_rate, check_silence=False
            )
            assert isinstance(track, StemsTrack)
            tracks.append(track)
        else:
            samples, rate = known if known is not None else _stream_length(path)
            tracks.append(
                MusdbStemTrack(
                    name, path, native_length=samples, native_rate=rate, sample_rate=sample_rate
                )
            )
    return tracks
