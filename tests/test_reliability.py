"""One test (or more) per row of docs/reliability.md: bad input, odd formats, failing disks,
interrupted and concurrent runs, unknown classes, broken or unsafe model files.

Each user error must surface as one line ``aqsep: error: ...`` with a non-zero exit and leave no
file under a final output name.
"""

from __future__ import annotations

import errno
import json
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_audio, subprocess_env, write_file

from aqsep import Separator
from aqsep.errors import AudioError, ModelError, OutputError, QueryError
from aqsep.release import load_model

HAS_MP3 = "MP3" in sf.available_formats()


@pytest.fixture(scope="module")
def sep(tiny_model_dir) -> Separator:
    return Separator(tiny_model_dir, device="cpu")


@pytest.fixture
def song(tmp_path):
    return write_file(tmp_path / "song.wav", make_audio(0.6, 44100, 2), 44100)


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder``, hidden temporaries included."""
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


def separate_cli(cli, path, model, out, *extra):
    return cli("separate", path, "--target", "drums", "--model", model, "-o", out, *extra)


# ---- files that are not usable audio -----------------------------------------------------------
def test_empty_file(cli, tmp_path, tiny_model_dir):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert line == f"aqsep: error: {path}: empty file (0 bytes)"
    assert files_under(tmp_path / "out") == []


def test_zero_length_audio(cli, tmp_path, tiny_model_dir):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros((0, 2), np.float32), 44100)
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert "holds no audio (zero-length)" in line
    assert files_under(tmp_path / "out") == []


def test_not_audio(cli, tmp_path, tiny_model_dir):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 50)
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert str(path) in line and ("not audio" in line or "cannot be read" in line)
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["zip", "midi"])
def test_unsupported_container(cli, tmp_path, tiny_model_dir, kind):
    if kind == "zip":
        path = tmp_path / "stems.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "stems inside")
    else:  # a valid, empty MIDI file: symbolic music, not audio
        path = tmp_path / "song.mid"
        path.write_bytes(
            b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
        )
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert str(path) in line
    assert files_under(tmp_path / "out") == []


def test_unsupported_container_without_pyav_says_what_to_do(tmp_path, monkeypatch):
    import builtins

    from aqsep.audio import AudioReader

    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("no av")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))
    with pytest.raises(AudioError, match="PyAV.*is not installed: reinstall aqsep"):
        AudioReader(path)


def test_container_libsndfile_lacks_is_decoded_and_scaled_like_the_wav(tmp_path, sep):
    from test_audio import encode_with_av

    from aqsep.audio import read_audio

    wav = write_file(tmp_path / "song.wav", make_audio(0.5, 44100, 2), 44100)
    audio = read_audio(wav)[0]
    m4a = encode_with_av(tmp_path / "song.m4a", audio, 44100, "alac")  # decodes to integers
    np.testing.assert_allclose(read_audio(m4a)[0], audio, atol=1e-6)
    result = sep.separate_file(m4a, tmp_path / "out", sep.class_latent("drums"))
    assert sf.info(str(result.outputs["target"])).frames == sf.info(str(wav)).frames


# ---- truncated or corrupt files ----------------------------------------------------------------
def _encoded(tmp_path, fmt: str) -> bytes:
    ext = fmt.lower()
    path = tmp_path / f"full.{ext}"
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(str(path), make_audio(2.0, 44100, 2).T, 44100, format=fmt, subtype=subtype)
    return path.read_bytes()


def test_truncated_wav_is_a_clear_error_like_flac_and_mp3(cli, tmp_path, tiny_model_dir):
    # libsndfile sizes a truncated WAV by the data actually there, which would be separated as
    # if it were the whole recording; the header's own size tells that it is not
    data = _encoded(tmp_path, "WAV")
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2 + 1])
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert str(path) in line and "truncated: its header announces" in line
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize(
    "fmt", ["FLAC", pytest.param("MP3", marks=pytest.mark.skipif(not HAS_MP3, reason="no MP3"))]
)
@pytest.mark.parametrize("keep", [0.5, 0.03])
def test_truncated_flac_and_mp3_are_clear_errors(cli, tmp_path, tiny_model_dir, fmt, keep):
    data = _encoded(tmp_path, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert str(path) in line and ("truncated" in line or "corrupt" in line)
    assert files_under(tmp_path / "out") == []  # temporaries removed, nothing under a final name


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_corrupt_header_is_a_clear_error(cli, tmp_path, tiny_model_dir, fmt):
    data = bytearray(_encoded(tmp_path, fmt))
    data[:48] = np.random.default_rng(0).integers(0, 256, 48, dtype=np.uint8).tobytes()
    path = tmp_path / f"bad.{fmt.lower()}"
    path.write_bytes(bytes(data))
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert str(path) in line
    assert files_under(tmp_path / "out") == []


@pytest.mark.skipif(not HAS_MP3, reason="libsndfile without MP3")
def test_corrupt_mp3_decodes_what_is_decodable_or_fails_cleanly(cli, tmp_path, tiny_model_dir):
    # MP3 is a stream of self-synchronising frames: the decoder skips damaged ones, as players do
    data = bytearray(_encoded(tmp_path, "MP3"))
    data[:64] = bytes(64)
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)
    path = tmp_path / "bad.mp3"
    path.write_bytes(bytes(data))
    res = separate_cli(cli, path, tiny_model_dir, tmp_path / "out", "-q")
    if res.code == 0:
        out, _ = sf.read(str(tmp_path / "out" / "bad" / "drums.wav"))
        assert len(out) == sf.info(str(path)).frames and np.isfinite(out).all()
    else:
        assert str(path) in res.one_line_error()
        assert files_under(tmp_path / "out") == []


def test_corrupt_flac_frames_are_a_clear_error(cli, tmp_path, tiny_model_dir):
    data = bytearray(_encoded(tmp_path, "FLAC"))
    mid = len(data) // 2
    data[mid : mid + 4000] = bytes(4000)
    path = tmp_path / "bad.flac"
    path.write_bytes(bytes(data))
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out").one_line_error()
    assert "truncated or corrupt" in line
    assert files_under(tmp_path / "out") == []


# ---- very short input --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "samples", [1, 50, 4410]
)  # 1 and 50: less than one STFT frame; 4410: < 1 segment
def test_audio_shorter_than_a_frame_or_a_segment(cli, tmp_path, tiny_model_dir, samples):
    path = write_file(tmp_path / "tiny.wav", make_audio(samples / 44100, 44100, 2), 44100)
    assert sf.info(str(path)).frames == samples
    res = separate_cli(cli, path, tiny_model_dir, tmp_path / "out", "--residual", "-q")
    assert res.code == 0, res.err
    for name in ("drums", "rest"):
        info = sf.info(str(tmp_path / "out" / "tiny" / f"{name}.wav"))
        assert (info.frames, info.channels, info.samplerate) == (samples, 2, 44100)


# ---- queries -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "level_db", [None, -70.0]
)  # digital silence; noise far below the threshold
def test_silent_or_near_silent_query_is_refused(cli, tmp_path, song, tiny_model_dir, sep, level_db):
    n = 22050
    clip = np.zeros((1, n), np.float32)
    if level_db is not None:
        clip[0] = 10 ** (level_db / 20) * np.random.default_rng(0).standard_normal(n)
    path = write_file(tmp_path / "quiet.wav", clip, 22050, subtype="FLOAT")
    line = cli(
        "separate", song, "--query", path, "--model", tiny_model_dir, "-o", tmp_path / "o"
    ).one_line_error()
    assert "is silent" in line and "dBFS" in line and "--target" in line
    with pytest.raises(QueryError, match="silent"):
        sep.query_latent([(clip, 22050)])


def test_silent_range_of_the_input_is_refused(cli, tmp_path, tiny_model_dir):
    audio = make_audio(1.0, 22050, 1)
    audio[:, :11025] = 0
    path = write_file(tmp_path / "intro.wav", audio, 22050)
    line = cli(
        "separate", path, "--query-range", "0-0.4", "--model", tiny_model_dir, "-o", tmp_path
    ).one_line_error()
    assert "range 0:0.4 s" in line and "is silent" in line


def test_query_longer_than_the_mixture(cli, tmp_path, tiny_model_dir):
    song = write_file(tmp_path / "short.wav", make_audio(0.3, 44100, 2), 44100)
    clip = write_file(tmp_path / "long.wav", make_audio(4.0, 44100, 1, seed=4), 44100)
    res = cli(
        "separate", song, "--query", clip, "--model", tiny_model_dir, "-o", tmp_path / "o", "-q"
    )
    assert res.code == 0, res.err
    assert sf.info(str(tmp_path / "o" / "short" / "target.wav")).frames == sf.info(str(song)).frames


def test_unknown_class_lists_the_known_ones(cli, song, tiny_model_dir, sep):
    line = cli("separate", song, "--target", "kazoo", "--model", tiny_model_dir).one_line_error()
    assert (
        line == "aqsep: error: unknown class 'kazoo'; this model knows: bass, drums, other, vocals"
    )
    with pytest.raises(QueryError, match="bass, drums, other, vocals"):
        sep.class_latent("kazoo")


# ---- sample values -----------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_samples(cli, tmp_path, tiny_model_dir, sep, bad):
    audio = make_audio(1.0, 22050, 2)
    audio[1, 15000] = bad
    path = write_file(tmp_path / "bad.wav", audio, 22050, subtype="FLOAT")
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out", "--residual").one_line_error()
    assert "NaN or infinite" in line and str(path) in line
    assert files_under(tmp_path / "out") == []  # it failed mid-file: no partial output remains
    with pytest.raises(AudioError, match="NaN or infinite"):
        sep.separate(audio, 22050, sep.class_latent("drums"))


def test_huge_finite_samples_are_refused(cli, tmp_path, tiny_model_dir, sep):
    audio = make_audio(1.0, 22050, 2)
    audio[:, ::100] = 3e38 * np.sign(audio[:, ::100] + 1e-9)  # finite, but they overflow the STFT
    path = write_file(tmp_path / "huge.wav", audio, 22050, subtype="FLOAT")
    line = separate_cli(cli, path, tiny_model_dir, tmp_path / "out", "--residual").one_line_error()
    assert "beyond +-10000" in line and str(path) in line and "3e+38" in line
    assert files_under(tmp_path / "out") == []
    with pytest.raises(AudioError, match="beyond"):
        sep.separate(audio, 22050, sep.class_latent("drums"))
    with pytest.raises(AudioError, match="beyond"):
        sep.query_latent((audio, 22050))


def test_a_network_giving_nan_is_a_model_error(tmp_path, tiny_model_dir, song):
    released = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in released.model.parameters():
            p.fill_(float("nan"))
    broken = Separator(released, device="cpu")
    z = broken.class_latent("drums")
    with pytest.raises(ModelError, match="gave a mask holding NaN"):
        broken.separate_file(song, tmp_path / "out", z)
    assert files_under(tmp_path / "out") == []
    with pytest.raises(ModelError, match="gave a latent holding NaN"):
        broken.query_latent([song])
    with pytest.raises(ModelError, match="gave a latent holding NaN"):
        broken.range_latent(song, 0.0, None)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m * 1000, r"values from .* not in \[0, 1\]"),
        (lambda m: m[..., :-1], "of shape"),
        (lambda m: m.transpose(-1, -2), "of shape"),
    ],
)
def test_a_mask_out_of_range_or_of_the_wrong_shape_is_a_model_error(
    tmp_path, tiny_model_dir, song, monkeypatch, damage, message
):
    from aqsep.model import QuerySeparator

    plain = QuerySeparator.mask
    monkeypatch.setattr(QuerySeparator, "mask", lambda self, m, z: damage(plain(self, m, z)))
    broken = Separator(tiny_model_dir, device="cpu")
    z = broken.class_latent("drums")
    with pytest.raises(ModelError, match=message):
        broken.separate_file(song, tmp_path / "out", {"drums": z, "bass": z})
    assert files_under(tmp_path / "out") == []


def test_clipped_input_works(cli, tmp_path, tiny_model_dir):
    audio = np.clip(8.0 * make_audio(0.5, 22050, 2), -1.0, 1.0)  # flat tops at full scale
    path = write_file(tmp_path / "clipped.wav", audio, 22050, subtype="PCM_16")
    res = separate_cli(
        cli, path, tiny_model_dir, tmp_path / "out", "--residual", "--bits", "32f", "-q"
    )
    assert res.code == 0, res.err
    est, _ = sf.read(str(tmp_path / "out" / "clipped" / "drums.wav"))
    assert est.shape == (11025, 2) and np.isfinite(est).all()


def test_input_past_full_scale_is_clamped_in_integer_outputs_and_counted(
    cli, tmp_path, tiny_model_dir, sep
):
    audio = np.clip(
        10.0 * make_audio(0.5, 22050, 2), -3.0, 3.0
    )  # a float file, peaks at 3x full scale
    path = write_file(tmp_path / "loud.wav", audio, 22050, subtype="FLOAT")
    res = separate_cli(cli, path, tiny_model_dir, tmp_path / "out", "--residual")
    assert res.code == 0, res.err
    assert re.search(r"; \d+ samples clipped to \[-1, 1\]", res.out), res.out
    est, _ = sf.read(str(tmp_path / "out" / "loud" / "drums.wav"))
    assert (
        np.abs(est).max() <= 1.0 and np.abs(est).max() > 0.99
    )  # clamped at full scale, not wrapped
    result = sep.separate_file(path, tmp_path / "api", sep.class_latent("drums"), residual=True)
    assert result.clipped > 0
    # float output keeps the values as they are
    sep.separate_file(path, tmp_path / "float", sep.class_latent("drums"), bits="32f")
    assert np.abs(sf.read(str(tmp_path / "float" / "loud" / "target.wav"))[0]).max() > 1.0


# ---- channels, rates, sample formats -----------------------------------------------------------
@pytest.mark.parametrize(
    ("channels", "sr", "subtype"),
    [
        (1, 44100, "PCM_16"),
        (2, 44100, "PCM_16"),
        (6, 44100, "PCM_16"),
        (2, 8000, "PCM_16"),
        (2, 16000, "PCM_16"),
        (2, 96000, "PCM_16"),
        (2, 192000, "PCM_16"),
        (2, 44100, "PCM_24"),
        (2, 44100, "FLOAT"),
        (2, 48000, "DOUBLE"),
    ],
)
def test_channels_rates_and_sample_formats(tmp_path, sep, channels, sr, subtype):
    path = write_file(tmp_path / "in.wav", make_audio(0.3, sr, channels), sr, subtype=subtype)
    result = sep.separate_file(path, tmp_path / "out", sep.class_latent("other"), residual=True)
    for out in result.outputs.values():
        info = sf.info(str(out))
        assert (info.frames, info.samplerate, info.channels) == (round(0.3 * sr), sr, channels)
    est, _ = sf.read(str(result.outputs["target"]), always_2d=True)
    assert np.isfinite(est).all() and np.abs(est).max() > 0


# ---- output problems ---------------------------------------------------------------------------
def test_output_folder_that_cannot_be_created(cli, tmp_path, song, tiny_model_dir, sep):
    # tests run as root, whom permissions do not stop: a regular file where a folder must go does
    blocker = tmp_path / "a-file"
    blocker.write_text("a regular file where a folder should be")
    line = separate_cli(cli, song, tiny_model_dir, blocker / "out").one_line_error()
    assert "cannot write to" in line and str(blocker) in line
    with pytest.raises(OutputError, match="cannot write to"):
        sep.separate_file(song, blocker, sep.class_latent("drums"))


def test_output_that_cannot_be_renamed_into_place(cli, tmp_path, song, tiny_model_dir, monkeypatch):
    import aqsep.audio

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(aqsep.audio.os, "replace", refuse)
    line = separate_cli(cli, song, tiny_model_dir, tmp_path / "out").one_line_error()
    assert "cannot write" in line and "Permission denied" in line
    assert files_under(tmp_path / "out") == []


def test_disk_full_mid_write(cli, tmp_path, tiny_model_dir, monkeypatch):
    song = write_file(tmp_path / "long.wav", make_audio(3.0, 22050, 2), 22050)
    real_write = sf.SoundFile.write
    calls = {"n": 0}

    def write_then_fill_up(self, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", write_then_fill_up)
    line = separate_cli(
        cli, song, tiny_model_dir, tmp_path / "out", "--residual", "--batch-size", "1"
    ).one_line_error()
    assert "disk full" in line and "No space left on device" in line
    assert calls["n"] == 4  # it failed mid-file, after some blocks were written
    assert files_under(tmp_path / "out") == []


def test_force_never_writes_over_the_input(cli, tmp_path, tiny_model_dir, sep):
    out = tmp_path / "o7"
    song = write_file(out / "drums" / "drums.wav", make_audio(0.6, 44100, 2), 44100)
    original = song.read_bytes()
    line = separate_cli(cli, song, tiny_model_dir, out, "--force").one_line_error()
    assert "is an input" in line and str(song) in line
    # without --force too: rest.wav is missing, so the track is not skipped
    line = separate_cli(cli, song, tiny_model_dir, out, "--residual").one_line_error()
    assert "is an input" in line
    # the input named through a link (track "drums" as well), and the API
    link = tmp_path / "links" / "drums.wav"
    link.parent.mkdir()
    link.symlink_to(song)
    with pytest.raises(OutputError, match="is an input"):
        sep.separate_file(link, out, sep.class_latent("drums"), name="drums", force=True)
    assert song.read_bytes() == original
    assert files_under(out) == ["drums/drums.wav"]


def test_no_track_writes_over_another_tracks_input_or_a_query(cli, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    first = write_file(out / "song" / "drums.wav", make_audio(0.6, 44100, 2), 44100)
    song = write_file(tmp_path / "song.wav", make_audio(0.6, 44100, 2, seed=1), 44100)
    original = first.read_bytes()
    line = cli(
        "separate",
        first,
        song,
        "--target",
        "drums",
        "--model",
        tiny_model_dir,
        "-o",
        out,
        "--force",
    ).one_line_error()
    assert "is an input" in line and str(first) in line
    line = cli(
        "separate",
        song,
        "--query",
        first,
        "--name",
        "drums",
        "--model",
        tiny_model_dir,
        "-o",
        out,
        "--force",
    ).one_line_error()
    assert "is an input" in line
    assert first.read_bytes() == original
    assert files_under(out) == ["song/drums.wav"]


@pytest.mark.parametrize("bits", ["16", "32f"])
def test_wav_outputs_past_4_gib_are_written_as_rf64(tmp_path, sep, monkeypatch, bits):
    import aqsep.audio

    # 4 GiB of output would take minutes: the limit is lowered instead, the logic is the same
    monkeypatch.setattr(aqsep.audio, "WAV_MAX_DATA_BYTES", 40_000)
    song = write_file(tmp_path / "song.wav", make_audio(0.6, 44100, 2), 44100)  # 26460 frames
    small = write_file(tmp_path / "small.wav", make_audio(0.1, 44100, 2), 44100)
    result = sep.separate_file(
        song, tmp_path / "out", sep.class_latent("drums"), residual=True, bits=bits
    )
    for path in result.outputs.values():
        info = sf.info(str(path))
        assert info.format == "RF64" and info.frames == 26460, info
    info = sf.info(
        str(sep.separate_file(small, tmp_path / "out", sep.class_latent("drums")).outputs["target"])
    )
    assert info.format == "WAV"  # under the limit: a plain WAV, as before
    # a writer that does not know the length refuses to pass the limit
    audio = make_audio(0.6, 44100, 2)
    with pytest.raises(OutputError, match="passes 4 GiB"):
        with aqsep.audio.AtomicAudioWriter(tmp_path / "w" / "x.wav", 44100, 2) as writer:
            for start in range(0, audio.shape[1], 4096):
                writer.write(audio[:, start : start + 4096])
    assert files_under(tmp_path / "w") == []


# A separation slowed down to take seconds, in a real process, to kill it or run two at once.
SLOW_RUN = """
import sys, time
import aqsep.model
mask = aqsep.model.QuerySeparator.mask
def slow_mask(self, magnitude, z):
    time.sleep(float(sys.argv[1]))
    return mask(self, magnitude, z)
