"""The offline corpus builder: layout, labels, exact mixtures, splits, determinism, resume, CLI."""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tinysoundfont")
pytest.importorskip("music21")
sf = pytest.importorskip("soundfile")

from aqsep.data import synth  # noqa: E402
from aqsep.data.synth import (  # noqa: E402
    COARSE_CLASSES,
    FINE_TO_COARSE,
    SPLITS,
    build_corpus,
    bundled_soundfont,
    composition,
    default_soundfonts,
    instruments,
    mixing,
    read_corpus_metadata,
    read_track_metadata,
    rendering,
)
from aqsep.errors import AqsepError, DataError, OutputError  # noqa: E402

SEED = 7
SECONDS = 3.0
HOURS = 6 * SECONDS / 3600  # six tracks: test 0, valid 1, train 2..5


@pytest.fixture(scope="module")
def soundfont() -> Path:
    path = bundled_soundfont()
    if path is None:
        pytest.skip("pretty_midi's soundfont is not installed")
    return path


def write_piano(folder: Path, keys: tuple[int, ...] = (48, 51, 54, 57, 60, 63, 66, 69)) -> Path:
    """Recordings of single notes named like the Salamander samples (``D#4v10.wav``): a
    decaying tone with four harmonics at the key's pitch, one second, stereo."""
    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    folder.mkdir(parents=True)
    sr = 22050
    t = np.arange(sr) / sr
    for key in keys:
        f0 = 440.0 * 2 ** ((key - 69) / 12)
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3, 4)) * np.exp(-3 * t)
        x = 0.3 * x / np.abs(x).max()
        sf.write(folder / f"{names[key % 12]}{key // 12 - 1}v10.wav", np.stack([x, x], 1), sr)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory, soundfont: Path) -> dict:
    """Timbre sources for build_corpus that are the same on every machine: the bundled
    soundfont, two drum-kit soundfonts and a sampled piano made here."""
    d = tmp_path_factory.mktemp("sources")
    kits = [write_sf2(d / f"Kit{c}_LV2.sf2", [(0, 0)]) for c in "AB"]
    return {"soundfonts": [soundfont], "drum_kits": kits, "samples": write_piano(d / "piano")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, sources: dict) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    meta = build_corpus(
        out, hours=HOURS, seed=SEED, track_seconds=SECONDS, **sources, progress=False
    )
    return out, meta


