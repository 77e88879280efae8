"""Stems folders (with and without metadata and splits), bad training data, and MUSDB18."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aqsep.audio import resample
from aqsep.data import DataSource, open_tracks
from aqsep.data.stems import DataWarning, InMemoryTrack, open_track
from aqsep.errors import DataError

SR = 22050


def tone(
    seconds: float, freq: float, sr: int = SR, level: float = 0.2, channels: int = 1
) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (1 + 0.5 * c) for c in range(channels)], axis=1)


def write_track(
    folder: Path,
    stems: dict[str, np.ndarray],
    sr: int = SR,
    labels: dict | None = None,
    ext: str = "wav",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, x in stems.items():
        sf.write(folder / f"{name}.{ext}", x, sr, subtype="PCM_16" if ext == "wav" else None)
    if labels is not None:
        (folder / "metadata.json").write_text(json.dumps({"stems": labels}))
    return folder


LABELS = {
    "kick": {"fine": "kick", "coarse": "drums"},
    "hihat": {"fine": "hi-hat", "coarse": "drums"},
    "bass": {"fine": "bass", "coarse": "bass"},
    "piano": {"fine": "piano", "coarse": "other"},
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A synth-style corpus: split folders, metadata with fine and coarse labels, a mixture file."""
    root = tmp_path / "corpus"
    for split, n in (("train", 2), ("valid", 1)):
        for i in range(n):
            stems = {name: tone(1.0, 100 * (k + 1) + 10 * i) for k, name in enumerate(LABELS)}
            d = write_track(root / split / f"track_{i}", stems, labels=LABELS)
            sf.write(d / "mixture.wav", sum(stems.values()), SR)
    (root / "metadata.json").write_text("{}")  # corpus metadata is not a track
    return root


def test_levels_with_metadata(corpus: Path) -> None:
    coarse = open_tracks(corpus, "train", level="coarse")
    assert [t.name for t in coarse] == ["track_0", "track_1"]
    assert set(coarse[0].stems) == {"drums", "bass", "other"}  # mixture.wav is not a stem
    assert coarse[0].has_fine_labels
    fine = open_tracks(corpus, "train", level="fine")[0]
    assert set(fine.stems) == {"kick", "hi-hat", "bass", "piano"}
    assert fine.labels["hi-hat"].coarse == "drums"
    files = open_tracks(corpus, "train", level="stems")[0]
    assert set(files.stems) == {"kick", "hihat", "bass", "piano"}
    # coarse drums = kick + hi-hat, read lazily from a given offset
    drums = coarse[0].read(1000, 2048, ["drums"])[0]
    parts = fine.read(1000, 2048, ["kick", "hi-hat"])
    np.testing.assert_allclose(drums, parts.sum(axis=0), atol=1e-6)
    kick, _ = sf.read(corpus / "train/track_0/kick.wav", dtype="float32")
    np.testing.assert_allclose(parts[0], kick[1000:3048], atol=1e-6)
    assert [t.name for t in open_tracks(corpus, "valid")] == ["track_0"]
    assert open_tracks(corpus, "test") == []