aqsep.model.QuerySeparator.mask = slow_mask
from aqsep.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _slow_cmd(delay: float, song: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        SLOW_RUN,
        str(delay),
        "separate",
        str(song),
        "--target",
        "drums",
        "--model",
        str(model),
        "-o",
        str(out),
        "--batch-size",
        "1",
        "-q",
        *extra,
    ]


@pytest.mark.slow
def test_two_runs_writing_the_same_folder_at_once(tmp_path, tiny_model_dir):
    song = write_file(tmp_path / "song.wav", make_audio(2.0, 8000, 2), 8000)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            _slow_cmd(0.1, song, tiny_model_dir, out, "--force", "--residual"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        for _ in range(2)
    ]
    most_at_once = 0  # writers seen with a temporary file at the same moment
    deadline = time.monotonic() + 180
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        temps = list((out / "song").glob(".drums.wav.*.part")) if (out / "song").exists() else []
        most_at_once = max(most_at_once, len(temps))
        time.sleep(0.02)
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert most_at_once == 2  # they did overlap
    assert files_under(out) == ["song/drums.wav", "song/rest.wav"]  # no temporaries left
    for name in ("drums", "rest"):
        data, sr = sf.read(str(out / "song" / f"{name}.wav"))
        assert data.shape == (16000, 2) and sr == 8000


