"""Evaluation: museval agreement on a known case, references, resuming, the CLI and data listing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
from pathlib import Path

import museval
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import EVAL_SR as SR
from conftest import make_corpus, make_model, make_stems

from aqsep.api import Separator
from aqsep.cli import evaluate as evaluate_cli
from aqsep.data import open_tracks
from aqsep.data.track import StemLabel, TrackAudio
from aqsep.errors import DataError, QueryError
from aqsep.evaluate import (
    estimate,
    evaluate_tracks,
    list_tracks,
    score,
    summarize,
    track_medians,
    trained_on,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("eval_model") / "tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("eval_corpus"), n_tracks=3)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    evaluate_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


# ---- scoring ------------------------------------------------------------------------------------
def test_museval_and_summary_agree_on_known_sdr() -> None:
    """estimate = target + noise at exactly -10 dB in every 1 s frame -> SDR 10 dB (filters absorb ~0.02 dB)."""
    sr, seconds = 22050, 8
    rng = np.random.default_rng(1)
    t = np.arange(sr * seconds) / sr
    target = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size))[None].astype(
        np.float32
    )
    rest = (0.2 * rng.standard_normal(t.size))[None].astype(np.float32)
    noise = rng.standard_normal(t.size)
    for f in range(seconds):  # scale the noise frame by frame to exactly -10 dB of the target
        sl = slice(f * sr, (f + 1) * sr)
        noise[sl] *= np.sqrt(
            np.sum(target[0, sl].astype(np.float64) ** 2) / 10 / np.sum(noise[sl] ** 2)
        )
    est = (target + noise[None]).astype(np.float32)

    ours = score(target, rest, est, sr)
    sdr, _, sir, sar = museval.evaluate(
        np.stack([target, rest]).transpose(0, 2, 1).astype(np.float64),
        np.stack([est, target + rest - est]).transpose(0, 2, 1).astype(np.float64),
        win=sr,
        hop=sr,
    )
    np.testing.assert_allclose(ours["SDR"], sdr[0], atol=1e-6)
    np.testing.assert_allclose(ours["SIR"], sir[0], atol=1e-6)
    np.testing.assert_allclose(ours["SAR"], sar[0], atol=1e-6)
    assert len(ours["SDR"]) == seconds
    rows = summarize({"mean": {"a": {"vocals": ours}, "b": {"vocals": ours}}})
    assert rows[0].tracks == 2
    assert rows[0].SDR == pytest.approx(10.0, abs=0.1)
    assert rows[0].SDR == pytest.approx(float(np.median(sdr[0])), abs=1e-9)


def test_fast_backend_is_close_to_museval_on_known_case() -> None:
    sr = 8000
    rng = np.random.default_rng(2)
    target = rng.standard_normal((1, 3 * sr)).astype(np.float32)
    rest = rng.standard_normal((1, 3 * sr)).astype(np.float32)
    est = target + 0.316 * rng.standard_normal((1, 3 * sr)).astype(np.float32)
    fast = score(target, rest, est, sr, fast=True)
    assert np.isnan(fast["ISR"]).all()
    assert np.nanmedian(fast["SDR"]) == pytest.approx(
        10.0, abs=0.6
    )  # per-frame filters absorb a little noise


def test_oracle_mask_scores_above_mixture(model_dir: Path) -> None:
    sep = Separator(model_dir, device="cpu")
    stems = {s: x[None].astype(np.float32) for s, (_, _, x) in make_stems(0, 3.0).items()}
    labels = {s: StemLabel(s, c, f) for s, (f, c, _) in make_stems(0, 3.0).items()}
    track = TrackAudio("t", SR, stems, labels)
    for target in ("drums", "vocals"):
        truth = track.source(target)
        rest = track.mixture - truth
        irm = score(truth, rest, estimate(sep, track, target, "irm"), SR)
        mix = score(truth, rest, track.mixture, SR, est_rest=track.mixture)
        assert np.nanmedian(irm["SDR"]) > np.nanmedian(mix["SDR"]) + 3.0


# ---- the evaluation loop -------------------------------------------------------------------------
class Counting:
    """Wraps Separator.separate to count the separations actually run."""

    def __init__(self, sep: Separator) -> None:
        self.calls: list[int] = []
        inner = sep.separate

        def separate(audio: np.ndarray, sample_rate: int, latent, **kw):  # type: ignore[no-untyped-def]
            self.calls.append(audio.shape[-1])
            return inner(audio, sample_rate, latent, **kw)

        sep.separate = separate  # type: ignore[method-assign]


def test_evaluation_resumes_without_recomputing(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    tracks = list_tracks(corpus)
    assert [t.name for t in tracks] == ["track0", "track1", "track2"]
    sep = Separator(model_dir, device="cpu")
    counter = Counting(sep)

    def stop_at_third_track(info: dict) -> None:
        if info["stage"] == "track" and info["index"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_tracks(
            sep, tracks, ["bass"], ["mean"], out_dir=tmp_path, progress=stop_at_third_track
        )
    done = sorted(p.name for p in (tmp_path / "mean" / "test").glob("*.json"))
    assert done == ["track0.json", "track1.json"]
    assert len(counter.calls) == 2
    before = {p: p.read_text() for p in (tmp_path / "mean" / "test").glob("*.json")}

    events: list[dict] = []
    scores = evaluate_tracks(
        sep, tracks, ["bass"], ["mean"], out_dir=tmp_path, progress=events.append
    )
    assert len(counter.calls) == 3  # only track2 was separated
    assert [e["cached"] for e in events if e["stage"] == "job"] == [True, True, False]
    assert all(p.read_text() == text for p, text in before.items())  # finished tracks untouched
    assert sorted(scores["mean"]) == ["track0", "track1", "track2"]
    assert np.isfinite(track_medians(scores)["mean"]["track0"]["bass"]["SDR"])

    # a third run recomputes nothing; results from other settings are refused, not mixed in
    evaluate_tracks(sep, tracks, ["bass"], ["mean"], out_dir=tmp_path)
    assert len(counter.calls) == 3
    with pytest.raises(DataError, match="other settings"):
        evaluate_tracks(sep, tracks, ["bass"], ["mean"], out_dir=tmp_path, data_id="another corpus")


def test_per_track_scores_have_the_permissions_of_every_output_and_a_corrupt_one_is_named(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    tracks = list_tracks(corpus)[:1]
    sep = Separator(model_dir, device="cpu")
    old = os.umask(0o022)
    try:
        evaluate_tracks(sep, tracks, ["bass"], ["mean"], out_dir=tmp_path)
    finally:
        os.umask(old)
    (path,) = (tmp_path / "mean" / "test").glob("*.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # was 0o600 (mkstemp)
    assert not list(path.parent.glob(".*.part"))
    for damage in (b'{"targets": [1, 2', b"\xff\xfe", b'{"targets": [1]}', b'{"aqsep": []}'):
        path.write_bytes(damage)
        with pytest.raises(DataError, match="not a per-track score file") as err:
            evaluate_tracks(sep, tracks, ["bass"], ["mean"], out_dir=tmp_path)
        assert str(path) in str(err.value) and "delete it" in str(err.value)


def test_gt_mode_queries_each_chunk_with_its_true_target(model_dir: Path, corpus: Path) -> None:
    sep = Separator(model_dir, device="cpu", segment=0.5, overlap=0.0)
    track = list_tracks(corpus)[0].load()
    from aqsep import evaluate as ev
    from aqsep.query import encode_clip

    truth = track.source("drums")
    latents = ev.model_latent(sep, track, "drums", "gt")
    plan = sep.chunk_plan(track.frames, track.sample_rate)
    assert plan.starts[:2] == [0, SR // 2] and plan.segment == SR // 2
    assert latents.shape == (len(plan.starts), sep.latent_dim)
    # the latent of a chunk is the query latent of the true target in that chunk only
    torch.testing.assert_close(latents[1], encode_clip(sep.model, truth[:, SR // 2 : SR], SR))
    assert not np.allclose(latents[0], latents[1])
    est = sep.separate(track.mixture, track.sample_rate, latents)["target"]
    assert est.shape == track.mixture.shape
    # a chunk where the target is silent takes the latent of the whole target
    quiet = truth.copy()
    quiet[:, : SR // 2] = 0
    z = ev.gt_latents(sep, quiet, SR)
    torch.testing.assert_close(z[0], encode_clip(sep.model, quiet, SR))
    with pytest.raises(QueryError, match="true target is silent"):
        ev.gt_latents(sep, np.zeros_like(truth), SR)


def test_cli_evaluate_writes_museval_json_and_tables(
    model_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    assert (
        run_cli(
            [
                "--model",
                str(model_dir),
                "--data",
                str(corpus),
                "--mode",
                "gt",
                "--references",
                "--targets",
                "drums",
                "--max-tracks",
                "1",
                "-q",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    for method in ("gt", "mixture", "irm"):
        path = out / method / "test" / "track0.json"
        raw = json.loads(path.read_text())
        assert raw["aqsep"]["method"] == method and "museval" in raw["aqsep"]["backend"]
        df = museval.aggregate.json2df(raw, "track0")  # museval reads its own format back
        assert set(df["target"]) == {"drums"} and set(df["metric"]) >= {"SDR", "SIR", "SAR", "ISR"}
    md = (out / "summary.md").read_text()
    assert (
        "oracle IRM" in md
        and "mixture as estimate" in md
        and "GT query" in md
        and "target vs rest" in md
    )
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("method,target,SDR,SIR,SAR,tracks") and len(csv) == 4
    assert "summary.md" in capsys.readouterr().out

    fast_out = tmp_path / "fast"
    assert (
        run_cli(
            [
                "--model",
                str(model_dir),
                "--data",
                str(corpus / "test"),
                "--mode",
                "mean",
                "--targets",
                "bass",
                "--max-tracks",
                "1",
                "--fast",
                "-q",
                "-o",
                str(fast_out),
            ]
        )
        == 0
    )
    assert (fast_out / "mean-fast" / "test" / "track0.json").is_file()
    assert "fast-bss-eval" in (fast_out / "summary.md").read_text()
    assert "fast-bss-eval" in (fast_out / "summary.csv").read_text()


def test_unknown_class_is_refused_before_any_work(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(QueryError, match="knows: bass, drums, hi-hat, other, vocals"):
        run_cli(
            [
                "--model",
                str(model_dir),
                "--data",
                str(corpus),
                "--mode",
                "iterative",
                "--targets",
                "cowbell",
                "-q",
                "-o",
                str(tmp_path / "x"),
            ]
        )
    assert not (tmp_path / "x").exists()


def test_list_tracks_reads_labels_and_sums_stems(corpus: Path, tmp_path: Path) -> None:
    entry = list_tracks(corpus, max_tracks=1)[0]
    assert entry.classes("coarse") == ["bass", "drums", "other", "vocals"]
    assert sorted(entry.members("drums")) == ["hi-hat", "kick"] and entry.members("Hi Hat") == [
        "hi-hat"
    ]
    track = entry.load()
    assert track.sample_rate == SR and track.channels == 1
    np.testing.assert_allclose(track.mixture, sum(track.stems.values()), atol=1e-6)
    kick, _ = sf.read(corpus / "test" / "track0" / "kick.wav", dtype="float32")
    np.testing.assert_array_equal(track.stems["kick"][0], kick)
    with pytest.raises(DataError, match="no test tracks"):
        list_tracks(tmp_path)
    with pytest.raises(DataError, match="kick.wav is a file: give a data set folder"):
        list_tracks(corpus / "test" / "track0" / "kick.wav")
    copy = tmp_path / "c" / "test" / "t"
    shutil.copytree(corpus / "test" / "track0", copy)
    (copy / "metadata.json").unlink()  # without metadata, stem names are the labels
    assert list_tracks(tmp_path / "c")[0].classes() == sorted(make_stems(0, 0.1))


def test_one_split_rule_for_training_and_evaluation(corpus: Path, tmp_path: Path) -> None:
    """A folder without split folders holds training tracks, unless it is named after a split:
    evaluation and training read it alike, so its tracks are never scored as test tracks."""
    mine = tmp_path / "mine"
    shutil.copytree(corpus / "test", mine)
    assert [t.name for t in open_tracks(mine, "train")] == ["track0", "track1", "track2"]
    assert open_tracks(mine, "test") == []
    with pytest.raises(DataError, match="holds train tracks only.*named train, valid or test"):
        list_tracks(mine)
    assert len(list_tracks(mine, split="train")) == 3
    # the test folder of a corpus, given directly, is a test split for both
    assert [t.name for t in list_tracks(corpus / "test")] == ["track0", "track1", "track2"]
    assert open_tracks(corpus / "test", "train") == []


def _trained_model(folder: Path, data: list[str]) -> Path:
    """The tiny model with ``data`` as the training data its metadata records."""
    shutil.copytree(make_model(folder.parent / f"{folder.name}-src"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["metadata"]["data"] = data
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_tracks_a_model_was_trained_on_are_refused(corpus: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for split, track in (("train", "track0"), ("train", "track1"), ("test", "track2")):
        shutil.copytree(corpus / "test" / track, data / split / track)
    model = _trained_model(tmp_path / "model", [f"stems:{data}@2", "synthetic corpus: 6 h"])
    sep = Separator(model, device="cpu")
    assert trained_on(sep, list_tracks(data, split="test")) == []
    assert [t.name for t in trained_on(sep, list_tracks(data, split="train"))] == [
        "track0",
        "track1",
    ]
    # the same tracks given by another path (the train folder itself) are still found
    assert len(trained_on(sep, list_tracks(data / "train", split="train"))) == 2
    # a copy of a training track elsewhere is another track: paths identify tracks
    assert trained_on(sep, list_tracks(corpus)) == []
    # metadata edited by hand into something else names no data set (was an AttributeError)
    kept = sep.released.metadata
    for odd in (["stems:x"], "stems:x", None, {"data": 3}, {"data": {"a": 1}}):
        sep.released.metadata = odd  # type: ignore[assignment]
        assert trained_on(sep, list_tracks(data, split="train")) == []
    sep.released.metadata = kept
    args = ["--model", str(model), "--data", str(data), "--split", "train", "--fast", "-q"]
    args += ["--targets", "bass", "--max-tracks", "1"]
    with pytest.raises(DataError, match="1 of the 1 tracks .* are training tracks of this model"):
        run_cli([*args, "-o", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    assert run_cli([*args, "--allow-training-tracks", "-o", str(tmp_path / "allowed")]) == 0
    assert (tmp_path / "allowed" / "mean-fast" / "train" / "track0.json").is_file()


def write_mir1k(root: Path, seconds: float = 1.5) -> Path:
    """MIR-1K clips (accompaniment left, voice right, 16 kHz) of training and test singers."""
    rate = 16000
    t = np.arange(round(seconds * rate)) / rate
    root.mkdir(parents=True)
    for i, name in enumerate(("abjones_1_01", "ani_1_01", "titon_2_03")):
        left = 0.3 * np.sign(np.sin(2 * np.pi * (110 + 10 * i) * t))
        right = 0.2 * np.sin(2 * np.pi * (440 + 5 * np.sin(2 * np.pi * 5 * t)) * t)
        sf.write(root / f"{name}.wav", np.stack([left, right], 1).astype(np.float32), rate)
    return root


def test_cli_evaluates_held_out_mir1k_singers(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_mir1k(tmp_path / "MIR-1K")
    clip = list_tracks(f"mir1k:{root}")[0]  # the test split: held-out singers only
    track = clip.load()
    stereo, rate = sf.read(root / "ani_1_01.wav", dtype="float32")
    assert track.sample_rate == rate == 16000 and track.channels == 1
    np.testing.assert_allclose(track.mixture[0], stereo.sum(axis=1), atol=1e-6)
    np.testing.assert_array_equal(track.source("vocals")[0], stereo[:, 1])
    out = tmp_path / "eval"
    argv = ["--model", str(model_dir), "--data", f"mir1k:{root}", "--split", "test"]
    assert run_cli([*argv, "--fast", "-q", "-o", str(out)]) == 0
    scored = sorted(p.name for p in (out / "mean-fast" / "test").glob("*.json"))
    assert scored == ["ani_1_01.json", "titon_2_03.json"]
    raw = json.loads((out / "mean-fast" / "test" / "ani_1_01.json").read_text())
    assert [t["name"] for t in raw["targets"]] == ["vocals"]  # the model knows no accompaniment
    assert raw["aqsep"]["sample_rate"] == 16000 and raw["aqsep"]["data"].startswith("mir1k:")
    assert "not scored: accompaniment" in capsys.readouterr().err


def test_stem_mp4_clip_and_musdb_layouts(tmp_path: Path) -> None:
    stempeg = pytest.importorskip("stempeg")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to decode stem.mp4")
    clip = Path(stempeg.example_stem_path())
    entry = list_tracks(clip)[0]  # one file: a test track
    track = entry.load()
    assert list(track.stems) == ["vocals", "drums", "bass", "other"]
    assert track.sample_rate == 44100 and track.channels == 2
    np.testing.assert_allclose(track.mixture, sum(track.stems.values()), atol=1e-5)
    reference, rate = stempeg.read_stems(str(clip), dtype=np.float32)  # (5, samples, 2)
    assert track.frames == reference.shape[1]
    for k, stem in ((4, "vocals"), (1, "drums")):
        np.testing.assert_allclose(track.stems[stem], reference[k].T, atol=1e-4)
    # MUSDB18's layout (as its 7-s preview set): found without --musdb, split by its folders
    root = tmp_path / "MUSDB18-7"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "test" / clip.name).symlink_to(clip)
    assert [t.name for t in list_tracks(root)] == ["The Easton Ellises - Falcon 69"]
    with pytest.raises(DataError, match="no train tracks"):
        list_tracks(root, split="train")


class _FullDisk:
    """A file opened for writing on a full disk: opening works, writing fails (ENOSPC)."""

    def __init__(self, fh: object) -> None:
        self._fh = fh

    def write(self, _: object) -> int:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()  # type: ignore[attr-defined]


def test_a_full_disk_leaves_no_empty_summary_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins
    import io

    from aqsep.errors import OutputError
    from aqsep.evaluate import SummaryRow, write_summary

    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        fh = real_open(file, mode, *args, **kwargs)
        writing = any(c in mode for c in "wxa") and str(file).startswith(str(tmp_path))
        return _FullDisk(fh) if writing else fh

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)  # Path.write_text opens through io.open
    rows = [SummaryRow("mean", "vocals", 1.0, 2.0, 3.0, 4)]
    with pytest.raises(OutputError, match="disk full") as caught:
        write_summary(rows, tmp_path / "out")
    assert str(tmp_path / "out" / "summary.md") in str(caught.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
