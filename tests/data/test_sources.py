"""Data sets of a training run: ``[KIND:]PATH[@WEIGHT]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqsep.data import DataSource
from aqsep.errors import DataError


def test_parse_kind_path_and_weight(tmp_path: Path) -> None:
    assert DataSource.parse("corpus") == DataSource("stems", "corpus", 1.0)
    assert DataSource.parse("mir1k:/data/MIR-1K@2.5") == DataSource("mir1k", "/data/MIR-1K", 2.5)
    assert DataSource.parse("musdb:/m") == DataSource("musdb", "/m")
    assert DataSource.parse("/m", musdb=True, is_wav=True) == DataSource("musdb-hq", "/m")
    assert DataSource.parse("C:/x").path == "C:/x"  # not a kind: part of the path
    assert DataSource.parse("a@b/c").path == "a@b/c"  # not a weight: part of the path
    assert str(DataSource("mir1k", "/d", 2.0)) == "mir1k:/d@2"
    assert DataSource.parse(str(DataSource("stems", "x"))) == DataSource("stems", "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("corpus@0", "number > 0, got 0"),
        ("corpus@-1", "number > 0, got -1"),
        ("x@nan", "> 0"),
        ("x@inf", "a finite number > 0, got inf"),
    ],
)
def test_bad_sources(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        DataSource.parse(text)


def test_unknown_kind() -> None:
    with pytest.raises(DataError, match="unknown kind"):
        DataSource("wav", "x")


def test_a_file_is_not_a_data_set(tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    with pytest.raises(DataError, match="is a file; a stems data set is a folder"):
        DataSource.parse(str(song)).open("train")
