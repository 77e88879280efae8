"""MUSDB18 (``*.stem.mp4``) and MUSDB18-HQ (``is_wav``: a folder of wav files per track).

Layouts: the data set's root with ``train/`` and ``test/`` (the full set, or its 7-s preview
clips), a folder of ``*.stem.mp4`` files without split folders, or one ``.stem.mp4`` file (such as
the preview clip shipped with ``stempeg``).

Splits: in a root with ``train/`` and ``test/``, ``"test"`` is the test subset and ``"train"`` and
``"valid"`` are ``musdb``'s standard split of the training subset (the 14 validation tracks of its
``mus.yaml``). A folder without split folders follows the rule of stems folders (its name if that
is a split name, else training tracks only); one file given alone is a test track.

The stems are ``vocals``, ``drums``, ``bass`` and ``other``, each its own (coarse) class. The
mixture stored in the files is never read: mixtures are sums of stems (in the MUSDB18 preview clip
shipped with ``stempeg`` the stored mixture differs from the sum of its stems by 17 %).

Stem files are decoded in-process with PyAV: a seek and the decoding of the excerpt only, about
ten times faster than ``stempeg``'s three ffmpeg processes per read, which remain the fallback
when PyAV is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.audio import av_frame_samples
from aqsep.data.stems import StemsTrack, build_track, folder_split, has_split_folders
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
from aqsep.errors import DataError

STEMS = ("vocals", "drums", "bass", "other")
#: Substream of each stem in a ``.stem.mp4`` file (0 is the mixture).
STEM_IDS = {"drums": 1, "bass": 2, "other": 3, "vocals": 4}
STEM_SUFFIX = ".stem.mp4"


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
        self,
        name: str,
        path: Path,
        *,
        native_length: int,
        native_rate: int,
        channels: int,
        sample_rate: int,
    ) -> None:
        self.name = name
        self.path = path
        self.stems = STEMS
        self.labels = {s: StemLabel(s, s) for s in STEMS}
        self.native_rate = native_rate
        self.native_length = native_length
        self.channels = channels
        self.sample_rate = sample_rate
        self.length = model_rate_length(native_length, native_rate, sample_rate)

    def _decode(self, start: int, length: int, stems: Sequence[str]) -> np.ndarray:
        """``(stems, channels, length)`` at the native rate."""
        ids = [STEM_IDS[s] for s in stems]
        try:
            return _decode_av(self.path, start, length, ids, self.channels)
        except ImportError:
            return _decode_stempeg(self.path, start, length, ids, self.native_rate, self.channels)

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        names = self.stems if stems is None else tuple(stems)
        lo, n, offset = native_span(start, length, self.native_rate, self.sample_rate)
        native = self._decode(lo, n, names).mean(axis=1)
        return to_model_rate(native, offset, length, self.native_rate, self.sample_rate)

    def load(self) -> TrackAudio:
        audio = self._decode(0, self.native_length, self.stems)
        stems = {s: np.ascontiguousarray(audio[i]) for i, s in enumerate(self.stems)}
        return TrackAudio(self.name, self.native_rate, stems, dict(self.labels))


def _decode_av(
    path: Path, start: int, length: int, stream_ids: list[int], channels: int
) -> np.ndarray:
    """Decode ``length`` samples from ``start`` of the given audio substreams:
    ``(streams, channels, length)``."""
    import av  # type: ignore[import-not-found]

    frame: Any
    out = np.zeros((len(stream_ids), channels, length), dtype=np.float32)
    end = start + length
    try:
        with av.open(str(path)) as container:
            streams: list[Any] = [container.streams.audio[i] for i in stream_ids]
            rate = int(streams[0].rate)
            seek_s = max(start / rate - 0.1, 0.0)  # a little early: the seek lands on a packet
            container.seek(int(seek_s / streams[0].time_base), stream=streams[0], backward=True)
            slot = {s.index: k for k, s in enumerate(streams)}
            reached = dict.fromkeys(slot, False)
            for packet in container.demux(streams):
                k = slot[packet.stream.index]
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    first = int(round(frame.pts * frame.time_base * rate))
                    arr = av_frame_samples(frame)
                    if arr.shape[0] != channels:  # a stream with other channels than the first
                        arr = np.broadcast_to(arr.mean(axis=0), (channels, arr.shape[1]))
                    lo, hi = max(first, start), min(first + arr.shape[1], end)
                    if hi > lo:
                        out[k, :, lo - start : hi - start] = arr[:, lo - first : hi - first]
                    if first + arr.shape[1] >= end:
                        reached[packet.stream.index] = True
                if all(reached.values()):
                    break
    except (OSError, ValueError, IndexError) as err:  # PyAV's errors derive from these
        raise DataError(f"{path}: cannot decode its stems ({type(err).__name__}: {err})") from None
    return out


def _decode_stempeg(
    path: Path, start: int, length: int, stream_ids: list[int], rate: int, channels: int
) -> np.ndarray:
    import stempeg

    try:
        audio, _ = stempeg.read_stems(
            str(path),
            start=start / rate,
            duration=length / rate,
            stem_id=stream_ids,
            always_3d=True,
            dtype=np.float32,
        )  # (streams, samples, channels)
    except Exception as err:  # stempeg raises bare errors when ffmpeg is missing or the file is bad
        raise DataError(
            f"{path}: cannot decode its stems ({type(err).__name__}: {err}); is ffmpeg installed?"
        ) from None
    out = np.zeros((len(stream_ids), channels, length), dtype=np.float32)
    block = audio.transpose(0, 2, 1)[:, :channels, :length]
    out[:, : block.shape[1], : block.shape[2]] = block
    return out


def _stream_info(path: Path) -> tuple[int, int, int]:
    """``(samples, rate, channels)`` of a stem file's first substream, without decoding it."""
    try:
        import av
    except ImportError:
        return _stream_info_ffprobe(path)
    try:
        with av.open(str(path)) as container:
            st: Any = container.streams.audio[0]
            rate, channels = int(st.rate), int(st.channels)
            if st.duration is not None:
                return int(round(st.duration * st.time_base * rate)), rate, channels
            return int(round((container.duration or 0) / 1_000_000 * rate)), rate, channels
    except (OSError, ValueError, IndexError) as err:
        raise DataError(f"{path}: not a readable stem file ({type(err).__name__}: {err})") from None


