"""Property-based tests: the audio reader, chunked overlap-add, and the CLI's argument parsing."""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aqsep.audio import AudioReader, write_audio
from aqsep.cli.separate import TimeRange, expand_inputs, parse_blend, parse_range
from aqsep.errors import AudioError
from aqsep.inference import separate_array
from aqsep.model import QuerySeparator

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000]
# bits -> the largest error a write/read round trip may add
QUANTUM = {"16": 1 / 32768, "24": 1 / 2**23, "32f": 0.0}


# ---- audio reader -------------------------------------------------------------------------------
@FAST
@given(
    channels=st.sampled_from([1, 2, 3, 6]),
    length=st.integers(1, 6000),
    sr=st.sampled_from(RATES),
    bits=st.sampled_from(list(QUANTUM)),
    fmt=st.sampled_from(["wav", "flac"]),
    seed=st.integers(0, 2**16),
    reads=st.lists(
        st.tuples(st.integers(-3000, 7000), st.integers(0, 3000)), min_size=1, max_size=6
    ),
)
def test_audio_round_trip_and_block_reads(channels, length, sr, bits, fmt, seed, reads):
    assume(not (fmt == "flac" and bits == "32f"))
    audio = np.random.default_rng(seed).uniform(-1, 1, (channels, length)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"a.{fmt}"
        assert write_audio(path, audio, sr, bits=bits) == 0
        with AudioReader(path) as reader:
            assert (reader.sample_rate, reader.channels, reader.frames) == (sr, channels, length)
            full = reader.read(0, length)
            assert full.dtype == np.float32
            assert np.abs(full - audio).max() <= QUANTUM[bits] + 1e-7
            padded = np.pad(full, ((0, 0), (3000, 10000)))
            for start, size in reads:  # any window, also before the start or past the end
                np.testing.assert_array_equal(
                    reader.read(start, size), padded[:, 3000 + start : 3000 + start + size]
                )
            blocks = list(reader.blocks(997))
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), full)


@FAST
@given(
    channels=st.sampled_from([1, 2, 6]),
    length=st.integers(1, 3000),
    seed=st.integers(0, 100),
    reads=st.lists(st.tuples(st.integers(-500, 3500), st.integers(0, 800)), min_size=1, max_size=5),
)
def test_array_reader_reads_slices_without_touching_the_array(channels, length, seed, reads):
    audio = np.random.default_rng(seed).standard_normal((channels, length)).astype(np.float32)
    before = audio.copy()
    reader = AudioReader(audio, 44100)
    padded = np.pad(audio, ((0, 0), (500, 4300)))  # room for the furthest read: 3500 + 800
    for start, size in reads:
        block = reader.read(start, size)
        np.testing.assert_array_equal(block, padded[:, 500 + start : 500 + start + size])
        block += 1  # the caller may write to what it got
    np.testing.assert_array_equal(audio, before)


# ---- overlap-add ------------------------------------------------------------------------------
_MODEL = make_tiny_model()


@FAST
@given(
    length=st.integers(1, 20000),
    channels=st.sampled_from([1, 2, 6]),
    overlap=st.floats(0.0, 0.9, exclude_max=True),
    batch_size=st.integers(1, 5),
    segment=st.floats(0.1, 0.4),
    sr=st.sampled_from([8000, 22050, 44100]),
    seed=st.integers(0, 1000),
)
def test_identity_mask_overlap_add_gives_the_input_back(
    length, channels, overlap, batch_size, segment, sr, seed
):
    audio = (0.5 * np.random.default_rng(seed).standard_normal((channels, length))).astype(
        np.float32
    )
    ones = QuerySeparator.mask
    QuerySeparator.mask = lambda self, magnitude, z: torch.ones_like(magnitude)  # type: ignore[method-assign]
    try:
        out = separate_array(
            _MODEL,
            audio,
            sr,
            torch.zeros(_MODEL.latent_dim),
            segment=segment,
            overlap=overlap,
            batch_size=batch_size,
        )
    finally:
        QuerySeparator.mask = ones  # type: ignore[method-assign]
    assert out.shape == audio.shape
    assert np.abs(out - audio).max() < 1e-4


# ---- CLI arguments ------------------------------------------------------------------------------
seconds = st.decimals(0, 20000, places=3).map(float)


def clock(value: float, hours: bool) -> str:
    h, rest = divmod(value, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:06.3f}" if hours else f"{int(h * 60 + m)}:{s:06.3f}"


