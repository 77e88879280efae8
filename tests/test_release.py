"""aqsep.release: saving a model never deletes a user's files; loading refuses bad configs in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_audio, make_tiny_model, save_tiny_model, write_file

from aqsep.errors import ModelError, OutputError
from aqsep.release import (
    CLASSES,
    CONFIG,
    WEIGHTS,
    ClassLatent,
    check_model_destination,
    load_model,
    resolve_model_path,
    save_model,
)


def weights_of(folder) -> dict[str, torch.Tensor]:
    return load_model(folder).model.state_dict()


# ---- saving ------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    model = make_tiny_model(seed=3)
    classes = {"drums": ClassLatent(latent=[0.5] * model.latent_dim, level="coarse", count=2)}
    save_model(tmp_path / "m", model, classes, metadata={"steps": 7})
    loaded = load_model(tmp_path / "m")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    assert loaded.classes == {"drums": ClassLatent([0.5] * model.latent_dim, "coarse", 2)}
    assert loaded.metadata == {"steps": 7} and loaded.model.config == model.config
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([WEIGHTS, CONFIG, CLASSES])


def test_a_folder_with_other_files_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    with pytest.raises(OutputError, match="not empty and holds no aqsep model") as err:
        save_tiny_model(folder)
    assert "notes.txt" in str(err.value) and "--" not in str(err.value)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary left


def test_over_a_model_only_the_model_files_are_replaced(tmp_path):
    folder = save_tiny_model(tmp_path / "model", seed=0)
    (folder / "README.md").write_text("how this model was made")
    save_tiny_model(folder, seed=1)
    assert (folder / "README.md").read_text() == "how this model was made"
    new = weights_of(folder)
    expected = make_tiny_model(seed=1).state_dict()
    assert all(torch.equal(new[k], expected[k]) for k in expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("existing", ["empty", "model only"])
def test_an_empty_folder_or_a_bare_model_is_replaced(tmp_path, existing):
    folder = tmp_path / "model"
    if existing == "empty":
        folder.mkdir()
    else:
        save_tiny_model(folder, seed=0)
    save_tiny_model(folder, seed=2)
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS, CONFIG, CLASSES])
    expected = make_tiny_model(seed=2).state_dict()
    assert all(torch.equal(weights_of(folder)[k], expected[k]) for k in expected)


def test_a_file_in_the_way_is_an_output_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target in (blocker, blocker / "model"):
        with pytest.raises(OutputError, match="is a file, not a folder"):
            check_model_destination(target)
        with pytest.raises(OutputError, match="is a file, not a folder"):
            save_tiny_model(target)
    assert blocker.read_text() == "x"


# ---- resolving a model name --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x.pt", "run/last.ckpt"])
def test_a_checkpoint_file_is_named_as_such(tmp_path, name, cli):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelError, match="is a training checkpoint or pickled weights") as err:
        resolve_model_path(path)
    assert str(path) in str(err.value) and "--" not in str(err.value)
    song = write_file(tmp_path / "song.wav", make_audio(0.2, 8000, 1), 8000)
    line = cli("separate", song, "--target", "drums", "--model", path).one_line_error()
    assert "is a training checkpoint" in line


def test_a_missing_checkpoint_name_is_not_called_a_bundled_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="x.pt: no such file") as err:
        resolve_model_path("x.pt")
    assert "bundled" not in str(err.value)


def test_the_weights_file_or_config_of_a_model_stands_for_its_folder(tiny_model_dir):
    assert resolve_model_path(tiny_model_dir / WEIGHTS) == tiny_model_dir
    assert resolve_model_path(tiny_model_dir / CONFIG) == tiny_model_dir


# ---- config.json checked when loading ----------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(model=None), "the 'model' section must be an object"),
        (lambda c: c["model"].update(audio=None), "AudioConfig must be an object, got null"),
        (lambda c: c["model"]["audio"].update(sample_rate=0), "audio.sample_rate must be at least"),
        (lambda c: c["model"]["audio"].update(sample_rate="22050"), "whole number, got '22050'"),
        (lambda c: c["model"]["audio"].update(hop_length=0), "audio.hop_length must be at least 1"),
        (lambda c: c["model"]["audio"].update(segment_frames=-4), "audio.segment_frames"),
        (lambda c: c["model"]["audio"].update(n_fft=1024), "audio.n_bins must be n_fft // 2"),
        (lambda c: c["model"]["audio"].update(n_bins=100, n_fft=200), "multiple of 64"),
        (lambda c: c["model"]["query"].update(latent_dim=0), "query.latent_dim"),
        (lambda c: c["model"]["separator"].update(kernel_size=4), "must be odd"),
        (lambda c: c["model"]["separator"].update(dropout=1.5), r"dropout must be in \[0, 1\)"),
        (lambda c: c["model"].update(extra={}), "unknown ModelConfig keys"),
    ],
)
def test_bad_config_values_are_one_line_model_errors(tmp_path, tiny_model_dir, cli, edit, message):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / CONFIG).read_text())
    edit(config)
    (folder / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelError, match=message):
        load_model(folder)
    song = write_file(tmp_path / "song.wav", make_audio(0.2, 8000, 1), 8000)
    line = cli("separate", song, "--target", "drums", "--model", folder).one_line_error()
    assert str(folder / CONFIG) in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"[1, 2, 3]", "holds list, not an object"),
        (b'"hello"', "holds str"),
        (b"null", "holds NoneType"),
        (b'{"vocals": "x"}', "'vocals' is malformed"),
        (b'{"vocals": {"latent": "abc"}}', "list of finite numbers"),
        (b'{"vocals": {"latent": [1e999, 0, 0, 0, 0, 0, 0, 0]}}', "list of finite numbers"),
        (b'{"vocals": {"latent": [1, 2]}}', "2-dim latent"),
        (b"\xff\xfe\x00", "not JSON text"),
    ],
)
def test_a_malformed_classes_file_is_a_model_error_naming_it(tmp_path, content, words):
    folder = save_tiny_model(tmp_path / "m")
    (folder / "classes.json").write_bytes(content)
    with pytest.raises(ModelError, match="classes.json") as caught:
        load_model(folder)
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("separator", "channels", [2**22, 8, 8, 8, 8, 8]),
        ("query", "latent_dim", 2**31),
        ("query", "gru_hidden", 2**20),
        ("audio", "n_fft", 2**26),
        ("audio", "sample_rate", 10**12),
        ("audio", "segment_frames", 2**30),
    ],
)
def test_a_config_of_huge_sizes_is_refused_before_anything_is_allocated(tmp_path, part, key, value):
    folder = save_tiny_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model"][part][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=f"{part}.{key} must be at most"):
        load_model(folder)
