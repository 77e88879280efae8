"""aqsep.audio: reading every common format, integer PCM arrays, atomic writes and their failures."""

from __future__ import annotations

import errno
import importlib
import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from conftest import make_audio, write_file

import aqsep.audio
from aqsep.audio import (
    AtomicAudioWriter,
    AudioReader,
    as_2d,
    audio_info,
    output_bits,
    read_audio,
    write_audio,
)
from aqsep.errors import AudioError, OutputError

SR = 44100


def int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def encode_with_av(path: Path, audio: np.ndarray, sr: int, codec: str, fmt: str | None = None):
    """Write ``(2, samples)`` float audio with PyAV's encoders (no ffmpeg program needed)."""
    pcm = int16(audio) if codec == "alac" else audio.astype(np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=sr, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            pcm, format="s16p" if codec == "alac" else "fltp", layout="stereo"
        )
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def two_tones(seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    """Left 440 Hz at 0.3, right 660 Hz at 0.2: channel order and scale are visible in the RMS."""
    t = np.arange(round(seconds * sr)) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)])


# ---- formats libsndfile does not read, decoded through PyAV ------------------------------------
@pytest.mark.parametrize(
    ("name", "codec", "fmt"),
    [("song.m4a", "aac", None), ("song.mp4", "aac", None), ("song.aac", "aac", "adts")],
)
def test_lossy_containers_decode_with_their_rate_channels_and_level(tmp_path, name, codec, fmt):
    src = two_tones()
    path = encode_with_av(tmp_path / name, src, SR, codec, fmt)
    with pytest.raises(sf.LibsndfileError):  # the fallback is needed: libsndfile cannot
        sf.info(str(path))
    audio, sr = read_audio(path)
    # AAC adds encoder delay and pads to whole 1024-sample frames
    assert (
        sr == SR and audio.shape[0] == 2 and src.shape[1] <= audio.shape[1] <= src.shape[1] + 3072
    )
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2, axis=1))
    np.testing.assert_allclose(rms, [0.3 / np.sqrt(2), 0.2 / np.sqrt(2)], rtol=0.08)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (SR, 2, audio.shape[1])
    with AudioReader(path) as reader:
        assert (reader.sample_rate, reader.channels, reader.frames) == (SR, 2, audio.shape[1])
        np.testing.assert_array_equal(reader.read(1000, 500), audio[:, 1000:1500])


def test_lossless_m4a_decodes_exactly_and_reads_ranges(tmp_path):
    src = two_tones()
    path = encode_with_av(tmp_path / "song.m4a", src, SR, "alac")  # decodes to integers
    audio, sr = read_audio(path)
    assert sr == SR and audio.shape == src.shape
    np.testing.assert_array_equal(audio, int16(src) / np.float32(32768))
    part, _ = read_audio(path, start=100, frames=50)
    np.testing.assert_array_equal(part, audio[:, 100:150])


def decode_whole_with_av(path: Path) -> np.ndarray:
    """The test's own reference: every frame PyAV decodes, concatenated ``(channels, samples)``."""
    blocks = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.audio[0]):
            blocks.append(frame.to_ndarray().astype(np.float32))
    return np.concatenate(blocks, axis=1)


def test_av_formats_are_streamed_in_overlapping_steps_and_back(tmp_path, monkeypatch):
    monkeypatch.setattr(aqsep.audio.AvStream, "KEEP_SECONDS", 0.25)
    path = encode_with_av(tmp_path / "song.m4a", make_audio(3.0, SR, 2), SR, "aac")
    whole = decode_whole_with_av(path)
    with AudioReader(path) as reader:
        assert reader.frames == whole.shape[1]
        step, size = 10_000, 25_000  # chunks overlap, as separation reads them
        for start in range(0, reader.frames, step):
            got = reader.read(start, size)
            n = min(size, reader.frames - start)
            np.testing.assert_array_equal(got[:, :n], whole[:, start : start + n])
            assert not got[:, n:].any()  # zeros past the end
        stream = reader._stream
        assert stream is not None and stream._buf.shape[1] <= stream._keep + 2 * size
        # back to the start (behind what is kept): decoded again, the same samples
        np.testing.assert_array_equal(reader.read(100, 500), whole[:, 100:600])
        np.testing.assert_array_equal(reader.read(60_000, 500), whole[:, 60_000:60_500])
    part, _ = read_audio(path, start=50_000, frames=1000)
    np.testing.assert_array_equal(part, whole[:, 50_000:51_000])


