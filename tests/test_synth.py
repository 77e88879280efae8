"""The offline corpus builder: layout, labels, exact mixtures, splits, determinism, resume, CLI."""

from __future__ import annotations

import argparse
import importlib
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
    read_corpus_metadata,
    read_track_metadata,
    rendering,
)
from aqsep.errors import AqsepError, DataError  # noqa: E402

SEED = 7
SECONDS = 3.0
HOURS = 6 * SECONDS / 3600  # six tracks: test 0, valid 1, train 2..5


@pytest.fixture(scope="module")
def soundfont() -> Path:
    path = bundled_soundfont()
    if path is None:
        pytest.skip("pretty_midi's soundfont is not installed")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, soundfont: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    meta = build_corpus(
        out, hours=HOURS, seed=SEED, track_seconds=SECONDS, soundfonts=[soundfont], progress=False
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
    assert on_disk["format"] == 1
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
    out, meta = corpus
    for track in _tracks(out, meta):
        tmeta = read_track_metadata(track)
        mix, sr = sf.read(track / "mixture.wav", dtype="float32")
        assert sr == 22050 and mix.ndim == 1
        assert len(mix) == int(SECONDS * sr)
        assert sf.info(str(track / "mixture.wav")).subtype == "FLOAT"
        total = np.zeros_like(mix, dtype=np.float64)
        for stem in tmeta["stems"]:
            info = sf.info(str(track / f"{stem}.wav"))
            assert info.subtype == "PCM_16" and info.channels == 1 and info.samplerate == sr
            x, _ = sf.read(track / f"{stem}.wav", dtype="float32")
            assert len(x) == len(mix)
            assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 1e-4, f"{track}/{stem} is silent"
            total += x
        assert np.max(np.abs(total - mix)) <= 1e-6
        assert np.max(np.abs(mix)) <= 1.0


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
            assert info["soundfont"] == tmeta["soundfont"]
            seen.add(info["coarse"])
    assert {"drums", "bass", "other"} <= seen


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
    corpus: tuple[Path, dict], tmp_path: Path, soundfont: Path
) -> None:
    out, _ = corpus
    again = tmp_path / "again"
    meta = build_corpus(
        again,
        hours=3 * SECONDS / 3600,
        seed=SEED,
        track_seconds=SECONDS,
        jobs=2,
        soundfonts=[soundfont],
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
    corpus: tuple[Path, dict], tmp_path: Path, soundfont: Path
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
        copy, hours=HOURS, seed=SEED, track_seconds=SECONDS, soundfonts=[soundfont], progress=False
    )
    assert again["build"]["rendered_tracks"] == 1 and again["build"]["kept_tracks"] == 5
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    assert (victim / "mixture.wav").read_bytes() == reference
    assert not list((copy / "train").glob(".*"))
    assert again["splits"] == meta["splits"]


def test_resume_with_other_settings_is_refused(corpus: tuple[Path, dict], soundfont: Path) -> None:
    out, _ = corpus
    with pytest.raises(DataError, match="seed"):
        build_corpus(
            out,
            hours=HOURS,
            seed=SEED + 1,
            track_seconds=SECONDS,
            soundfonts=[soundfont],
            progress=False,
        )


def test_one_soundfont_is_reserved_for_test(
    tmp_path: Path, soundfont: Path, chorales_only: None
) -> None:
    a, b = tmp_path / "a.sf2", tmp_path / "b.sf2"
    shutil.copy(soundfont, a)
    shutil.copy(soundfont, b)
    meta = build_corpus(
        tmp_path / "c", hours=0.0001, seed=1, track_seconds=2, soundfonts=[a, b], progress=False
    )
    assert meta["soundfont_plan"] == {"train": ["a.sf2"], "valid": ["a.sf2"], "test": ["b.sf2"]}
    assert meta["soundfonts"]["test"] == ["b.sf2"]
    assert meta["soundfonts"]["train"] == ["a.sf2"]
    assert all(len(meta["splits"][s]) == 1 for s in SPLITS)


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
    tmp_path: Path, soundfont: Path, capsys: pytest.CaptureFixture, chorales_only: None
) -> None:
    from aqsep import cli

    for name in cli.SUBCOMMANDS:
        try:
            importlib.import_module(f"aqsep.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"aqsep.cli.{name}":
                pytest.skip(f"subcommand module aqsep.cli.{name} is not written yet")
            raise
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
        str(soundfont),
        "--quiet",
    ]
    assert cli.main(argv) == 0
    assert "valid 1" in capsys.readouterr().out
    rc = cli.main(["synth", "--out", str(out), "--soundfont", str(tmp_path / "missing.sf2")])
    assert rc != 0
    assert "does not exist" in capsys.readouterr().err


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
