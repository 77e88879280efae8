"""ONNX export and the onnxruntime backend: the graphs reproduce the model, and separation through
them gives PyTorch's output.

Tolerances (largest absolute difference): the tiny model's masks, latents and audio 1e-5; the
shipped model's 1e-4 (masks lie in [0, 1], audio at full scale 1; one 16-bit step is 3.1e-5).
Measured: about 1e-6 (tiny) and 6e-5 / 5e-6 / 3e-5 (shipped: masks, latents, audio).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_audio

from aqsep.api import Separator
from aqsep.errors import ModelError, OutputError, SettingError
from aqsep.fastforms import BatchNormAdaIN
from aqsep.model import AdaIN
from aqsep.onnx import (
    FRAME_STEP,
    GRAPHS,
    export_onnx,
    graph_difference,
    load_onnx_model,
)
from aqsep.release import BUNDLED_DIR, load_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TINY_TOL = 1e-5
SHIPPED_TOL = 1e-4
FAST = "fast"  # the bundled query model alone (the cascade's export: tests/test_cascade.py)


@pytest.fixture(scope="module")
def tiny_export(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(tiny_model_dir, tmp_path_factory.mktemp("onnx") / "tiny")


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (BUNDLED_DIR / FAST).is_dir():
        pytest.skip("the bundled fast model is not installed")
    return export_onnx(FAST, tmp_path_factory.mktemp("onnx") / FAST)


def _differences(
    model_dir: Path | str | None, export: Path, batch: int, frames: int
) -> list[float]:
    """Largest differences of mask, mu and logvar between the graphs and the model."""
    model = load_model(model_dir).model
    network = load_onnx_model(export).model
    generator = torch.Generator().manual_seed(batch * 1000 + frames)
    magnitude = 2 * torch.rand(
        batch, model.config.audio.n_fft // 2 + 1, frames, generator=generator
    )
    z = torch.randn(batch, model.latent_dim, generator=generator)
    with torch.inference_mode():
        mask, posterior = model.mask(magnitude, z), model.encode(magnitude)
    got_mask = network.mask(magnitude.numpy(), z.numpy())
    mu, logvar = network.posterior(magnitude.numpy())
    assert got_mask.shape == mask.shape and mu.shape == posterior.mu.shape
    assert got_mask.dtype == mu.dtype == np.float32
    np.testing.assert_array_equal(network.latent(magnitude.numpy()), mu)
    return [
        float(np.abs(got_mask - mask.numpy()).max()),
        float(np.abs(mu - posterior.mu.numpy()).max()),
        float(np.abs(logvar - posterior.logvar.numpy()).max()),
    ]


def test_plain_adain_equals_the_one_pass_form_which_the_tracer_sees_plain() -> None:
    torch.manual_seed(0)
    adain = AdaIN(6, 5)
    torch.nn.init.normal_(adain.to_scale_bias.weight)  # not the identity it starts as
    fast = BatchNormAdaIN.replacing(adain)
    h, z = 3 * torch.randn(4, 6, 8, 10) + 1, torch.randn(4, 5)
    torch.testing.assert_close(adain(h, z), fast(h, z), atol=1e-5, rtol=1e-5)
    # what the exporter records: the plain operations (instance norm, no batch reshape)
    with warnings.catch_warnings():  # the tracer's deprecation notice and notes
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(fast, (h, z))
    assert "instance_norm" in str(traced.graph) and "batch_norm(" not in str(traced.graph)
    torch.testing.assert_close(traced(h, z), adain(h, z), atol=0, rtol=0)


def test_export_writes_the_graphs_beside_the_same_config_and_classes(
    tiny_model_dir: Path, tiny_export: Path
) -> None:
    assert sorted(p.name for p in tiny_export.iterdir()) == sorted(
        [*GRAPHS, "config.json", "classes.json", "export.json"]
    )
    for name in ("config.json", "classes.json"):
        assert (tiny_export / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    loaded = load_onnx_model(tiny_export)
    assert sorted(loaded.classes) == sorted(load_model(tiny_model_dir).classes)


@pytest.mark.parametrize(
    "batch, frames", [(1, FRAME_STEP), (3, 2 * FRAME_STEP - 1), (5, 7), (2, 5 * FRAME_STEP + 3)]
)
def test_tiny_graphs_match_the_model_for_any_batch_and_frames(
    tiny_model_dir: Path, tiny_export: Path, batch: int, frames: int
) -> None:
    assert max(_differences(tiny_model_dir, tiny_export, batch, frames)) < TINY_TOL


def test_shipped_graphs_match_the_model(shipped_export: Path) -> None:
    for batch, frames in [(1, 256), (4, 255), (2, 700)]:
        assert max(_differences(FAST, shipped_export, batch, frames)) < SHIPPED_TOL


def test_graph_difference_sees_a_wrong_graph(tiny_model_dir: Path, tiny_export: Path) -> None:
    """The export's own check fails when the graphs belong to other weights."""
    network = load_onnx_model(tiny_export).model
    model = load_model(tiny_model_dir).model
    assert graph_difference(model, network) < TINY_TOL
    with torch.no_grad():
        model.separator.to_mask.bias.add_(1.0)
    assert graph_difference(model, network) > 1e-2