def _stream_info_ffprobe(path: Path) -> tuple[int, int, int]:
    if shutil.which("ffprobe") is None:
        raise DataError(f"{path}: reading stem.mp4 files needs PyAV (pip install av) or ffmpeg")
    import stempeg

    try:
        info = stempeg.Info(str(path))
        return int(info.samples(0)), int(info.rate(0)), int(info.channels(0))
    except Exception as err:  # ffprobe's failures come back as bare errors
        raise DataError(f"{path}: not a readable stem file ({type(err).__name__}: {err})") from None


# ---- listing ------------------------------------------------------------------------------------
def _is_stem_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(STEM_SUFFIX) and not path.name.startswith(".")


def track_name(path: Path) -> str:
    """``Artist - Title`` of ``Artist - Title.stem.mp4`` (or of a MUSDB18-HQ track folder)."""
    return path.name[: -len(STEM_SUFFIX)] if path.name.endswith(STEM_SUFFIX) else path.name


def _items(folder: Path, is_wav: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    if is_wav:
        return [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [p for p in sorted(folder.iterdir()) if _is_stem_file(p)]


def track_paths(root: str | Path, split: str | None = None, *, is_wav: bool = False) -> list[Path]:
    """The stem files (MUSDB18-HQ: track folders) of one split (``None``: all), by name.

    Raises:
        DataError: the path does not exist, or the split name is unknown.
    """
    root = Path(root)
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if root.is_file() and not is_wav:
        return [root] if split in (None, "test") else []
    if not root.is_dir():
        raise DataError(f"MUSDB18 folder {root} does not exist")
    if not has_split_folders(root):
        return _items(root, is_wav) if split in (None, folder_split(root)) else []
    if split is None:
        return _items(root / "train", is_wav) + _items(root / "test", is_wav)
    if split == "test":
        return _items(root / "test", is_wav)
    valid = set(validation_tracks())
    return [
        p for p in _items(root / "train", is_wav) if (track_name(p) in valid) == (split == "valid")
    ]


def is_musdb(path: Path) -> bool:
    """Whether ``path`` is a ``.stem.mp4`` file or a folder of them (directly or in
    ``train/``/``test/``)."""
    if path.is_file():
        return _is_stem_file(path)
    return any(bool(_items(f, False)) for f in (path, path / "train", path / "test"))


def open_musdb(
    root: str | Path,
    split: str | None = "train",
    *,
    is_wav: bool = False,
    sample_rate: int = 22050,
    level: str = "stems",
) -> list[Track]:
    """Tracks of a MUSDB18 (or, with ``is_wav``, MUSDB18-HQ) copy: see the module docstring.

    ``level`` is accepted for a uniform reader interface; MUSDB18's four stems are its classes.

    Raises:
        DataError: the path does not exist or has no MUSDB18 track at all.
    """
    root = Path(root)
    if root.is_dir() and not track_paths(root, None, is_wav=is_wav):
        raise DataError(
            f"{root} is not a MUSDB18 folder: expected {root}/train and {root}/test holding "
            + ("one folder of wav stems per track" if is_wav else "*.stem.mp4 files")
        )
    tracks: list[Track] = []
    for path in track_paths(root, split, is_wav=is_wav):
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
            samples, rate, channels = _stream_info(path)
            tracks.append(
                MusdbStemTrack(
                    track_name(path),
                    path,
                    native_length=samples,
                    native_rate=rate,
                    channels=channels,
                    sample_rate=sample_rate,
                )
            )
    return tracks


def open_musdb_hq(
    root: str | Path,
    split: str | None = "train",
    *,
    sample_rate: int = 22050,
    level: str = "stems",
) -> list[Track]:
    """:func:`open_musdb` of a MUSDB18-HQ copy."""
    return open_musdb(root, split, is_wav=True, sample_rate=sample_rate, level=level)


READER = SourceReader("musdb", open_musdb, track_paths, is_musdb)
HQ_READER = SourceReader(
    "musdb-hq", open_musdb_hq, lambda root, split: track_paths(root, split, is_wav=True)
)