def test_folder_without_metadata_or_splits(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    write_track(
        root / "song_a",
        {"Vocals": tone(0.5, 220), "Guitar": tone(0.5, 330, channels=2)},
        ext="flac",
    )
    write_track(
        root / "song_b", {"vocals": tone(0.5, 240), "keys": tone(0.5, 400), "mixture": tone(0.5, 1)}
    )
    tracks = open_tracks(root, "train", level="coarse")
    assert [set(t.stems) for t in tracks] == [{"vocals", "guitar"}, {"vocals", "keys"}]
    assert not tracks[0].has_fine_labels
    assert tracks[0].labels["guitar"].coarse == "guitar"  # every stem is its own class
    assert open_tracks(root, "valid") == []  # no split folders: everything is training data
    # stereo stems are averaged to mono
    guitar = tracks[0].read(0, 1000, ["guitar"])[0]
    np.testing.assert_allclose(guitar, tone(0.5, 330, channels=2).mean(axis=1)[:1000], atol=1e-4)
    # past the end: zeros
    assert np.all(tracks[0].read(tracks[0].length - 10, 100)[:, 10:] == 0)


def test_resampled_excerpts_match_the_whole_file(tmp_path: Path) -> None:
    x = tone(1.0, 440, sr=44100) + tone(1.0, 1234, sr=44100)
    write_track(tmp_path / "t", {"a": x, "b": tone(1.0, 200, sr=44100)}, sr=44100)
    track = open_track(tmp_path / "t", sample_rate=SR)
    assert track is not None and track.length == SR
    full = resample(x[None], 44100, SR)[0]
    excerpt = track.read(5000, 4000, ["a"])[0]
    np.testing.assert_allclose(excerpt, full[5000:9000], atol=2e-3)


def test_reads_are_lazy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_track(tmp_path / "t", {"a": tone(20.0, 440), "b": tone(20.0, 220)})
    track = open_track(tmp_path / "t")
    from aqsep.data import stems

    AudioReader = stems.AudioReader  # the class the reader uses (aqsep.audio may be reloaded)
    asked: list[int] = []
    real = AudioReader.read
    monkeypatch.setattr(
        AudioReader,
        "read",
        lambda self, start, length: asked.append(length) or real(self, start, length),
    )
    track.read(100_000, 4096)
    assert asked == [4096, 4096]  # one read of the excerpt per stem file, never the whole file


def test_preload_matches_lazy_reads(corpus: Path) -> None:
    lazy = open_tracks(corpus, "train")[1]
    loaded = open_tracks(corpus, "train", preload=True)[1]
    assert isinstance(loaded, InMemoryTrack) and loaded.stems == lazy.stems
    np.testing.assert_array_equal(loaded.read(300, 5000), lazy.read(300, 5000))
    np.testing.assert_array_equal(loaded.read(300, 5000, ["bass"]), lazy.read(300, 5000, ["bass"]))


# ------------------------------------------------------------------------------------ bad data


def test_missing_stem_listed_in_metadata(tmp_path: Path) -> None:
    write_track(tmp_path / "t", {"kick": tone(0.5, 60), "bass": tone(0.5, 80)}, labels=LABELS)
    with pytest.raises(
        DataError, match=r"lists stem\(s\) \['hihat', 'piano'\] but their files are missing"
    ):
        open_track(tmp_path / "t")


def test_empty_track_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="no stem files"):
        open_tracks(tmp_path / "data")


def test_single_stem_track(tmp_path: Path) -> None:
    write_track(tmp_path / "t", {"vocals": tone(0.5, 220), "mixture": tone(0.5, 220)})
    with pytest.raises(DataError, match="only one stem.*at least two stems"):
        open_track(tmp_path / "t")


def test_stems_of_different_lengths(tmp_path: Path) -> None:
    write_track(tmp_path / "t", {"a": tone(0.5, 220), "b": tone(0.6, 330)})
    with pytest.raises(DataError, match="different lengths.*a.wav 11025, b.wav 13230"):
        open_track(tmp_path / "t")


def test_stems_of_different_sample_rates(tmp_path: Path) -> None:
    write_track(tmp_path / "t", {"a": tone(0.5, 220)})
    write_track(tmp_path / "t", {"b": tone(0.5, 330, sr=44100)}, sr=44100)
    with pytest.raises(DataError, match="different sample rates.*22050 Hz.*44100 Hz"):
        open_track(tmp_path / "t")


def test_unreadable_stem(tmp_path: Path) -> None:
    write_track(tmp_path / "t", {"a": tone(0.5, 220)})
    (tmp_path / "t" / "b.wav").write_bytes(b"RIFF....WAVEnot really")
    with pytest.raises(DataError, match=r"track .*b\.wav"):
        open_track(tmp_path / "t")