@pytest.fixture
def chorales_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw pieces from the Bach chorales only, the quickest to parse (keeps tests fast)."""
    chorales = {"chorales": composition.PIECE_CATEGORIES["chorales"]}
    monkeypatch.setattr(composition, "PIECE_CATEGORIES", chorales)


def _chunk(cid: bytes, data: bytes) -> bytes:
    return cid + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def write_sf2(path: Path, presets: list[tuple[int, int]], sample_rate: int = 22050) -> Path:
    """A minimal SF2 file: every (bank, program) preset plays one decaying noise burst on all
    keys (a stand-in for a drum-kit soundfont, or, with 128 programs, a General MIDI set)."""
    n = sample_rate // 4
    burst = np.random.default_rng(0).standard_normal(n) * np.exp(-np.arange(n) / (0.03 * n * 4))
    pcm = (burst / np.abs(burst).max() * 20000).astype("<i2").tobytes() + b"\0" * 92
    rec = "<20sHHHIII"
    phdr = b"".join(struct.pack(rec, b"p", p, b, i, 0, 0, 0) for i, (b, p) in enumerate(presets))
    phdr += struct.pack(rec, b"EOP", 0, 0, len(presets), 0, 0, 0)
    pbag = b"".join(struct.pack("<HH", i, 0) for i in range(len(presets) + 1))
    pgen = struct.pack("<HH", 41, 0) * len(presets) + bytes(4)  # each preset: instrument 0
    inst = struct.pack("<20sH", b"burst", 0) + struct.pack("<20sH", b"EOI", 1)
    ibag = struct.pack("<HH", 0, 0) + struct.pack("<HH", 3, 0)
    # key range 0-127, no loop, sample 0
    igen = struct.pack("<HBB", 43, 0, 127) + struct.pack("<HHHH", 54, 0, 53, 0) + bytes(4)
    shdr = struct.pack("<20sIIIIIBbHH", b"burst", 0, n, 0, n, sample_rate, 60, 0, 0, 1)
    shdr += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    pdta = [(b"phdr", phdr), (b"pbag", pbag), (b"pmod", bytes(10)), (b"pgen", pgen)]
    pdta += [(b"inst", inst), (b"ibag", ibag), (b"imod", bytes(10)), (b"igen", igen)]
    pdta += [(b"shdr", shdr)]
    info = _chunk(b"ifil", struct.pack("<HH", 2, 1)) + _chunk(b"isng", b"EMU8000\0")
    body = b"sfbk" + _chunk(b"LIST", b"INFO" + info)
    body += _chunk(b"LIST", b"sdta" + _chunk(b"smpl", pcm))
    body += _chunk(b"LIST", b"pdta" + b"".join(_chunk(c, d) for c, d in pdta))
    path.write_bytes(_chunk(b"RIFF", body))
    return path


def _tracks(out: Path, meta: dict) -> list[Path]:
    return [out / split / name for split in SPLITS for name in meta["splits"][split]]


def test_layout_and_corpus_metadata(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    on_disk = read_corpus_metadata(out)
    assert on_disk["format"] == synth.FORMAT_VERSION == 2
    assert on_disk["seed"] == SEED and on_disk["sample_rate"] == 22050
    assert on_disk["complete"] is True
    assert set(on_disk["splits"]) == set(SPLITS)
    assert on_disk["fine_to_coarse"] == FINE_TO_COARSE
    assert sum(len(v) for v in on_disk["splits"].values()) == 6
    for split in SPLITS:
        assert on_disk["splits"][split], f"split {split} is empty"
        for name in on_disk["splits"][split]:
            track = out / split / name
            assert (track / "mixture.wav").is_file()
            tmeta = read_track_metadata(track)
            assert tmeta["track"] == name and tmeta["split"] == split
            assert tmeta["seed"] == SEED and tmeta["sample_rate"] == 22050
            assert "mixture" not in tmeta["stems"]
    assert meta["build"]["rendered_tracks"] == 6 and meta["build"]["kept_tracks"] == 0


def test_stems_sum_exactly_to_mixture(corpus: tuple[Path, dict]) -> None:
    """Produced stems are stereo, and the float mixture is exactly the sum of the 16-bit stems
    (every effect acts on a stem before the sum)."""
    out, meta = corpus
    for track in _tracks(out, meta):
        tmeta = read_track_metadata(track)
        mix, sr = sf.read(track / "mixture.wav", dtype="float32", always_2d=True)
        assert sr == 22050 and mix.shape == (int(SECONDS * sr), 2) == (len(mix), tmeta["channels"])
        assert sf.info(str(track / "mixture.wav")).subtype == "FLOAT"
        total = np.zeros(mix.shape, dtype=np.int64)
        for stem in tmeta["stems"]:
            info = sf.info(str(track / f"{stem}.wav"))
            assert info.subtype == "PCM_16" and info.channels == 2 and info.samplerate == sr
            x, _ = sf.read(track / f"{stem}.wav", dtype="int16", always_2d=True)
            assert x.shape == mix.shape
            assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 3, f"{track}/{stem} is silent"
            total += x
        assert np.array_equal((total / 32768.0).astype(np.float32), mix)
        assert np.max(np.abs(mix)) <= 1.0


def test_every_stem_is_mixed(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    assert meta["production"] is True
    for track in _tracks(out, meta):
        tmeta = read_track_metadata(track)
        assert tmeta["production"] is True and 0.2 <= tmeta["room"]["rt60_s"] <= 2.5
        for info in tmeta["stems"].values():
            chain = info["mix"]
            assert -1 <= chain["pan"] <= 1 and 0 <= chain["width"] <= 1
            assert {b["kind"] for b in chain["eq"]} <= {"highpass", "lowshelf", "highshelf", "peak"}
            if chain["compressor"] is not None:
                assert chain["compressor"]["ratio"] > 1


def test_every_stem_is_labelled(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    assert set(FINE_TO_COARSE.values()) == set(COARSE_CLASSES)
    seen = set()
    for track in _tracks(out, meta):
        tmeta = read_track_metadata(track)
        assert len(tmeta["stems"]) >= 2
        for stem, info in tmeta["stems"].items():
            assert info["fine"] in FINE_TO_COARSE
            assert info["coarse"] in COARSE_CLASSES
            assert info["coarse"] == FINE_TO_COARSE[info["fine"]]
            assert info["synthetic_voice"] == (info["coarse"] == "vocals")
            assert stem.split("_")[0] == rendering.file_safe(info["fine"])
            seen.add(info["coarse"])
    assert {"drums", "bass", "other"} <= seen


def test_instrument_of_every_stem_and_unseen_test_timbres(corpus: tuple[Path, dict]) -> None:
    """Each stem says what rendered it; of two drum kits the second plays the test split only,
    and the one sampled piano plays train and valid only."""
    out, meta = corpus
    assert meta["drum_kit_plan"] == {
        "train": ["KitA_LV2.sf2"],
        "valid": ["KitA_LV2.sf2"],
        "test": ["KitB_LV2.sf2"],
    }
    assert meta["sampled_piano_plan"] == {"train": ["piano"], "valid": ["piano"], "test": []}
    kinds = set()
    for track in _tracks(out, meta):
        tmeta = read_track_metadata(track)
        kits = set()
        for info in tmeta["stems"].values():
            inst = info["instrument"]
            kinds.add(inst["kind"])
            if inst["kind"] == "soundfont":
                assert inst["name"] == tmeta["soundfont"]
                assert (inst["bank"], inst["program"]) == (info["bank"], info["program"])
            elif inst["kind"] == "sampled drum kit":
                assert info["coarse"] == "drums"
                assert inst["name"] == (
                    "KitB_LV2.sf2" if tmeta["split"] == "test" else "KitA_LV2.sf2"
                )
            else:
                assert inst == {"kind": "sampled piano", "name": "piano"}
                assert info["fine"] == "piano" and tmeta["split"] != "test"
            if info["coarse"] == "drums":
                kits.add(inst["name"])
        assert len(kits) <= 1, "one kit plays all the drums of a track"
        if kits:
            assert tmeta["drum_kit"]["name"] in kits
    assert kinds == {"soundfont", "sampled drum kit", "sampled piano"}


def test_zero_shot_layout_in_test_split(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    first = read_track_metadata(out / "test" / meta["splits"]["test"][0])
    fines = {s["fine"] for s in first["stems"].values()}
    assert first["zero_shot_layout"] is True
    assert {"kick", "hi-hat", "piano", "electric guitar"} <= fines
    assert fines & {"bass", "synth bass"}


def test_no_test_piece_in_train(corpus: tuple[Path, dict]) -> None:
    out, meta = corpus
    pieces = meta["pieces"]
    assert not set(pieces["test"]) & (set(pieces["train"]) | set(pieces["valid"]))
    assert not set(pieces["valid"]) & set(pieces["train"])
    for split in SPLITS:
        for name in meta["splits"][split]:
            piece = read_track_metadata(out / split / name)["piece"]
            assert piece == "generated" or piece in pieces[split]
            if piece != "generated":
                assert composition.piece_split(piece) == split


def test_split_proportions() -> None:
    splits = [synth.split_of_index(i) for i in range(1000)]
    assert splits[:3] == ["test", "valid", "train"]
    assert splits.count("train") == 800 and splits.count("test") == 100


def test_deterministic_for_a_seed_across_processes(
    corpus: tuple[Path, dict], tmp_path: Path, sources: dict
) -> None:
    out, _ = corpus
    again = tmp_path / "again"
    meta = build_corpus(
        again,
        hours=3 * SECONDS / 3600,
        seed=SEED,
        track_seconds=SECONDS,
        jobs=2,
        **sources,
        progress=False,
    )
    assert meta["build"]["rendered_tracks"] == 3
    for split in SPLITS:
        for name in meta["splits"][split]:
            a, b = out / split / name, again / split / name
            stems = read_track_metadata(a)["stems"]
            assert stems == read_track_metadata(b)["stems"]
            for stem in list(stems) + ["mixture"]:
                assert (a / f"{stem}.wav").read_bytes() == (b / f"{stem}.wav").read_bytes()


def test_resume_keeps_finished_tracks(
    corpus: tuple[Path, dict], tmp_path: Path, sources: dict
) -> None:
    out, meta = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = copy / "train" / meta["splits"]["train"][-1]
    reference = (victim / "mixture.wav").read_bytes()
    shutil.rmtree(victim)
    # an interrupted render leaves a temporary folder behind: it is cleaned up
    (copy / "train" / f".{victim.name}.tmp-1").mkdir()
    before = {p: p.stat().st_mtime_ns for p in copy.glob("*/track_*/*.wav")}
    again = build_corpus(
        copy, hours=HOURS, seed=SEED, track_seconds=SECONDS, **sources, progress=False
    )
    assert again["build"]["rendered_tracks"] == 1 and again["build"]["kept_tracks"] == 5
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert (victim / "mixture.wav").read_bytes() == reference
    assert not list((copy / "train").glob(".*"))
    assert again["splits"] == meta["splits"]


def test_resume_with_other_settings_is_refused(corpus: tuple[Path, dict], sources: dict) -> None:
    out, _ = corpus
    with pytest.raises(DataError, match="seed"):
        build_corpus(
            out, hours=HOURS, seed=SEED + 1, track_seconds=SECONDS, **sources, progress=False
        )
    with pytest.raises(DataError, match="drum kits"):
        kits = sources["drum_kits"][:1]
        build_corpus(
            out, hours=HOURS, seed=SEED, track_seconds=SECONDS, **{**sources, "drum_kits": kits}
        )
    old = json.loads((out / "metadata.json").read_text())
    older = out.parent / (out.name + "-format1")
    older.mkdir()
    (older / "metadata.json").write_text(json.dumps({**old, "format": 1}))
    with pytest.raises(DataError, match="earlier corpus builder"):
        build_corpus(older, hours=HOURS, seed=SEED, track_seconds=SECONDS, **sources)


def test_one_soundfont_is_reserved_for_test(
    tmp_path: Path, soundfont: Path, chorales_only: None
) -> None:
    a, b = tmp_path / "a.sf2", tmp_path / "b.sf2"
    shutil.copy(soundfont, a)
    shutil.copy(soundfont, b)
    meta = build_corpus(
        tmp_path / "c",
        hours=0.0001,
        seed=1,
        track_seconds=2,
        soundfonts=[a, b],
        sampled=False,
        production=False,
        progress=False,
    )
    assert meta["soundfont_plan"] == {"train": ["a.sf2"], "valid": ["a.sf2"], "test": ["b.sf2"]}
    assert meta["soundfonts"]["test"] == ["b.sf2"]
    assert meta["soundfonts"]["train"] == ["a.sf2"]
    assert all(len(meta["splits"][s]) == 1 for s in SPLITS)
    # without production: dry mono stems that sum to the mixture
    track = tmp_path / "c" / "train" / meta["splits"]["train"][0]
    tmeta = read_track_metadata(track)
    assert tmeta["channels"] == 1 and tmeta["room"] is None
    total = sum(
        sf.read(track / f"{s}.wav", dtype="int16")[0].astype(np.int64) for s in tmeta["stems"]
    )
    mix = sf.read(track / "mixture.wav", dtype="float32")[0]
    assert all(i["mix"] is None for i in tmeta["stems"].values())
    assert np.array_equal((total / 32768.0).astype(np.float32), mix)


def test_user_errors(tmp_path: Path, soundfont: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build_corpus(tmp_path / "x", hours=0.001, seed=0, soundfonts=[tmp_path / "none.sf2"])
    with pytest.raises(DataError, match="hours"):
        build_corpus(tmp_path / "x", hours=0, seed=0, soundfonts=[soundfont])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(AqsepError):
        build_corpus(blocker / "sub", hours=0.001, seed=0, soundfonts=[soundfont], progress=False)
    with pytest.raises(DataError):
        read_track_metadata(tmp_path)


def _synth_parser() -> argparse.ArgumentParser:
    from aqsep.cli import synth as cli_synth

    parser = argparse.ArgumentParser(prog="aqsep")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_synth.add_parser(sub)
    return parser


def test_cli_parser_and_run(
    tmp_path: Path, soundfont: Path, capsys: pytest.CaptureFixture, chorales_only: None
) -> None:
    parser = _synth_parser()
    args = parser.parse_args(["synth", "--out", str(tmp_path / "c")])
    assert (args.hours, args.seed, args.sample_rate, args.track_seconds, args.jobs) == (
        1.0,
        0,
        22050,
        30.0,
        1,
    )
    assert args.soundfont is None and args.quiet is False
    assert args.drum_kit is None and args.samples is None and args.no_samples is False
    argv = [
        "synth",
        "--out",
        str(tmp_path / "c"),
        "--hours",
        "0.0001",
        "--seed",
        "2",
        "--track-seconds",
        "2",
        "--sample-rate",
        "16000",
        "--soundfont",
        str(soundfont),
        "--no-samples",
        "--quiet",
    ]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert "train 1" in line and "test 1" in line and "CPU second" in line
    meta = json.loads((tmp_path / "c" / "metadata.json").read_text())
    assert meta["sample_rate"] == 16000 and meta["seed"] == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--help"])
    assert "synthetic voice" in capsys.readouterr().out


def test_cli_main(
    tmp_path: Path, sources: dict, capsys: pytest.CaptureFixture, chorales_only: None
) -> None:
    from aqsep import cli

    out = tmp_path / "c"
    argv = [
        "synth",
        "--out",
        str(out),
        "--hours",
        "0.0001",
        "--track-seconds",
        "2",
        "--soundfont",
        str(sources["soundfonts"][0]),
        "--drum-kit",
        str(sources["drum_kits"][0]),
        "--samples",
        str(sources["samples"]),
        "--quiet",
    ]
    assert cli.main(argv) == 0
    assert "valid 1" in capsys.readouterr().out
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["drum_kit_plan"]["train"] == ["KitA_LV2.sf2"] and not meta["drum_kit_plan"]["test"]
    assert meta["sampled_piano_plan"]["valid"] == ["piano"]
    for wrong, message in (
        (["--soundfont", str(tmp_path / "missing.sf2")], "does not exist"),
        (["--samples", str(tmp_path)], "no piano note recordings"),
        (["--drum-kit", str(sources["soundfonts"][0])], "not a drum-kit soundfont"),
        (["--no-samples", "--samples", str(sources["samples"])], "turned off"),
    ):
        rc = cli.main(["synth", "--out", str(tmp_path / "d"), *wrong])
        err = capsys.readouterr().err
        assert rc != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_drum_kit_soundfonts_are_not_general_midi(
    tmp_path: Path, soundfont: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-preset drum-kit soundfont (Debian's avldrums.lv2-soundfont puts two in
    /usr/share/sounds/sf2) must not be taken for a General MIDI set: its preset 0 would be
    played as a piano, and a track of it alone has no two audible stems."""
    folder = tmp_path / "sf2"
    folder.mkdir()
    kit = write_sf2(folder / "Kit_4_LV2.sf2", [(0, 0)])
    gm = write_sf2(folder / "gm.sf2", [(0, p) for p in range(128)] + [(128, 0)])
    assert instruments.soundfont_presets(kit) == [(0, 0, "p")]
    assert not instruments.is_general_midi(kit)
    assert instruments.is_general_midi(gm) and instruments.is_general_midi(soundfont)
    monkeypatch.setattr(instruments, "_SOUNDFONT_DIRS", (str(folder),))
    assert default_soundfonts() == [gm, soundfont]
    with pytest.raises(DataError, match="not a General MIDI set"):
        build_corpus(tmp_path / "c", hours=0.001, seed=0, soundfonts=[kit], progress=False)
    not_sf = tmp_path / "x.sf2"
    not_sf.write_bytes(b"RIFF\0\0\0\0WAVE")
    with pytest.raises(DataError, match="not a soundfont"):
        instruments.soundfont_presets(not_sf)