def test_reading_an_av_format_holds_a_bounded_stretch_not_the_whole_file(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(aqsep.audio.AvStream, "KEEP_SECONDS", 1.0)
    sr = 16000
    path = encode_with_av(tmp_path / "long.m4a", make_audio(120.0, sr, 2), sr, "aac")
    whole_bytes = 2 * 120 * sr * 4  # what decoding it whole would hold: 15 MB
    tracemalloc.start()
    try:
        info = audio_info(path)
        _, info_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with AudioReader(path) as reader:
            read = sum(block.shape[1] for block in reader.blocks(sr))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.frames == reader.frames == read >= 120 * sr
    # one second kept, one read, and their copies: about 1 MB
    assert info_peak < whole_bytes / 8 and read_peak < whole_bytes / 8, (info_peak, read_peak)


_PEAK_RSS = """
import resource, sys
import av  # imported for both formats: the comparison is of reading, not of libraries
from aqsep.audio import AudioReader
with AudioReader(sys.argv[1]) as reader:
    step = 10 * reader.sample_rate
    for start in range(0, reader.frames, step):
        reader.read(start, step + step // 4)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_a_long_m4a_is_read_in_the_memory_of_the_same_audio_as_flac(tmp_path):
    import subprocess
    import sys

    sr, minutes = 16000, 20  # decoded whole: 154 MB of float32
    m4a = tmp_path / "long.m4a"
    with av.open(str(m4a), "w") as out:  # silence, as the 2-hour file
        stream = out.add_stream("aac", rate=sr, layout="stereo")
        block = np.zeros((2, 60 * sr), np.float32)
        for _ in range(minutes):
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    flac = tmp_path / "long.flac"
    with sf.SoundFile(str(flac), "w", sr, 2, format="FLAC") as fh:
        for _ in range(minutes):
            fh.write(np.zeros((60 * sr, 2), np.float32))
    peaks = {}
    for path in (m4a, flac):
        run = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, str(path)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        peaks[path.suffix] = int(run.stdout.split()[-1])  # KiB
    assert peaks[".m4a"] <= 1.1 * peaks[".flac"], peaks


def test_text_named_like_audio_is_a_one_line_error(tmp_path):
    for name in ("notes.wav", "notes.m4a", "notes.mp3"):
        path = tmp_path / name
        path.write_text("these are my notes, not a recording\n" * 50)
        with pytest.raises(AudioError) as caught:
            read_audio(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message
        assert "not audio" in message or "cannot be read" in message
        assert "does not exist" not in message  # libsndfile's words for an unreadable mp3


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_decoder_notes_do_not_reach_the_terminal(tmp_path, capfd):
    # libmpg123 writes "warning: Cannot read next header..." straight to file descriptor 2
    full = tmp_path / "full.mp3"
    sf.write(str(full), two_tones(1.0).T, SR, format="MP3", subtype="MPEG_LAYER_III")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(full.read_bytes()[:800])
    capfd.readouterr()
    with pytest.raises(AudioError, match="cut.mp3"):
        read_audio(cut)
    with pytest.raises(AudioError, match="cut.mp3"):
        AudioReader(cut)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    print("stderr still works")  # fd 1 and 2 are restored
    os.write(2, b"fd 2 restored\n")
    assert capfd.readouterr() == ("stderr still works\n", "fd 2 restored\n")


# ---- arrays ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "full_scale", "zero"),
    [(np.int16, 32768, 0), (np.int32, 2**31, 0), (np.uint8, 128, 128), (np.float64, None, 0)],
)
def test_integer_pcm_arrays_are_scaled_to_full_scale(dtype, full_scale, zero):
    x = make_audio(0.1, 8000, 2)
    if full_scale is None:  # float samples keep their values
        pcm, atol = x.astype(dtype), 1e-7
    else:
        pcm, atol = (np.round(x * (full_scale - 1)) + zero).astype(dtype), 1.5 / full_scale
    before = pcm.copy()
    out = as_2d(pcm)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=atol)
    np.testing.assert_array_equal(pcm, before)  # the caller's array is untouched


@pytest.mark.parametrize("bad", [np.array([True, False]), np.array([1 + 1j]), np.array(["a"])])
def test_arrays_that_are_not_samples_are_refused(bad):
    with pytest.raises(AudioError, match="dtype"):
        as_2d(bad)


# ---- writing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("bits", "subtype"), [(16, "PCM_16"), (24, "PCM_24"), ("32f", "FLOAT")])
def test_bits_as_int_or_text(tmp_path, bits, subtype):
    path = tmp_path / "x.wav"
    write_audio(path, make_audio(0.1, 8000, 1), 8000, bits=bits)
    assert sf.info(str(path)).subtype == subtype


@pytest.mark.parametrize("bits", [8, "12", 24.0, True, "32"])
def test_unsupported_bits_name_the_choices_and_no_command_line_option(bits):
    with pytest.raises(OutputError) as caught:
        output_bits(bits)
    message = str(caught.value)
    assert "16" in message and "24" in message and "32f" in message and "--" not in message


def test_flac_float_message_names_no_command_line_option(tmp_path):
    with pytest.raises(OutputError) as caught:
        AtomicAudioWriter(tmp_path / "x.flac", 8000, 1, bits="32f")
    assert "--" not in str(caught.value)


def test_importing_audio_leaves_the_umask_alone(monkeypatch):
    calls = []
    real = os.umask

    def spy(mask):
        calls.append(mask)
        return real(mask)

    monkeypatch.setattr(os, "umask", spy)
    importlib.reload(aqsep.audio)
    assert calls == []


def test_written_files_get_the_process_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "x.wav"
        write_audio(path, make_audio(0.1, 8000, 1), 8000)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_failed_write_removes_the_folders_it_made_and_only_those(tmp_path):
    keep = tmp_path / "out"
    keep.mkdir()
    path = keep / "new" / "deeper" / "x.wav"
    with pytest.raises(RuntimeError), AtomicAudioWriter(path, 8000, 1) as writer:
        writer.write(np.zeros((1, 100), np.float32))
        raise RuntimeError("interrupted")
    assert keep.is_dir() and list(keep.iterdir()) == []

    (keep / "old").mkdir()
    (keep / "old" / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError), AtomicAudioWriter(keep / "old" / "x.wav", 8000, 1):
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in (keep / "old").iterdir()) == ["notes.txt"]


def test_disk_full_reported_as_a_system_error_names_the_full_disk(tmp_path, monkeypatch):
    # libsndfile reports ENOSPC as "System error.", without the error number
    def fail(self, data):
        raise sf.LibsndfileError(2, "Error writing: ")

    monkeypatch.setattr(sf.SoundFile, "write", fail)
    monkeypatch.setattr(
        aqsep.audio.shutil,
        "disk_usage",
        lambda _: type("Usage", (), {"total": 10**9, "used": 10**9, "free": 0})(),
    )
    path = tmp_path / "out" / "x.wav"
    with pytest.raises(OutputError) as caught, AtomicAudioWriter(path, 8000, 1) as writer:
        writer.write(np.zeros((1, 100), np.float32))
    message = str(caught.value)
    mount = tmp_path
    while not os.path.ismount(mount):
        mount = mount.parent
    assert "disk full" in message and f"mounted at {mount}, 0 bytes free" in message
    assert not (tmp_path / "out").exists()


def test_a_write_error_with_space_left_is_not_called_disk_full(tmp_path, monkeypatch):
    def fail(self, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sf.SoundFile, "write", fail)
    with pytest.raises(OutputError) as caught, AtomicAudioWriter(tmp_path / "x.wav", 8000, 1) as w:
        w.write(np.zeros((1, 100), np.float32))
    assert "disk full" not in str(caught.value) and "Input/output error" in str(caught.value)


def test_reader_of_an_array_and_of_a_file_agree(tmp_path):
    x = make_audio(0.3, 16000, 2)
    path = write_file(tmp_path / "x.wav", x, 16000, subtype="FLOAT")
    with AudioReader(path) as from_file:
        a = from_file.read(-10, 6000)
    b = AudioReader(x, 16000).read(-10, 6000)
    np.testing.assert_array_equal(a, b)
    assert (a[:, :10] == 0).all() and (a[:, 4810:] == 0).all()  # zeros outside the input


def test_a_truncated_wav_is_refused_not_separated_to_what_is_left(tmp_path):
    whole = write_file(tmp_path / "whole.wav", make_audio(1.0, 8000, 2), 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 2 * 3000])  # 0.375 s of the 1 s announced
    with pytest.raises(AudioError, match=r"truncated: its header announces 1.00 s .* holds 0.38 s"):
        AudioReader(cut)
    with AudioReader(whole) as reader:  # a complete file, and one streamed with size 0xFFFFFFFF
        assert reader.frames == 8000
    streamed = bytearray(whole.read_bytes())
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    AudioReader(tmp_path / "streamed.wav").close()
