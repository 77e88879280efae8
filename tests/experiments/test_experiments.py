"""Each `aqsep experiment` runs on a tiny model and tiny data and writes its figures, CSV and summary."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
from conftest import make_corpus, make_model

from aqsep.cli import experiment as experiment_cli
from aqsep.errors import QueryError


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("experiments")
    return (
        make_model(root / "model"),
        make_corpus(root / "data", n_tracks=2, seconds=2.0),
        root / "out",
    )


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    experiment_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["experiment", *argv])
    return args.func(args)


def common(setup: tuple[Path, Path, Path]) -> list[str]:
    model, data, out = setup
    return ["--model", str(model), "--data", str(data), "-o", str(out), "-q", "--seed", "1"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 400_000  # small figures


def assert_scores_match_the_latents(score: dict[str, str], latents: list[dict[str, str]]) -> None:
    """The reported k-NN accuracy and silhouette are those of the stored latents: recomputed here
    with each track held out in turn (2 tracks: GroupKFold's two folds) and sklearn's silhouette."""
    import numpy as np
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    x = np.array([[float(r[c]) for c in r if c.startswith("mu")] for r in latents])
    y = np.array([r["coarse"] for r in latents])
    tracks = np.array([r["track"] for r in latents])
    assert len(set(tracks)) == 2 and int(score["points"]) == len(y)
    correct = 0
    for held_out in set(tracks):
        test = tracks == held_out
        knn = KNeighborsClassifier(n_neighbors=int(score["k"])).fit(x[~test], y[~test])
        correct += int((knn.predict(x[test]) == y[test]).sum())
    # the CSV rounds to 4 decimals: one point more or less changes the accuracy by 1 / len(y)
    assert float(score["knn_accuracy"]) == pytest.approx(correct / len(y), abs=1e-4)
    assert float(score["silhouette"]) == pytest.approx(float(silhouette_score(x, y)), abs=1e-3)


def test_tsne(setup: tuple[Path, Path, Path]) -> None:
    out = setup[2]
    assert run_cli(["tsne", *common(setup), "--windows", "2"]) == 0
    assert_png(out / "tsne_coarse.png")
    assert_png(out / "tsne_fine.png")
    points = rows(out / "tsne_points.csv")
    assert {r["coarse"] for r in points} == {"vocals", "drums", "bass", "other"}
    scores = {r["level"]: r for r in rows(out / "tsne_scores.csv")}
    assert_scores_match_the_latents(scores["coarse"], rows(out / "tsne_latents.csv"))
    assert "grouped by track" in (out / "tsne.md").read_text()


def test_zeroshot(setup: tuple[Path, Path, Path]) -> None:
    out = setup[2]
    assert run_cli(["zeroshot", *common(setup), "--pairs", "hi-hat:kick+bass"]) == 0
    assert_png(out / "zeroshot_hi_hat.png")
    table = rows(out / "zeroshot.csv")
    latents = {r["latent"] for r in table}
    assert latents == {"mixture (reference)", "query", "class mean 'hi-hat'", "class mean 'drums'"}
    assert all(r["query_from"] == f"other track: track{1 - int(r['track'][-1])}" for r in table)
    assert all(r["SDR"] != "" for r in table)
    assert "gain over mixture" in (out / "zeroshot.md").read_text()


def test_interpolate(setup: tuple[Path, Path, Path]) -> None:
    out = setup[2]
    assert run_cli(["interpolate", *common(setup), "--alphas", "0,0.5,1"]) == 0
    assert_png(out / "interpolate_spectrograms.png")
    assert_png(out / "interpolate_gains.png")
    table = rows(out / "interpolate.csv")
    assert sorted({float(r["alpha"]) for r in table}) == [0.0, 0.5, 1.0]
    for alpha in (0.0, 0.5, 1.0):  # energy shares of one output sum to 1
        shares = [float(r["energy_share"]) for r in table if float(r["alpha"]) == alpha]
        assert sum(shares) == pytest.approx(1.0, abs=0.05)
    assert "vocals gain" in (out / "interpolate.md").read_text()


def test_iterative_then_compare_share_scores(setup: tuple[Path, Path, Path]) -> None:
    out = setup[2]
    assert run_cli(["iterative", *common(setup), "--targets", "drums,bass"]) == 0
    assert_png(out / "iterative_tsne.png")
    assert_png(out / "iterative_sdr.png")
    per_class = {r["class"]: r for r in rows(out / "iterative.csv")}
    assert set(per_class) == {"drums", "bass"} and per_class["drums"]["tracks"] == "2"
    assert len(rows(out / "iterative_tracks.csv")) == 4
    cached = sorted(p.name for p in (out / "scores" / "mean" / "test").glob("*.json"))
    assert cached == ["track0.json", "track1.json"]
    stamp = (out / "scores" / "mean" / "test" / "track0.json").stat().st_mtime_ns

    assert run_cli(["compare", *common(setup), "--targets", "drums,bass", "--max-tracks", "1"]) == 0
    assert (out / "scores" / "mean" / "test" / "track0.json").stat().st_mtime_ns == stamp  # reused
    assert_png(out / "compare.png")
    table = rows(out / "compare.csv")
    quoted = [r for r in table if r["source"] == "quoted from the paper, MUSDB18 test set"]
    ours = [r for r in table if r["source"].startswith("measured on data")]
    assert len(quoted) == 9 and len(ours) == 5
    assert {"TAK1 (SiSEC18)", "Paper, GT"} <= {r["row"] for r in quoted}
    md = (out / "compare.md").read_text()
    assert "Quoted from the paper (MUSDB18 test set" in md and "oracle IRM" in md


@pytest.mark.parametrize(
    ("module", "options", "message"),
    [
        ("interpolate", {"alphas": "abc"}, "alphas must be numbers in"),
        ("interpolate", {"alphas": "0,nan"}, "alphas must be numbers in"),
        ("interpolate", {"dest": ""}, "empty class name"),
        ("interpolate", {"source": " "}, "empty class name"),
        ("tsne", {"windows": -1}, "whole number >= 1, got -1"),
        ("tsne", {"windows": 0}, "whole number >= 1, got 0"),  # was taken as the default
        ("zeroshot", {"pairs": "::"}, "bad pair '::'"),
        ("zeroshot", {"pairs": "hi-hat"}, "bad pair 'hi-hat'"),
        ("zeroshot", {"pairs": "hi-hat:kick,:bass"}, "bad pair ':bass'"),
    ],
)
def test_bad_experiment_options_are_query_errors_before_any_work(module, options, message):
    import importlib
    from types import SimpleNamespace

    run = importlib.import_module(f"aqsep.experiments.{module}").run
    ctx = SimpleNamespace(separator=None, tracks=[], options=options)  # no work can be done
    with pytest.raises(QueryError, match=message):
        run(ctx)
