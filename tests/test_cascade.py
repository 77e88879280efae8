"""The cascade model: Spleeter 2-stems in front of a trained query model, assembled, not trained.

A tiny released model and a tiny Spleeter-format checkpoint pair stand in for the real ones; what
is checked is the composition: the vocal stage is Spleeter's ratio of squared masks, the core
applies ``g r + (1 - g)(1 - r) m`` on the stage's grid, the gate votes by class latents, and the
file keeps the query model's weights exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASSES, save_tiny_model
from safetensors import safe_open
from test_pretrained import TINY, reference_forward, spleeter_checkpoint

from aqsep import Separator
from aqsep.audio import resample, to_mono
from aqsep.cascade import assemble, is_vocal
from aqsep.config import AudioConfig, ModelConfig, PretrainedSeparatorConfig
from aqsep.errors import ModelError
from aqsep.inference import map_mask, patched, separate_array
from aqsep.release import load_model
from aqsep.transforms import istft, stft

STAGE = PretrainedSeparatorConfig(
    audio=AudioConfig(sample_rate=22050, n_fft=512, hop_length=128, n_bins=128, segment_frames=64),
    channels=TINY,
    conditioned=False,
    encoder_film=False,
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("spleeter")
    paths = []
    for i in range(2):
        paths.append(folder / f"branch{i}.ckpt")
        torch.save(spleeter_checkpoint(TINY, seed=10 + i), paths[-1])
    return paths


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory: pytest.TempPathFactory, checkpoints: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("cascade")
    init = save_tiny_model(root / "init", seed=3)
    return assemble(init, root / "cascade", checkpoints=checkpoints, stage=STAGE)


def test_the_vocal_stage_is_spleeters_ratio_of_squared_masks(
    cascade_dir: Path, checkpoints: list[Path]
) -> None:
    model = load_model(cascade_dir).model
    magnitude = torch.rand(2, 2, 257, 64) * 3  # (batch, channels, bins, frames)
    with torch.no_grad():
        r = model.stage_share(magnitude)
    x = magnitude[:, :, :128].transpose(-1, -2)  # Spleeter's (batch, channels, frames, bins)
    m_v, m_a = (reference_forward(torch.load(p, weights_only=False), x) for p in checkpoints)
    want = (m_v**2 + 5e-11) / (m_v**2 + m_a**2 + 1e-10)
    torch.testing.assert_close(r[:, :, :128], want.transpose(-1, -2), atol=2e-3, rtol=0)
    # bins above the modelled ones reuse the highest one's mask
    assert torch.equal(r[:, :, 128:], r[:, :, 127:128].expand(-1, -1, 129, -1))


def test_the_core_applies_the_gated_masks_on_the_stages_grid(cascade_dir: Path) -> None:
    model = load_model(cascade_dir).model
    rate, a = STAGE.audio.sample_rate, model.config.audio
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, rate // 2)) * 0.1).astype(np.float32)
    spec = stft(torch.from_numpy(x), 512, 128)  # the stage's grid: the input is at its rate
    with torch.no_grad():
        r = model.stage_share(spec.abs()[None])[0]
        mono = resample(to_mono(x)[None], rate, a.sample_rate)
        for z in torch.randn(3, model.latent_dim) * 2:
            g = float(model.side(z[None])[0])
            mag = stft(torch.from_numpy(mono), a.n_fft, a.hop_length).abs().numpy()
            # the query model in its own patches inside the stage's chunk (0.5 s: several)
            assert mag.shape[-1] > a.segment_frames
            m = patched(
                lambda x, zz: model.mask(torch.from_numpy(x), torch.from_numpy(zz)).numpy(),
                mag,
                z[None].numpy(),
                a.segment_frames,
            )
            m = map_mask(
                m, src_sr=a.sample_rate, src_n_fft=a.n_fft, src_hop=a.hop_length,
                dst_sr=rate, dst_n_fft=512, dst_hop=128, dst_frames=spec.shape[-1],
            )  # fmt: skip
            m = torch.from_numpy(m)
            want = istft(spec * (g * r + (1 - g) * (1 - r) * m), 512, 128, x.shape[-1])
            got = separate_array(model, x, rate, z, segment=x.shape[-1] / rate)
            np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_the_gate_votes_by_class_and_moves_smoothly_between_classes(cascade_dir: Path) -> None:
    released = load_model(cascade_dir)
    gate = released.model.side
    with torch.no_grad():
        for name in released.classes:
            g = float(gate(torch.from_numpy(released.class_latent(name))[None])[0])
            assert (g > 0.97) if is_vocal(name) else (g < 0.03), (name, g)
        alpha = torch.linspace(0, 1, 201)[:, None]
        vocals, bass = (torch.from_numpy(released.class_latent(c)) for c in ("vocals", "bass"))
        path = (1 - alpha) * vocals + alpha * bass
        g = gate(path)
    assert g[0] > 0.97 and g[-1] < 0.03
    assert float(g.diff().abs().max()) < 0.25  # no jump between neighbouring points
    meta = json.loads((cascade_dir / "config.json").read_text())["metadata"]
    assert meta["steps"] == 0 and "Deezer SA" in meta["licence"]["vocal_stage"]
    assert set(meta["gate"]) == set(TINY_CLASSES)


def test_the_file_keeps_the_query_model_exactly_and_spleeter_in_float16(
    cascade_dir: Path,
) -> None:
    init = load_model(cascade_dir.parent / "init")
    cascade = load_model(cascade_dir)
    ours = cascade.model.state_dict()
    for name, value in init.model.state_dict().items():
        assert torch.equal(value, ours[name]), name
    assert cascade.classes == init.classes
    with safe_open(str(cascade_dir / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has no iterator)
            dtype = f.get_slice(key).get_dtype()
            if key.endswith("num_batches_tracked"):  # a BatchNorm's counter stays an integer
                assert dtype == "I64", key
            else:
                assert dtype == ("F16" if key.startswith("vocal_stage.") else "F32"), key
    config = cascade.model.config
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # a model without a stage keeps the files it had: no vocal_stage key at all
    assert "vocal_stage" not in init.model.config.to_dict()


def test_the_four_classes_sum_to_the_song(cascade_dir: Path) -> None:
    sep = Separator(cascade_dir, device="cpu")
    rng = np.random.default_rng(1)
    song = (rng.standard_normal((2, 22050)) * 0.1).astype(np.float32)
    out = sep.separate(song, 22050, {c: sep.class_latent(c) for c in TINY_CLASSES}, masks="ratio")
    np.testing.assert_allclose(sum(out.values()), song, atol=1e-4)


def test_assembling_refuses_a_model_that_holds_spleeter_already(
    cascade_dir: Path, checkpoints: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="not one that holds Spleeter"):
        assemble(cascade_dir, tmp_path / "again", checkpoints=checkpoints, stage=STAGE)
    assert not (tmp_path / "again").exists()


def test_cli_cascade_needs_its_two_parts_and_trains_nothing(cli, tiny_model_dir: Path) -> None:
    result = cli("train", "--preset", "cascade", "--init", tiny_model_dir, "--out", "nowhere")
    assert result.code == 2 and "--init-separator spleeter" in result.one_line_error()
    result = cli(
        "train", "--preset", "cascade", "--init", tiny_model_dir, "--init-separator", "spleeter",
        "--data", "somewhere", "--out", "nowhere",
    )  # fmt: skip
    assert result.code == 2 and "trains nothing" in result.one_line_error()
    assert not Path("nowhere").exists()


def test_the_onnx_export_of_a_cascade_separates_as_the_model_does(
    cascade_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from aqsep.onnx import ALL_GRAPHS, export_onnx

    export = export_onnx(cascade_dir, tmp_path / "export")  # verified against the model on export
    assert sorted(p.name for p in export.iterdir()) == sorted(
        [*ALL_GRAPHS, "config.json", "classes.json", "export.json"]
    )
    torch_sep = Separator(cascade_dir, device="cpu")
    onnx_sep = Separator(export, backend="onnx")
    # chunks of the stage (0.37 s) hold two to three of the query model's patches (0.18 s)
    song = (np.random.default_rng(5).standard_normal((2, 3 * 22050)) * 0.1).astype(np.float32)
    latents = {c: torch_sep.class_latent(c) for c in ("vocals", "drums", "bass")}
    want = torch_sep.separate(song, 22050, latents, residual=True)
    got = onnx_sep.separate(song, 22050, latents, residual=True)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    assert np.abs(want["vocals"] - want["drums"]).max() > 1e-3  # the gate chose other sides


def test_an_fp16_stage_is_kept_where_it_loses_nothing(cascade_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxconverter_common")
    from aqsep.onnx import export_onnx

    fp32 = export_onnx(cascade_dir, tmp_path / "fp32")
    half = export_onnx(cascade_dir, tmp_path / "fp16", precision="fp16")
    info = json.loads((half / "export.json").read_text())
    assert info["precision"] == "fp16" and abs(info["check"]["loss_db"]) <= 0.1
    import onnx

    weights = {w.data_type for w in onnx.load(str(half / "stage.onnx")).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in weights  # the stage's weights are half precision
    assert (fp32 / "stage.onnx").read_bytes() != (half / "stage.onnx").read_bytes()
    assert (half / "separator.onnx").read_bytes() == (fp32 / "separator.onnx").read_bytes()
