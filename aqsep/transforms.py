"""The one STFT front-end used by training, inference and evaluation.

Two array types, one transform: :func:`stft` and :func:`istft` take torch tensors (training, on
any device); :func:`stft_array` and :func:`istft_array` take numpy arrays (the separation core,
:mod:`aqsep.inference`, and query encoding, which must run without PyTorch on the ONNX path). Both
are the same centred, Hann-windowed, zero-padded STFT; ``tests/test_transforms.py`` checks that
they agree. PyTorch is imported only by the tensor functions. The array functions use numpy's
FFT: ``scipy.fft`` is about 6 % faster on a 3-minute song but takes longer to import than the
rest of the ONNX path's start-up (docs/benchmarks.md, "Without PyTorch").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_WINDOWS: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}
_ARRAY_WINDOWS: dict[int, np.ndarray] = {}
_OVERLAP_SUMS: dict[tuple[int, int, int], np.ndarray] = {}


def hann(n_fft: int, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    import torch

    dtype = torch.float32 if dtype is None else dtype
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
    import torch

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
    import torch

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
    import torch

    return torch.log1p(magnitude)


# ---- the same transform on numpy arrays ------------------------------------------------------


def hann_array(n_fft: int) -> np.ndarray:
    """The periodic Hann window of :func:`hann`, float32."""
    if n_fft not in _ARRAY_WINDOWS:
        k = np.arange(n_fft, dtype=np.float64)
        _ARRAY_WINDOWS[n_fft] = (0.5 - 0.5 * np.cos(2 * np.pi * k / n_fft)).astype(np.float32)
    return _ARRAY_WINDOWS[n_fft]


def stft_array(wave: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """:func:`stft` of a numpy array ``(..., samples)``: ``(..., n_fft // 2 + 1, frames)``
    complex64."""
    wave = np.asarray(wave, dtype=np.float32)
    pad = n_fft // 2
    frames = 1 + wave.shape[-1] // hop_length
    padded = np.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(pad, n_fft - pad)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)
    windows = windows[..., ::hop_length, :][..., :frames, :]
    spec = np.fft.rfft(windows * hann_array(n_fft), axis=-1)  # (..., frames, bins)
    return np.ascontiguousarray(np.swapaxes(spec, -1, -2)).astype(np.complex64, copy=False)


def istft_array(spec: np.ndarray, n_fft: int, hop_length: int, length: int) -> np.ndarray:
    """:func:`istft` of a numpy array ``(..., bins, frames)`` complex: ``(..., length)`` float32.

    Windowed overlap-add divided by the summed squared window; the frames are added in
    ``ceil(n_fft / hop_length)`` strided passes, one per offset of a frame within its hop.
    """
    frames = spec.shape[-1]
    lead = spec.shape[:-2]
    hops = -(-n_fft // hop_length)
    x = np.fft.irfft(np.swapaxes(spec, -1, -2), n=n_fft, axis=-1).astype(np.float32, copy=False)
    x = x * hann_array(n_fft)  # (..., frames, n_fft)
    if hops * hop_length != n_fft:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, hops * hop_length - n_fft)])
    out = np.zeros((*lead, (frames + hops - 1) * hop_length), dtype=np.float32)
    for k in range(hops):
        part = x[..., k * hop_length : (k + 1) * hop_length].reshape(*lead, frames * hop_length)
        out[..., k * hop_length : (k + frames) * hop_length] += part
    pad = n_fft // 2
    out = out[..., pad : pad + length]
    if out.shape[-1] < length:
        out = np.pad(out, [(0, 0)] * len(lead) + [(0, length - out.shape[-1])])
    return out / _overlap_sum(n_fft, hop_length, frames)[pad : pad + length]


def _overlap_sum(n_fft: int, hop_length: int, frames: int) -> np.ndarray:
    """The summed squared windows of :func:`istft_array`'s overlap-add (zeros where no window
    reaches are 1, so dividing leaves those samples as they are)."""
    key = (n_fft, hop_length, frames)
    if key not in _OVERLAP_SUMS:
        hops = -(-n_fft // hop_length)
        w2 = np.zeros(hops * hop_length, dtype=np.float32)
        w2[:n_fft] = hann_array(n_fft) ** 2
        total = np.zeros((frames + hops - 1) * hop_length + n_fft, dtype=np.float32)
        for k in range(hops):
            total[k * hop_length : (k + frames) * hop_length] += np.tile(
                w2[k * hop_length : (k + 1) * hop_length], frames
            )
        total[total < 1e-11] = 1.0
        if len(_OVERLAP_SUMS) > 64:
            _OVERLAP_SUMS.clear()
        _OVERLAP_SUMS[key] = total
    return _OVERLAP_SUMS[key]
