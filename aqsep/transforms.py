"""The one STFT front-end used by training, inference and evaluation."""

from __future__ import annotations

import torch

_WINDOWS: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def hann(n_fft: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    key = (n_fft, str(device), dtype)
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(n_fft, device=device, dtype=dtype)
    return _WINDOWS[key]


def stft(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Complex STFT, centred, Hann window.

    Args:
        wave: ``(..., samples)`` real waveform.
    Returns:
        ``(..., n_fft // 2 + 1, frames)`` complex, with ``frames = 1 + samples // hop_length``.
    """
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1]).float()
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        window=hann(n_fft, flat.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, n_fft: int, hop_length: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`. ``(..., bins, frames)`` complex -> ``(..., length)``."""
    shape = spec.shape
    flat = spec.reshape(-1, *shape[-2:])
    wave = torch.istft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        window=hann(n_fft, flat.device),
        center=True,
        length=length,
    )
    return wave.reshape(*shape[:-2], length)


def features(magnitude: torch.Tensor) -> torch.Tensor:
    """Network input from a linear magnitude: log1p compression (docs/paper.md section 2)."""
    return torch.log1p(magnitude)
