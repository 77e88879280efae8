"""The MIR-1K reader on tiny generated clips in the data set's own layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import MIR1K_RATE as RATE
from conftest import write_mir1k_clip as write_clip

from aqsep.data import DataSource, open_tracks
from aqsep.data.mir1k import (
    ACCOMPANIMENT,
    TEST_SINGERS,
    VALID_SINGERS,
    VOCALS,
    is_mir1k,
    open_mir1k,
    singer_of,
    split_of,
)
from aqsep.errors import DataError


@pytest.fixture
def mir1k(tmp_path: Path) -> Path:
    """``MIR-1K/Wavfile/<singer>_<song>_<clip>.wav``, as the data set is distributed."""
    root = tmp_path / "MIR-1K"
    names = ["abjones_1_01", "abjones_1_02", "amy_3_05"]
    names += [f"{TEST_SINGERS[0]}_2_01", f"{TEST_SINGERS[1].capitalize()}_4_03"]
    names += [f"{VALID_SINGERS[0]}_1_01"]
    for i, name in enumerate(names):
        write_clip(root / "Wavfile", name, seed=i)
    (root / "Wavfile" / "readme.txt").write_text("not a clip")
    return root


def test_split_is_by_singer_never_by_clip(mir1k: Path) -> None:
    splits = {s: [c.name for c in open_mir1k(mir1k, s)] for s in ("train", "valid", "test")}
    assert splits["train"] == ["abjones_1_01", "abjones_1_02", "amy_3_05"]
    assert splits["valid"] == [f"{VALID_SINGERS[0]}_1_01"]
    assert sorted(splits["test"]) == sorted(
        [f"{TEST_SINGERS[0]}_2_01", f"{TEST_SINGERS[1].capitalize()}_4_03"]
    )
    assert len(open_mir1k(mir1k, None)) == 6
    for split, clips in splits.items():  # no singer is in two splits
        assert all(split_of(c) == split for c in clips)
    assert singer_of("Kenshin_1_01") == "kenshin"
    with pytest.raises(DataError, match="not a MIR-1K clip name"):
        singer_of("mixture")


def test_channels_are_accompaniment_left_voice_right(mir1k: Path) -> None:
    clip = open_mir1k(mir1k, "train")[0]
    assert clip.stems == (VOCALS, ACCOMPANIMENT)
    assert clip.labels[VOCALS].coarse == "vocals"
    audio, _ = sf.read(mir1k / "Wavfile" / "abjones_1_01.wav", dtype="float32")
    native = clip.read_native()
    np.testing.assert_array_equal(native[0], audio[:, 1])  # vocals = right channel
    np.testing.assert_array_equal(native[1], audio[:, 0])
    # at the model rate: resampled, and each stem still the right channel
    assert clip.length == int(audio.shape[0] * 22050 // RATE)
    excerpt = clip.read(1000, 4000)
    assert excerpt.shape == (2, 4000)
    spectrum = np.abs(np.fft.rfft(excerpt, axis=1))
    peak_hz = np.fft.rfftfreq(4000, 1 / 22050)[spectrum.argmax(axis=1)]
    assert abs(peak_hz[0] - 880) < 10 and abs(peak_hz[1] - 220) < 10
    np.testing.assert_array_equal(clip.read(1000, 4000, [ACCOMPANIMENT])[0], excerpt[1])


def test_layouts_and_detection(tmp_path: Path, mir1k: Path) -> None:
    flat = tmp_path / "flat"
    write_clip(flat / "audio", "amy_1_01")
    assert is_mir1k(mir1k) and is_mir1k(flat) and is_mir1k(mir1k / "Wavfile")
    assert DataSource.parse(str(flat)).kind == "mir1k"
    assert [t.name for t in open_tracks(flat)] == ["amy_1_01"]
    stems = tmp_path / "stems" / "song"
    stems.mkdir(parents=True)
    assert not is_mir1k(tmp_path / "stems")


def test_bad_copies_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_mir1k(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MIR-1K clips"):
        open_mir1k(tmp_path / "empty")
    mono = tmp_path / "mono"
    mono.mkdir()
    sf.write(mono / "amy_1_01.wav", np.zeros(1600, np.float32), RATE)
    with pytest.raises(DataError, match="1 channel"):
        open_mir1k(mono)
    with pytest.raises(DataError, match="unknown split"):
        open_mir1k(mono, "dev")
