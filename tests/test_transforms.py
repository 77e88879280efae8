"""aqsep.transforms: the one STFT front-end (shapes, round trip, a tone's bin, features)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aqsep.transforms import features, hann, hann_array, istft, istft_array, stft, stft_array


@pytest.mark.parametrize(("n_fft", "hop"), [(256, 64), (1024, 256), (512, 100)])
@pytest.mark.parametrize("length", [1, 300, 4097])
def test_round_trip_and_shapes(n_fft, hop, length):
    torch.manual_seed(0)
    wave = torch.randn(2, 3, length)
    spec = stft(wave, n_fft, hop)
    assert spec.shape == (2, 3, n_fft // 2 + 1, 1 + length // hop) and spec.is_complex()
    back = istft(spec, n_fft, hop, length=length)
    assert back.shape == wave.shape
    torch.testing.assert_close(back, wave, atol=1e-5, rtol=1e-5)


def test_a_tone_lands_in_its_bin():
    sr, n_fft, hop = 22050, 1024, 256
    freq = 46 * sr / n_fft  # the centre of bin 46 (990.5 Hz)
    t = torch.arange(sr) / sr
    mag = stft(torch.sin(2 * math.pi * freq * t), n_fft, hop).abs()
    peak = int(mag[:, mag.shape[-1] // 2].argmax())
    assert peak == round(freq * n_fft / sr)
    # a Hann window (sum n_fft / 2) of a unit sine: n_fft / 4 in its bin
    assert mag[peak, mag.shape[-1] // 2] == pytest.approx(n_fft / 4, rel=1e-3)


def test_the_window_is_cached_per_size_device_and_dtype():
    cpu = torch.device("cpu")
    assert hann(256, cpu) is hann(256, cpu)
    assert hann(256, cpu, torch.float64).dtype == torch.float64
    torch.testing.assert_close(hann(8, cpu), torch.hann_window(8))


def test_features_are_log1p_of_the_magnitude():
    mag = torch.tensor([0.0, 1.0, 100.0])
    torch.testing.assert_close(features(mag), torch.log1p(mag))
    assert features(mag)[0] == 0


@pytest.mark.parametrize(("n_fft", "hop"), [(256, 64), (512, 100), (4458, 1115)])
@pytest.mark.parametrize("length", [1, 300, 9001])
def test_the_array_transform_is_the_tensor_transform(n_fft, hop, length):
    # the separation core's numpy STFT against training's torch.stft, both ways; a hop that does
    # not divide n_fft (the native grid of a 48 kHz input) included
    wave = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    spec = stft_array(wave, n_fft, hop)
    want = stft(torch.from_numpy(wave), n_fft, hop).numpy()
    assert spec.shape == want.shape and spec.dtype == np.complex64
    np.testing.assert_allclose(spec, want, rtol=0, atol=2e-6 * np.abs(want).max())
    back = istft_array(spec, n_fft, hop, length)
    assert back.shape == wave.shape and back.dtype == np.float32
    np.testing.assert_allclose(
        back, istft(torch.from_numpy(want), n_fft, hop, length).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(back, wave, atol=1e-5)


def test_the_array_window_is_the_tensor_window():
    np.testing.assert_allclose(hann_array(8), torch.hann_window(8).numpy(), atol=3e-7)