def test_installed_drum_kits_are_not_general_midi() -> None:
    kits = [p for p in Path("/usr/share/sounds/sf2").glob("*_LV2.sf2") if p.is_file()]
    if not kits:
        pytest.skip("avldrums.lv2-soundfont is not installed")
    chosen = {p.resolve() for p in default_soundfonts()}
    for kit in kits:
        assert not instruments.is_general_midi(kit)
        assert kit.resolve() not in chosen


def test_sampled_piano_pitch_velocity_and_release(tmp_path: Path) -> None:
    from aqsep.data.synth.sampled import SampledPiano, find_piano_samples

    folder = write_piano(
        tmp_path / "node_modules" / "@audio-samples" / "piano-velocity10" / "audio"
    )
    assert find_piano_samples(tmp_path) == folder
    sr = 22050
    piano = SampledPiano(folder, sr)

    def note(key: int, velocity: int, held: float = 0.5, length: float = 1.0) -> np.ndarray:
        return piano.render([(0, int(held * sr), key, velocity)], int(length * sr))

    x = note(62, 100)  # D4, from the D#4 recording a semitone lower
    assert x.shape == (sr, 2) and x.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(x[:8192, 0] * np.hanning(8192)))
    f0 = np.fft.rfftfreq(8192, 1 / sr)[np.argmax(spectrum)]
    assert abs(f0 - 293.66) < 3.0

    def centroid(y: np.ndarray) -> float:
        s = np.abs(np.fft.rfft(y[:8192, 0]))
        return float((s * np.arange(len(s))).sum() / s.sum())

    soft, loud = note(60, 40), note(60, 110)
    assert np.sqrt(np.mean(loud**2)) > 4 * np.sqrt(np.mean(soft**2))
    assert centroid(soft) < centroid(loud)  # a soft note is darker
    short = note(60, 100, held=0.1)
    late = slice(int(0.5 * sr), sr)
    assert np.sqrt(np.mean(short[late] ** 2)) < 0.05 * np.sqrt(np.mean(x[late] ** 2))