def _separate_both(
    model_dir: Path | str | None, export: Path, audio: np.ndarray, sr: int, targets: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    torch_sep = Separator(model_dir, device="cpu", batch_size=3)
    onnx_sep = Separator(export, backend="onnx", batch_size=3)
    latents = {t: torch_sep.class_latent(t) for t in targets}
    a = torch_sep.separate(audio, sr, latents, residual=True)
    b = onnx_sep.separate(audio, sr, latents, residual=True)
    query = (audio, sr)
    latent_gap = float(np.abs(torch_sep.query_latent(query) - onnx_sep.query_latent(query)).max())
    return a, b, latent_gap


@pytest.mark.parametrize("sr, channels", [(44100, 2), (16000, 1)])
def test_tiny_separation_through_onnx_equals_torch(
    tiny_model_dir: Path, tiny_export: Path, sr: int, channels: int
) -> None:
    audio = make_audio(1.3, sr, channels, seed=2)
    a, b, latent_gap = _separate_both(tiny_model_dir, tiny_export, audio, sr, ["drums", "bass"])
    assert list(a) == list(b) == ["drums", "bass", "rest"]
    for k in a:
        assert b[k].shape == audio.shape
        assert np.abs(a[k] - b[k]).max() < TINY_TOL
    assert np.abs(a["drums"]).max() > 1e-3  # something was separated
    assert latent_gap < TINY_TOL


def test_shipped_separation_through_onnx_equals_torch(shipped_export: Path) -> None:
    audio = make_audio(4.0, 44100, 2, seed=3)
    a, b, latent_gap = _separate_both(FAST, shipped_export, audio, 44100, ["vocals"])
    assert np.abs(a["vocals"] - b["vocals"]).max() < SHIPPED_TOL
    assert np.abs(a["vocals"]).max() > 1e-3
    assert latent_gap < SHIPPED_TOL


def test_cli_export_then_separate_with_the_onnx_backend(
    cli, tmp_path: Path, tiny_model_dir: Path, audio_file
) -> None:
    song = audio_file("song.wav", seconds=1.0)
    res = cli("export-onnx", tiny_model_dir, tmp_path / "export")
    assert res.code == 0, res.err
    assert "query.onnx, separator.onnx" in res.out
    for backend, model in (("torch", tiny_model_dir), ("onnx", tmp_path / "export")):
        out = tmp_path / backend
        res = cli(
            "separate", song, "--target", "drums", "--model", model, "--backend", backend,
            "-o", out, "-q",
        )  # fmt: skip
        assert res.code == 0, res.err
    a = sf.read(str(tmp_path / "torch" / "song" / "drums.wav"), dtype="int16")[0].astype(int)
    b = sf.read(str(tmp_path / "onnx" / "song" / "drums.wav"), dtype="int16")[0].astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1  # within one 16-bit step
    assert np.abs(a).max() > 10


def test_onnx_backend_without_graphs_says_to_export(cli, tiny_model_dir: Path, audio_file) -> None:
    with pytest.raises(ModelError, match="has no query.onnx; export the model first"):
        Separator(tiny_model_dir, backend="onnx")
    song = audio_file("song.wav", seconds=0.5)
    res = cli("separate", song, "--target", "drums", "--model", tiny_model_dir, "--backend", "onnx")
    assert "aqsep export-onnx" in res.one_line_error()
    res = cli("separate", song, "--target", "drums", "--backend", "tensorflow")
    assert "--backend" in res.one_line_error()


def test_unknown_backend_and_a_gpu_for_onnx_are_refused(tiny_export: Path) -> None:
    with pytest.raises(SettingError, match="unknown backend 'tflite'"):
        Separator(tiny_export, backend="tflite")
    assert Separator(tiny_export, backend="onnx", device="cpu").device == "cpu"
    with pytest.raises(SettingError, match="runs on the CPU"):
        Separator(tiny_export, backend="onnx", device="cuda")


def test_missing_onnxruntime_is_one_clear_error(
    tiny_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    with pytest.raises(SettingError, match=r"pip install 'aqsep\[onnx\]'"):
        load_onnx_model(tiny_export)


def test_bad_graphs_are_model_errors(tiny_export: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_export, broken)
    (broken / "separator.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="separator.onnx is not a usable ONNX graph"):
        load_onnx_model(broken)
    other = tmp_path / "other"  # graphs of one model beside the config of a bigger one
    shutil.copytree(tiny_export, other)
    shutil.copyfile(BUNDLED_DIR / FAST / "config.json", other / "config.json")
    (other / "classes.json").unlink()
    with pytest.raises(ModelError, match="does not fit"):
        load_onnx_model(other)
    with pytest.raises(ModelError, match="does not exist"):
        load_onnx_model(tmp_path / "nowhere" / "x")


def test_export_destinations(tiny_model_dir: Path, tmp_path: Path) -> None:
    # a folder of other files is refused, untouched, with nothing left beside it
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds no ONNX export"):
        export_onnx(tiny_model_dir, busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    with pytest.raises(OutputError, match="is a file"):
        export_onnx(tiny_model_dir, busy / "notes.txt" / "x")
    # over an earlier export (of a model without classes: its classes.json goes)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = export_onnx(model, tmp_path / "export")
    (model / "classes.json").unlink()
    export_onnx(model, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*GRAPHS, "config.json", "export.json"])
    # into the model's own folder: the graphs beside its weights, which stay
    weights = (model / "model.safetensors").read_bytes()
    export_onnx(model, model)
    assert (model / "model.safetensors").read_bytes() == weights
    assert all((model / g).is_file() for g in GRAPHS)
    assert load_onnx_model(model).model.latent_dim == load_model(model).model.latent_dim
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_benchmark_section_renders_from_its_json() -> None:
    """docs/benchmarks.md's ONNX section is what benchmarks/onnx_speed.py renders from
    docs/onnx_speed.json, so its figures are traceable to the measured runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import onnx_speed
    from bench_common import read_section

    data = json.loads(onnx_speed.JSON_OUT.read_text())
    section = read_section(onnx_speed.DOC, onnx_speed.SECTION)
    assert onnx_speed.markdown(data["rows"], data["meta"]) == section
    assert {r["backend"] for r in data["rows"]} == {"torch", "onnx", ""}


# The CLI and the API on the ONNX path, in a process where PyTorch cannot be imported at all
# (as in an install without it): `import torch` anywhere would raise.
_NO_TORCH = """
import sys
sys.modules["torch"] = None
from aqsep.cli import main
rc = main(sys.argv[1:])
from aqsep.api import Separator
sep = Separator(sys.argv[4], backend="onnx")
z = sep.blend(sep.class_latent("drums"), sep.query_latent(sys.argv[2]), 0.5)
sep.separate_file(sys.argv[2], sys.argv[-1], {"drums": z, "bass": sep.class_latent("bass")})
loaded = [m for m, mod in sys.modules.items() if m.split(".")[0] == "torch" and mod is not None]
print(rc, sorted(loaded))
"""


def test_the_onnx_path_never_imports_torch(tiny_export: Path, audio_file, tmp_path: Path) -> None:
    import subprocess

    song = audio_file("song.wav", seconds=1.5)
    out = tmp_path / "out"
    args = ["separate", song, "--model", tiny_export, "--backend", "onnx"]
    args += ["--target", "drums", "--refine", "1", "--out", out]
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr
    assert sorted(p.name for p in (out / "song").iterdir()) == ["bass.wav", "drums.wav"]


# ---- precisions: kept or refused by their measured loss ----------------------------------------
def test_int8_is_kept_or_refused_by_its_measured_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    kept = export_onnx(tiny_model_dir, tmp_path / "int8", precision="int8", max_loss_db=math.inf)
    info = json.loads((kept / "export.json").read_text())
    assert info["precision"] == "int8" and math.isfinite(info["check"]["loss_db"])
    checked = info["check"]["sets"]["the bundled example"]
    assert set(checked) == {"vocals", "drums", "bass"}  # the example's true stems
    fp32 = json.loads((export_onnx(tiny_model_dir, tmp_path / "fp32") / "export.json").read_text())
    assert fp32 == {"precision": "fp32", "max_loss_db": 0.1, "check": None}
    # the quantized graph is another graph (QDQ nodes), and it separates
    assert (kept / "separator.onnx").read_bytes() != (
        tmp_path / "fp32" / "separator.onnx"
    ).read_bytes()
    sep = Separator(kept, backend="onnx")
    out = sep.separate(make_audio(0.5, 22050, 1), 22050, sep.class_latent("drums"))["target"]
    assert np.isfinite(out).all() and np.abs(out).max() > 0
    # the same conversion against a bar it cannot pass: refused with its figure, nothing written
    with pytest.raises(ModelError, match=r"int8 graphs of .* lose -?\d+\.\d\d dB of SDR"):
        export_onnx(tiny_model_dir, tmp_path / "strict", precision="int8", max_loss_db=-100.0)
    assert not (tmp_path / "strict").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_fp16_needs_a_vocal_stage_and_an_unknown_precision_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(SettingError, match="fp16 covers a cascade's vocal stage"):
        export_onnx(tiny_model_dir, tmp_path / "fp16", precision="fp16")
    with pytest.raises(SettingError, match="unknown precision 'int4'"):
        export_onnx(tiny_model_dir, tmp_path / "int4", precision="int4")
    assert list(tmp_path.iterdir()) == []


def test_precision_section_renders_from_its_json() -> None:
    """docs/benchmarks.md's precision section is what benchmarks/onnx_precision.py renders from
    docs/onnx_precision.json, and its verdicts follow the export's 0.1 dB rule."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import onnx_precision
    from bench_common import read_section

    data = json.loads(onnx_precision.JSON_OUT.read_text())
    section = read_section(onnx_precision.DOC, onnx_precision.SECTION)
    assert onnx_precision.markdown(data["results"], data["meta"]) == section
    for rows in data["results"].values():
        for name, row in rows.items():
            if name.startswith("onnx"):
                check = row["export_check_loss_db"]
                assert row["kept_by_export"] == (check is None or check <= 0.1)