@pytest.mark.slow
def test_killed_mid_write_leaves_no_final_file_and_the_next_run_cleans_up(
    cli, tmp_path, tiny_model_dir
):
    song = write_file(tmp_path / "song.wav", make_audio(10.0, 8000, 1), 8000)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _slow_cmd(0.1, song, tiny_model_dir, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            temps = (
                list((out / "song").glob(".drums.wav.*.part")) if (out / "song").exists() else []
            )
            if temps and temps[0].stat().st_size > 1000:  # header plus some audio written
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    left = files_under(out)
    assert "song/drums.wav" not in left
    assert (
        len(left) == 1
        and Path(left[0]).name.startswith(".drums.wav.")
        and left[0].endswith(".part")
    )

    res = separate_cli(cli, song, tiny_model_dir, out, "-q")
    assert res.code == 0, res.err
    assert files_under(out) == ["song/drums.wav"]  # the stale temporary is gone
    assert sf.info(str(out / "song" / "drums.wav")).frames == 80000


def _ctrl_c_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_terminated_like_interrupted_leaves_nothing(tmp_path, tiny_model_dir, sig):
    song = write_file(tmp_path / "song.wav", make_audio(10.0, 8000, 1), 8000)
    out = tmp_path / "out"
    cmd = [c for c in _slow_cmd(0.1, song, tiny_model_dir, out, "--residual") if c != "-q"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        # as from a terminal: a shell starts a background job (the suite run with ``&``) with
        # Ctrl+C ignored, and the command would inherit that
        preexec_fn=_ctrl_c_default,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            temps = list((out / "song").glob(".*.part")) if (out / "song").exists() else []
            if len(temps) == 2 and all(t.stat().st_size > 1000 for t in temps):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + sig, err
    word = "terminated" if sig == signal.SIGTERM else "interrupted"
    assert err.rsplit("\r", 1)[-1].strip().endswith(f"aqsep: {word}"), err
    assert files_under(out) == []  # neither temporaries nor the folder made for them


def test_temporaries_of_a_running_writer_are_left_alone(tmp_path):
    from aqsep.audio import _HOST, remove_stale_temps

    target = tmp_path / "x.wav"
    mine = tmp_path / f".x.wav.{_HOST}-1-abcd1234.part"  # pid 1 always runs
    dead = tmp_path / f".x.wav.{_HOST}-999999999-abcd1234.part"
    other_host = tmp_path / ".x.wav.elsewhere-999999999-abcd1234.part"
    for p in (mine, dead, other_host):
        p.write_bytes(b"RIFF")
    assert remove_stale_temps(target) == 1
    assert mine.exists() and not dead.exists() and other_host.exists()


# ---- model folders -----------------------------------------------------------------------------
@pytest.fixture
def model_copy(tmp_path, tiny_model_dir) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no config", "has no config.json"),
        ("no weights", "has no model.safetensors"),
        ("bad json", "is not valid JSON"),
        ("no model section", "has no 'model' section"),
        ("future version", "format_version 99 is not supported"),
        ("unknown key", "inconsistent model config"),
        ("wrong layer count", "inconsistent model config"),
        ("other sizes", "has shape"),
        ("class latent size", "-dim latent"),
        ("no folder", "does not exist"),
    ],
)
def test_model_folder_missing_or_inconsistent(cli, model_copy, song, damage, message):
    config = _config(model_copy)
    if damage == "no config":
        (model_copy / "config.json").unlink()
    elif damage == "no weights":
        (model_copy / "model.safetensors").unlink()
    elif damage == "bad json":
        (model_copy / "config.json").write_text("{not json")
    elif damage == "no model section":
        (model_copy / "config.json").write_text(json.dumps({"format_version": 1}))
    elif damage == "future version":
        config["format_version"] = 99
    elif damage == "unknown key":
        config["model"]["audio"]["sampel_rate"] = 44100
    elif damage == "wrong layer count":
        config["model"]["separator"]["channels"] = [4, 4, 8]
    elif damage == "other sizes":
        config["model"]["separator"]["channels"] = [8, 8, 8, 8, 8, 8]
    elif damage == "class latent size":
        classes = json.loads((model_copy / "classes.json").read_text())
        classes["drums"]["latent"] = [0.0, 1.0]
        (model_copy / "classes.json").write_text(json.dumps(classes))
    elif damage == "no folder":
        shutil.rmtree(model_copy)
    if damage in ("future version", "unknown key", "wrong layer count", "other sizes"):
        (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=message):
        load_model(model_copy)
    line = cli("separate", song, "--target", "drums", "--model", model_copy).one_line_error()
    assert message in line