@FAST
@given(
    start=seconds,
    length=st.decimals("0.001", 5000, places=3).map(float),
    style=st.sampled_from(["seconds-dash", "seconds-colon", "clock", "clock-hours", "mixed"]),
)
def test_range_forms_parse_to_the_same_seconds(start, length, style):
    end = round(start + length, 3)
    a, b = {
        "seconds-dash": (f"{start}", f"{end}"),
        "seconds-colon": (f"{start}", f"{end}"),
        "clock": (clock(start, False), clock(end, False)),
        "clock-hours": (clock(start, True), clock(end, True)),
        "mixed": (f"{start}", clock(end, False)),
    }[style]
    parsed = parse_range(f"{a}:{b}" if style == "seconds-colon" else f"{a}-{b}")
    assert parsed.start == pytest.approx(start, abs=1e-6) and parsed.end == pytest.approx(
        end, abs=1e-6
    )
    assert parse_range(str(parsed)) == parsed  # its own printed form parses back


@FAST
@given(start=seconds, sep=st.sampled_from(["-", ":"]))
def test_open_ranges(start, sep):
    assert parse_range(f"{start}{sep}") == TimeRange(start, None)
    if start > 0:
        assert parse_range(f"{sep}{start}") == TimeRange(0.0, start)


@FAST
@given(start=seconds, end=seconds)
def test_backwards_or_ambiguous_ranges_are_refused(start, end):
    if end <= start:
        with pytest.raises(argparse.ArgumentTypeError, match="end must come after"):
            parse_range(f"{start}-{end}")
    with pytest.raises(argparse.ArgumentTypeError):  # two clock times joined by ':' are ambiguous
        parse_range(f"{clock(start, False)}:{clock(end, False)}")


@pytest.mark.parametrize(
    "text",
    ["", "abc", "1-2-3", "1:2:3", "-", "1:75-2:00", "1:05:1:20", "a-b", "5-5", ":", "1.5.2-3"],
)
def test_malformed_ranges(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_range(text)


@FAST
@given(
    other=st.one_of(
        st.text("abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=12),
        st.builds(
            lambda drive, parts, ext: drive + "/".join(parts) + ext,
            st.sampled_from(["", "C:\\", "/", "./"]),
            st.lists(st.text("abc xyz019", min_size=1, max_size=6), min_size=1, max_size=3),
            st.sampled_from([".wav", ".flac", ".mp3"]),
        ),
    ),
    alpha=st.floats(0, 1),
)
def test_blend_parses_class_names_and_paths(other, alpha):
    parsed = parse_blend(f"{other}:{alpha!r}")
    assert parsed.other == other and parsed.alpha == alpha


@FAST
@given(
    alpha=st.one_of(
        st.floats(max_value=-1e-9),
        st.floats(min_value=1 + 1e-9),
        st.just(float("nan")),
        st.text("xyz", min_size=1),
    )
)
def test_blend_weight_outside_zero_one_is_refused(alpha):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_blend(f"bass:{alpha}")


@pytest.mark.parametrize("text", ["bass", ":0.5", "bass:", "bass:x"])
def test_malformed_blends(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_blend(text)


NAMES = [
    "a.wav",
    "b.flac",
    "c.mp3",
    "d.txt",
    "e.WAV",
    "sub/f.wav",
    "sub/g.ogg",
    "sub/deep/h.wav",
    ".hidden.wav",
]


def reference_expansion(items: list[str]) -> list[Path] | None:
    """What `aqsep separate` should read for ``items``, from the glob module; None: an error."""
    found: list[Path] = []
    for item in items:
        if glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                return None
        elif not Path(item).exists():
            return None
        else:
            matches = [item]
        for match in map(Path, matches):
            if match.is_dir():
                audio = sorted(
                    q
                    for q in match.iterdir()
                    if q.is_file()
                    and not q.name.startswith(".")
                    and q.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg")
                )
                if not audio and not glob.has_magic(item):
                    return None
                found += audio
            else:
                found.append(match)
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values()) or None


@settings(max_examples=20, deadline=None)
@given(
    present=st.sets(st.sampled_from(NAMES), min_size=1),
    items=st.lists(
        st.sampled_from(
            ["*.wav", "*", "sub", "sub/*", "**/*.wav", "a.wav", "sub/f.wav", ".", "*.mp3"]
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_globs_and_folders_expand_like_the_shell(present, items):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in present:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"x")
        cwd = os.getcwd()
        os.chdir(root)
        try:
            expected = reference_expansion(items)
            if expected is None:
                with pytest.raises(AudioError):
                    expand_inputs(items)
                return
            got = expand_inputs(items)
            assert got == expected
            assert not any(p.name.startswith(".") for p in got)
        finally:
            os.chdir(cwd)