def test_silent_track_is_skipped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_track(root / "ok", {"a": tone(0.5, 220), "b": tone(0.5, 330)})
    write_track(
        root / "quiet", {"a": np.zeros(SR // 2, np.float32), "b": np.zeros(SR // 2, np.float32)}
    )
    with pytest.warns(DataWarning, match="skipping silent track .*quiet"):
        tracks = open_tracks(root)
    assert [t.name for t in tracks] == ["ok"]


def test_track_with_one_class_at_the_level_is_skipped(tmp_path: Path) -> None:
    labels = {k: LABELS[k] for k in ("kick", "hihat")}
    write_track(tmp_path / "t", {"kick": tone(0.5, 60), "hihat": tone(0.5, 8000)}, labels=labels)
    with pytest.warns(DataWarning, match="all its stems are 'drums' at level 'coarse'"):
        assert open_track(tmp_path / "t", level="coarse") is None
    assert open_track(tmp_path / "t", level="fine") is not None


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_tracks(tmp_path / "nope")


# ------------------------------------------------------------------------------------ MUSDB18


def _stempeg_clip() -> Path:
    stempeg = pytest.importorskip("stempeg", reason="stempeg is not installed")
    path = Path(stempeg.example_stem_path())
    if not path.is_file():
        pytest.skip("stempeg's example clip is missing")
    return path


def _need_decoder() -> None:
    if shutil.which("ffprobe") is None:
        pytest.importorskip(
            "av", reason="neither ffmpeg (ffprobe) nor PyAV is available to read stem.mp4"
        )
    try:
        import av  # noqa: F401
    except ImportError:
        if shutil.which("ffmpeg") is None:
            pytest.skip("neither ffmpeg nor PyAV is available to decode stem.mp4")


@pytest.fixture
def musdb_root(tmp_path: Path) -> Path:
    clip = _stempeg_clip()
    _need_decoder()
    (tmp_path / "musdb" / "train").mkdir(parents=True)
    (tmp_path / "musdb" / "test").mkdir()
    (tmp_path / "musdb" / "train" / clip.name).symlink_to(clip)
    return tmp_path / "musdb"


def _reference_stems(clip: Path) -> np.ndarray:
    """The clip's four stems (vocals, drums, bass, other) decoded whole by stempeg, mono, at SR."""
    stempeg = pytest.importorskip("stempeg")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed for the stempeg reference decoding")
    audio, rate = stempeg.read_stems(str(clip), dtype=np.float32)  # (5, samples, 2)
    stems = audio[[4, 1, 2, 3]].mean(axis=-1)
    return resample(stems, int(rate), SR)


def test_musdb_reads_the_four_stems_of_the_stempeg_clip(musdb_root: Path) -> None:
    tracks = open_tracks(musdb_root, "train", musdb=True)
    assert [t.name for t in tracks] == ["The Easton Ellises - Falcon 69"]
    track = tracks[0]
    assert track.stems == ("vocals", "drums", "bass", "other")
    assert abs(track.length / SR - 6.08) < 0.05
    excerpt = track.read(SR, 3 * SR)
    assert excerpt.shape == (4, 3 * SR) and excerpt.dtype == np.float32
    assert all(np.sqrt(np.mean(s**2)) > 0.01 for s in excerpt)  # all four stems play
    reference = _reference_stems(Path(track.path))  # type: ignore[attr-defined]
    np.testing.assert_allclose(excerpt, reference[:, SR : 4 * SR], atol=2e-3)
    assert open_tracks(musdb_root, "valid", musdb=True) == []  # not one of musdb's 14 valid tracks
    assert open_tracks(musdb_root, "test", musdb=True) == []


def test_musdb_without_ffprobe_lists_the_folders(
    musdb_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("av", reason="PyAV reads stem.mp4 when ffmpeg is missing")
    import aqsep.data.musdb as musdb_data

    monkeypatch.setattr(musdb_data.shutil, "which", lambda name: None)
    tracks = open_tracks(musdb_root, "train", musdb=True)
    assert [t.name for t in tracks] == ["The Easton Ellises - Falcon 69"]
    assert tracks[0].read(0, 1000).shape == (4, 1000)


def test_musdb_hq_wav_layout(tmp_path: Path) -> None:
    root = tmp_path / "hq"
    stems = {
        s: tone(0.5, 100 * (k + 1), sr=44100, channels=2)
        for k, s in enumerate(("vocals", "drums", "bass", "other"))
    }
    write_track(
        root / "train" / "Some Artist - Some Song",
        {**stems, "mixture": sum(stems.values())},
        sr=44100,
    )
    (root / "test").mkdir()
    tracks = open_tracks(root, "train", musdb=True, is_wav=True)
    assert len(tracks) == 1 and set(tracks[0].stems) == {"vocals", "drums", "bass", "other"}
    assert tracks[0].read(0, 100).shape == (4, 100)
    (root / "train" / "Some Artist - Some Song" / "bass.wav").unlink()
    with pytest.raises(DataError, match=r"lacks \['bass.wav'\]"):
        open_tracks(root, "train", musdb=True, is_wav=True)


def _pcm_streams(path: Path, codec: str, fmt: str, streams: list[np.ndarray]) -> None:
    """A Matroska file of integer-PCM stereo streams at 8 kHz, one per ``(2, samples)`` array."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        added = [container.add_stream(codec, rate=8000, layout="stereo") for _ in streams]
        for stream, data in zip(added, streams, strict=True):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data.T.reshape(1, -1)), format=fmt, layout="stereo"
            )
            frame.sample_rate, frame.pts = 8000, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)


@pytest.mark.parametrize(
    ("codec", "fmt", "dtype"), [("pcm_s16le", "s16", np.int16), ("pcm_u8", "u8", np.uint8)]
)
def test_stems_decode_integer_pcm_at_the_scale_of_every_reader(
    tmp_path: Path, codec: str, fmt: str, dtype: type
) -> None:
    """MUSDB18's stem decoder and the file reader share one PyAV conversion: integer PCM at the
    full scale of aqsep.audio.to_float (int16 -32768 is -1 exactly, uint8 128 is 0)."""
    from aqsep.audio import read_audio, to_float
    from aqsep.data.musdb import _decode_av

    info = np.iinfo(dtype)
    ramp = np.linspace(info.min, info.max, 4000).round().astype(dtype)
    stems = [np.stack([ramp, ramp[::-1]]), np.stack([ramp[::-1], ramp]), np.roll([ramp] * 2, 7)]
    path = tmp_path / "stems.mka"
    _pcm_streams(path, codec, fmt, stems)
    decoded = _decode_av(path, 0, 4000, [1, 2], 2)
    for got, stem in zip(decoded, stems[1:], strict=True):
        np.testing.assert_array_equal(got, to_float(stem))
    assert decoded.min() == -1.0  # int16 -32768 and uint8 0 (was -1.00003 and 0.0)
    np.testing.assert_array_equal(_decode_av(path, 100, 3000, [2], 2)[0], decoded[1][:, 100:3100])
    single = tmp_path / "one.mka"
    _pcm_streams(single, codec, fmt, stems[:1])
    audio, rate = read_audio(single)
    assert rate == 8000
    np.testing.assert_array_equal(audio, to_float(stems[0]))


def test_not_a_musdb_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a MUSDB18 folder"):
        open_tracks(tmp_path, "train", musdb=True)


# ------------------------------------------------------------------------------------ evaluation


def test_load_reads_the_whole_track_at_its_own_rate_and_channels(tmp_path: Path) -> None:
    """Training reads mono excerpts at the model rate; evaluation the files as they are."""
    voice, guitar = tone(0.5, 220, sr=44100), tone(0.5, 330, sr=44100, channels=2)
    write_track(tmp_path / "song", {"vocals": voice, "guitar": guitar}, sr=44100)
    track = open_track(tmp_path / "song", sample_rate=SR)
    assert track is not None
    assert (track.native_rate, track.native_length, track.channels) == (44100, 22050, 2)
    assert track.length == SR // 2 and track.path == tmp_path / "song"
    audio = track.load()
    assert audio.sample_rate == 44100 and audio.channels == 2 and audio.frames == 22050
    stored = {n: sf.read(tmp_path / "song" / f"{n}.wav", dtype="float32")[0] for n in ("vocals",)}
    np.testing.assert_array_equal(audio.stems["vocals"][0], stored["vocals"])  # mono on both
    np.testing.assert_array_equal(audio.stems["vocals"][1], stored["vocals"])
    guitar_file, _ = sf.read(tmp_path / "song" / "guitar.wav", dtype="float32")
    np.testing.assert_array_equal(audio.stems["guitar"], guitar_file.T)
    np.testing.assert_allclose(audio.mixture, audio.stems["vocals"] + audio.stems["guitar"])
    # a preloaded track still loads at its own rate
    assert InMemoryTrack(track).load().sample_rate == 44100


def test_load_sums_the_files_of_a_class(corpus: Path) -> None:
    coarse = open_tracks(corpus, "train", level="coarse")[0].load()
    stems = open_tracks(corpus, "train", level="stems")[0].load()
    np.testing.assert_allclose(
        coarse.stems["drums"], stems.stems["kick"] + stems.stems["hihat"], atol=1e-6
    )
    assert stems.members("hi-hat") == ["hihat"] and coarse.members("drums") == ["drums"]
    assert stems.labels["hihat"].coarse == "drums"
    assert [t.path.name for t in open_tracks(corpus, None)] == ["track_0", "track_1", "track_0"]


def test_a_folder_named_after_a_split_is_that_split(corpus: Path, tmp_path: Path) -> None:
    valid = corpus / "valid"
    assert [t.name for t in open_tracks(valid, "valid")] == ["track_0"]
    assert open_tracks(valid, "train") == [] and open_tracks(valid, "test") == []
    assert DataSource.parse(str(valid)).track_paths("valid") == [valid / "track_0"]
    with pytest.raises(DataError, match="unknown split 'dev'"):
        open_tracks(corpus, "dev")


def test_musdb_splits_and_listing_without_decoding(tmp_path: Path) -> None:
    from aqsep.data.musdb import track_paths, validation_tracks

    root = tmp_path / "musdb"
    valid = validation_tracks()[0]
    for split, name in (("train", "A - Song"), ("train", valid), ("test", "B - Song")):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / f"{name}.stem.mp4").write_bytes(b"")  # listed, never read
    names = {s: [p.name for p in track_paths(root, s)] for s in ("train", "valid", "test")}
    assert names == {
        "train": ["A - Song.stem.mp4"],
        "valid": [f"{valid}.stem.mp4"],
        "test": ["B - Song.stem.mp4"],
    }
    assert DataSource.parse(str(root)).kind == "musdb"  # found by its layout
    one = root / "test" / "B - Song.stem.mp4"
    assert DataSource.parse(str(one)).kind == "musdb"
    assert track_paths(one, "test") == [one] and track_paths(one, "train") == []
    assert DataSource.parse(str(tmp_path)).kind == "stems"