class _Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "kind", ["pickle protocol 2", "pickle protocol 0", "torch.save", "random bytes", "tiny"]
)
def test_pickle_or_non_safetensors_weights_are_refused_never_unpickled(
    cli, tmp_path, model_copy, song, kind
):
    marker = tmp_path / "unpickled.marker"
    weights = model_copy / "model.safetensors"
    if kind == "pickle protocol 2":
        weights.write_bytes(pickle.dumps({"state": _Payload(marker)}, protocol=2))
    elif kind == "pickle protocol 0":
        weights.write_bytes(pickle.dumps({"state": _Payload(marker)}, protocol=0))
    elif kind == "torch.save":
        torch.save({"state": _Payload(marker), "w": torch.zeros(3)}, weights)
    elif kind == "random bytes":
        weights.write_bytes(
            np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        )
    else:
        weights.write_bytes(b"{}")
    with pytest.raises(ModelError, match="safetensors"):
        load_model(model_copy)
    line = cli("separate", song, "--target", "drums", "--model", model_copy).one_line_error()
    assert "safetensors" in line
    assert not marker.exists()
    if kind.startswith("pickle"):  # the payload is live: unpickling it would have left the marker
        pickle.loads(weights.read_bytes())
        assert marker.exists()


def test_safetensors_whose_header_length_starts_with_the_pickle_byte_loads(model_copy):
    # a safetensors file starts with its header length: 0x80 in the first byte must not read as pickle
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n].rstrip(b" ")
    size = len(header) + (0x80 - len(header)) % 256
    weights.write_bytes(size.to_bytes(8, "little") + header.ljust(size, b" ") + data[8 + n :])
    assert weights.read_bytes()[0] == 0x80
    load_model(model_copy)
