"""The networks: shapes for both presets, AdaIN, the losses, and the exact fast layers of the
U-Net checked against the plain layers they replace."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from aqsep.config import PRESETS, preset
from aqsep.fastforms import (
    BatchNormAdaIN,
    PhaseConvTranspose2d,
    TiledZConv2d,
    accelerate,
    phase_conv2d,
    phase_conv_transpose2d,
)
from aqsep.losses import kl_loss, latent_loss, reconstruction_loss
from aqsep.model import AdaIN, LatentConv2d, Posterior, QuerySeparator, UNetSeparator


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shapes_of_both_presets(name: str) -> None:
    torch.manual_seed(0)
    cfg = preset(name)
    model = QuerySeparator(cfg).eval()
    sa = cfg.separator_audio
    bins = sa.n_fft // 2 + 1
    frames = 70  # not a multiple of 64: padded for the U-Net and cropped back
    channels = () if cfg.separator_channels == 1 else (cfg.separator_channels,)
    mixture = torch.rand(2, *channels, bins, frames)
    query_bins = cfg.audio.n_fft // 2 + 1
    with torch.no_grad():
        posterior = model.encode(torch.rand(2, query_bins, cfg.audio.segment_frames))
        mask = model.mask(mixture, posterior.mu)
        estimate = model(mixture, posterior.mu)
    assert posterior.mu.shape == posterior.logvar.shape == (2, cfg.query.latent_dim)
    assert mask.shape == estimate.shape == mixture.shape
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    torch.testing.assert_close(estimate, mask * mixture)
    # the Nyquist bin reuses the mask of the highest modelled bin
    torch.testing.assert_close(mask[..., -1, :], mask[..., sa.n_bins - 1, :])


def test_posterior_sample_is_mu_plus_scaled_noise() -> None:
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.log(torch.tensor([[4.0, 0.25]]))
    draws = torch.stack([Posterior(mu, logvar).sample() for _ in range(4000)])
    torch.testing.assert_close(draws.mean(0), mu, atol=0.1, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.tensor([[2.0, 0.5]]), atol=0.1, rtol=0)


def test_adain_normalises_then_applies_the_z_dependent_scale_and_bias() -> None:
    torch.manual_seed(0)
    adain = AdaIN(channels=3, latent_dim=4)
    h = 5.0 + 3.0 * torch.randn(2, 3, 8, 6)
    z = torch.randn(2, 4)
    # initialised as the identity after normalisation: per example and channel, mean 0 and std 1
    out = adain(h, z)
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.std(dim=(2, 3), unbiased=False), torch.ones(2, 3), atol=1e-3, rtol=0
    )
    # with a trained map, the output has gamma(z) as std and beta(z) as mean, per example
    with torch.no_grad():
        adain.to_scale_bias.weight.normal_()
    gamma, beta = adain.to_scale_bias(z).chunk(2, dim=-1)
    out = adain(h, z)
    torch.testing.assert_close(out.mean(dim=(2, 3)), beta, atol=1e-4, rtol=0)
    torch.testing.assert_close(
        out.std(dim=(2, 3), unbiased=False), gamma.abs(), atol=1e-3, rtol=1e-3
    )
    # a different z changes the output; a different h with the same statistics does not matter
    assert not torch.allclose(adain(h, z.flip(0)), out)
    torch.testing.assert_close(adain(2.0 * h + 7.0, z), out, atol=1e-4, rtol=1e-4)


def test_losses() -> None:
    zero = Posterior(torch.zeros(3, 5), torch.zeros(3, 5))
    assert float(kl_loss(zero)) == 0.0
    # KL of N(mu, 1) to N(0, 1) is mu^2 / 2 per dimension, summed over dimensions
    shifted = Posterior(torch.full((3, 5), 2.0), torch.zeros(3, 5))
    assert float(kl_loss(shifted)) == pytest.approx(5 * 2.0)
    assert float(latent_loss(torch.ones(2, 4), torch.zeros(2, 4))) == 1.0
    assert float(reconstruction_loss(torch.full((2, 3), 0.5), torch.zeros(2, 3))) == 0.5


def assert_same_values_and_gradients(
    fast: torch.Tensor, plain: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> None:
    """``fast`` equals ``plain``, and so do their gradients with respect to ``inputs``."""
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    grads_plain = torch.autograd.grad((plain * plain.detach()).sum(), inputs)
    grads_fast = torch.autograd.grad((fast * plain.detach()).sum(), inputs)
    for g_fast, g_plain in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(g_fast, g_plain, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("channels", [(1, 8), (3, 2)])
def test_phase_conv2d_equals_the_stride_2_convolution(
    kernel: int, channels: tuple[int, int]
) -> None:
    torch.manual_seed(kernel)
    cin, cout = channels
    x = torch.randn(2, cin, 16, 10, requires_grad=True)
    w = torch.randn(cout, cin, kernel, kernel, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    plain = F.conv2d(x, w, b, stride=2, padding=kernel // 2)
    fast = phase_conv2d(x, w, b, padding=kernel // 2)
    assert_same_values_and_gradients(fast, plain, (x, w, b))


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("channels", [(16, 1), (3, 4)])
def test_phase_conv_transpose2d_equals_the_transposed_convolution(
    kernel: int, channels: tuple[int, int]
) -> None:
    torch.manual_seed(kernel)
    cin, cout = channels
    x = torch.randn(2, cin, 8, 5, requires_grad=True)
    w = torch.randn(cin, cout, kernel, kernel, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    plain = F.conv_transpose2d(x, w, b, stride=2, padding=kernel // 2, output_padding=1)
    fast = phase_conv_transpose2d(x, w, b, padding=kernel // 2)
    assert fast.shape == plain.shape == (2, cout, 16, 10)
    assert_same_values_and_gradients(fast, plain, (x, w, b))


def _separator(kernel: int) -> UNetSeparator:
    """A plain U-Net with small random weights."""
    torch.manual_seed(0)
    cfg = preset("cpu")
    sep_cfg = type(cfg.separator)(channels=(4, 4, 8, 8, 8, 8), kernel_size=kernel)
    sep = UNetSeparator(sep_cfg, latent_dim=6).eval()
    with torch.no_grad():  # AdaIN maps away from their identity initialisation
        for adain in sep.adains:
            assert isinstance(adain, AdaIN)
            adain.to_scale_bias.weight.normal_(std=0.3)
    return sep


def _plain_and_fast(kernel: int) -> tuple[UNetSeparator, UNetSeparator]:
    plain = _separator(kernel)
    return plain, accelerate(copy.deepcopy(plain))


@pytest.mark.parametrize("kernel", [3, 5])
def test_separator_equals_the_plain_u_net(kernel: int) -> None:
    plain, sep = _plain_and_fast(kernel)
    spec = torch.rand(3, 1, 128, 64)
    z = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(sep(spec, z), plain(spec, z), atol=1e-5, rtol=1e-4)
    # with autograd (training: phase_deconv is off there), values and gradients; the gradient
    # runs through the whole network, so float rounding is relative to its size
    spec.requires_grad_(True)
    z.requires_grad_(True)
    fast, plain_out = sep(spec, z), plain(spec, z)
    torch.testing.assert_close(fast, plain_out, atol=1e-5, rtol=1e-4)
    weight = torch.rand_like(plain_out)
    for g_fast, g_plain in zip(
        torch.autograd.grad((fast * weight).sum(), (spec, z)),
        torch.autograd.grad((plain_out * weight).sum(), (spec, z)),
        strict=True,
    ):
        torch.testing.assert_close(
            g_fast, g_plain, atol=1e-4 * float(g_plain.abs().max()), rtol=1e-3
        )


@pytest.mark.parametrize("form", ["tiled_z", "phase_conv", "phase_deconv", "adain"])
def test_each_fast_form_equals_its_plain_operation(form: str) -> None:
    """Each form alone against the plain layer, in values and gradients (inputs and weights)."""
    sep = _separator(5)
    spec = torch.rand(2, 1, 64, 32, requires_grad=True)
    z = torch.randn(2, 6, requires_grad=True)
    first = sep.encoder[0][0]
    assert isinstance(first, LatentConv2d)
    if form == "tiled_z":
        inputs = (spec, z, first.weight, first.bias)
        fast, plain = TiledZConv2d.replacing(first)(spec, z), first(spec, z)
    elif form == "phase_conv":
        inputs = (spec, first.weight, first.bias)
        w = first.weight[:, :1]
        fast = phase_conv2d(spec, w, first.bias, padding=2)
        plain = F.conv2d(spec, w, first.bias, stride=2, padding=2)
    elif form == "phase_deconv":
        # the operation PhaseConvTranspose2d runs without autograd, here with it
        h = torch.randn(2, 8, 32, 16, requires_grad=True)
        inputs = (h, sep.to_mask.weight, sep.to_mask.bias)
        fast = phase_conv_transpose2d(h, sep.to_mask.weight, sep.to_mask.bias, padding=2)
        plain = sep.to_mask(h)
        with torch.no_grad():
            layer = PhaseConvTranspose2d.replacing(sep.to_mask)
            torch.testing.assert_close(layer(h), fast.detach(), atol=0, rtol=0)
    else:
        h = torch.randn(2, 4, 16, 8, requires_grad=True)
        adain = sep.adains[-1]
        assert isinstance(adain, AdaIN)
        inputs = (h, z, *adain.parameters())
        fast, plain = BatchNormAdaIN.replacing(adain)(h, z), adain(h, z)
    assert_same_values_and_gradients(fast, plain, inputs)


def test_accelerate_replaces_the_plain_layers_and_keeps_the_parameters() -> None:
    torch.manual_seed(0)
    model = QuerySeparator(preset("cpu"))
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    draw = torch.get_rng_state()
    assert accelerate(model) is model
    assert torch.equal(torch.get_rng_state(), draw)  # no random numbers taken
    sep = model.separator
    assert type(sep.encoder[0][0]) is TiledZConv2d
    assert type(sep.to_mask) is PhaseConvTranspose2d
    assert all(type(a) is BatchNormAdaIN for a in sep.adains)
    # the same names, keys and parameter objects (an optimizer made before still works)
    assert list(model.state_dict()) == keys
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(p is params[name] for name, p in model.named_parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.training and all(m.training for m in model.modules())
    # a second call changes nothing
    layers = list(model.modules())
    accelerate(model)
    assert all(a is b for a, b in zip(layers, model.modules(), strict=True))


def test_the_fast_layers_follow_eval_and_the_plain_model_is_the_network() -> None:
    plain, sep = _plain_and_fast(5)
    spec, z = torch.rand(2, 1, 128, 64), torch.randn(2, 6)
    assert not any(
        isinstance(m, (TiledZConv2d, PhaseConvTranspose2d, BatchNormAdaIN)) for m in plain.modules()
    )
    assert not any(m.training for m in sep.modules())
    with torch.no_grad():
        fast = sep(spec, z)
        # the plain model, rebuilt from the fast one's state dict: the plain network exactly
        rebuilt = _separator(5)
        rebuilt.load_state_dict(sep.state_dict(), strict=True)
        torch.testing.assert_close(rebuilt(spec, z), plain(spec, z), atol=0, rtol=0)
    torch.testing.assert_close(fast, plain(spec, z), atol=1e-5, rtol=1e-4)