# ---------------------------------------------------------------------------------------------
# The production effects, each on a tiny signal
# ---------------------------------------------------------------------------------------------

SR = 16000


def _tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None]


def _gain_db(y: np.ndarray, x: np.ndarray) -> float:
    core = slice(len(x) // 4, None)  # past the filter's transient
    return mixing.rms_db(y[core]) - mixing.rms_db(x[core])


def test_eq_bands_change_what_they_say() -> None:
    peak = [mixing.Band("peak", 1000.0, 6.0, 1.0)]
    assert abs(_gain_db(mixing.equalize(_tone(1000), peak, SR), _tone(1000)) - 6.0) < 0.3
    assert abs(_gain_db(mixing.equalize(_tone(100), peak, SR), _tone(100))) < 0.3
    low = [mixing.Band("lowshelf", 300.0, -6.0)]
    assert abs(_gain_db(mixing.equalize(_tone(50), low, SR), _tone(50)) + 6.0) < 0.5
    assert abs(_gain_db(mixing.equalize(_tone(4000), low, SR), _tone(4000))) < 0.5
    high = [mixing.Band("highshelf", 2000.0, 4.0)]
    assert abs(_gain_db(mixing.equalize(_tone(6000), high, SR), _tone(6000)) - 4.0) < 0.5
    hp = [mixing.Band("highpass", 400.0)]
    assert _gain_db(mixing.equalize(_tone(100), hp, SR), _tone(100)) < -20.0
    assert abs(_gain_db(mixing.equalize(_tone(3000), hp, SR), _tone(3000))) < 0.5


def test_compressor_lowers_the_crest_factor_and_keeps_the_loudness() -> None:
    """Soft playing with short loud accents comes out with smaller peaks for its loudness."""

    def note(seconds: float, amplitude: float) -> np.ndarray:
        t = np.arange(int(seconds * SR)) / SR
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
        return amplitude * np.sin(2 * np.pi * 440 * t) * ramp

    x = np.concatenate([note(0.4, 0.1), note(0.05, 0.9)] * 3).astype(np.float32)[:, None]
    comp = mixing.Compressor(threshold_db=-6.0, ratio=6.0, attack_s=0.001, release_s=0.03)
    y = mixing.compress(x, comp, SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert mixing.crest_factor_db(y) < mixing.crest_factor_db(x) - 3.0
    assert abs(mixing.active_db(y, SR) - mixing.active_db(x, SR)) < 0.01  # the make-up gain
    gentle = mixing.compress(x, mixing.Compressor(-6.0, 1.5, 0.001, 0.03), SR)
    assert mixing.crest_factor_db(y) < mixing.crest_factor_db(gentle) < mixing.crest_factor_db(x)
    quiet = mixing.compress(x * np.float32(0.01), comp, SR)  # the threshold follows the level
    assert abs(mixing.crest_factor_db(quiet) - mixing.crest_factor_db(y)) < 0.1


def test_pan_moves_the_balance_with_constant_power() -> None:
    x = _tone(440)
    power = float(np.sum(x.astype(np.float64) ** 2))
    for position in (-0.8, -0.3, 0.0, 0.5):
        y = mixing.pan(x, position)
        left, right = (float(np.sum(y[:, c].astype(np.float64) ** 2)) for c in (0, 1))
        assert abs(left + right - power) < 1e-4 * power  # the same power everywhere
        theta = (position + 1) * np.pi / 4
        balance = 20 * np.log10(np.cos(theta) / np.sin(theta))
        assert abs(10 * np.log10(left / right) - balance) < 0.05
    hard_right = mixing.pan(x, 1.0)
    assert np.max(np.abs(hard_right[:, 0])) < 1e-6 and np.allclose(hard_right[:, 1], x[:, 0])
    stereo = np.concatenate([_tone(440), _tone(660)], axis=1)
    centre = mixing.pan(stereo, 0.0, 1.0)
    assert np.allclose(centre, stereo, atol=1e-6)  # the centre leaves a stereo source as it is
    narrow = mixing.pan(stereo, 0.0, 0.0)
    assert np.allclose(narrow[:, 0], narrow[:, 1])  # width 0: mono
    left = mixing.pan(stereo, -0.6, 1.0)
    assert np.sum(left[:, 0] ** 2) > 3 * np.sum(left[:, 1] ** 2)


def test_room_reverb_is_a_decaying_stereo_tail() -> None:
    room = mixing.Room(rt60_s=0.6, predelay_s=0.01, damping=0.5, crossover_hz=3000.0, seed=3)
    ir = mixing.room_impulse(room, SR)
    assert np.array_equal(ir, mixing.room_impulse(room, SR))
    assert ir.shape == (int(0.01 * SR) + int(0.6 * SR), 2)
    assert not np.any(ir[: int(0.01 * SR)])  # the pre-delay
    assert np.allclose(np.sum(ir.astype(np.float64) ** 2, axis=0), 1.0, atol=1e-4)
    body = ir[int(0.01 * SR) :]
    assert abs(np.corrcoef(body[:, 0], body[:, 1])[0, 1]) < 0.2  # a wide, decorrelated tail
    tenth = len(body) // 10
    assert mixing.rms_db(body[-tenth:]) < mixing.rms_db(body[:tenth]) - 35
    n = SR
    impulse = np.zeros((n, 1), dtype=np.float32)
    impulse[100] = 1.0
    wet = mixing.Reverb(ir, n).wet(impulse, -6.0)
    expected = ir * np.float32(10 ** (-6 / 20))
    assert np.allclose(wet[100 : 100 + len(ir)], expected, atol=1e-5)
    assert not np.any(np.abs(wet[:100]) > 1e-5)


def test_stem_mix_is_drawn_from_the_track_generator() -> None:
    draws = [
        mixing.draw_stem_mix(np.random.default_rng(5), "snare", "drums", -1.0) for _ in range(2)
    ]
    assert draws[0] == draws[1]
    x = np.random.default_rng(0).standard_normal((SR, 2)).astype(np.float32) * np.float32(0.1)
    room = mixing.Reverb(mixing.room_impulse(mixing.draw_room(np.random.default_rng(1)), SR), SR)
    a = mixing.apply_stem_mix(x, draws[0], room, SR)
    assert np.array_equal(a, mixing.apply_stem_mix(x, draws[1], room, SR))
    assert a.shape == (SR, 2) and np.all(np.isfinite(a))
    hats = [
        mixing.draw_stem_mix(np.random.default_rng(i), "hi-hat", "drums", 1.0) for i in range(8)
    ]
    assert all(h.position > 0 for h in hats)  # the kit's side, for every track's hi-hat
    assert all(
        mixing.draw_stem_mix(np.random.default_rng(i), "bass", "bass").send_db is None
        for i in range(8)
    )


def test_seeds_and_sizes_out_of_bounds_are_refused_before_anything_is_written(
    tmp_path: Path, soundfont: Path
) -> None:
    out = tmp_path / "x"
    with pytest.raises(DataError, match="seed must be a whole number from 0"):
        build_corpus(out, hours=0.001, seed=-1, soundfonts=[soundfont], progress=False)
    with pytest.raises(DataError, match="at most 100000"):
        build_corpus(out, hours=1e9, seed=0, soundfonts=[soundfont], progress=False)
    assert not out.exists()


def test_a_full_disk_names_the_track_and_leaves_no_half_written_one(
    tmp_path: Path, sources: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    written: list[str] = []

    def full(path: object, *args: object, **kwargs: object) -> None:
        written.append(str(path))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sf, "write", full)
    out = tmp_path / "corpus"
    with pytest.raises(OutputError, match="disk full") as caught:
        build_corpus(
            out,
            hours=3 * SECONDS / 3600,
            seed=SEED,
            track_seconds=SECONDS,
            **sources,
            progress=False,
        )
    assert written and "track_" in str(caught.value) and str(out) in str(caught.value)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or p.name.startswith("track_")]
