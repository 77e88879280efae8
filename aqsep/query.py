"""Turning queries into latents: audio clips, ranges of the mixture, class means, blends, refinement."""

from __future__ import annotations

import numpy as np
import torch

from aqsep.audio import AudioReader, resample, to_mono
from aqsep.errors import QueryError
from aqsep.model import QuerySeparator
from aqsep.transforms import stft

SILENCE_DB = -50.0  # windows quieter than this (RMS, dBFS) do not count as query material


class LatentAverager:
    """Running mean of mu over the non-silent windows fed to it."""

    def __init__(self, model: QuerySeparator, silence_db: float = SILENCE_DB) -> None:
        self.model, self.silence_db = model, silence_db
        self.total: torch.Tensor | None = None
        self.count = 0
        self.loudest_db = -np.inf

    @torch.inference_mode()
    def add_waveforms(self, windows: torch.Tensor) -> None:
        """``(batch, samples)`` mono windows at the model's rate."""
        a = self.model.config.audio
        levels = 10 * torch.log10(windows.float().pow(2).mean(dim=-1) + 1e-12)
        self.loudest_db = max(self.loudest_db, float(levels.max()))
        keep = levels > self.silence_db
        if keep.any():
            self.add_magnitudes(stft(windows[keep], a.n_fft, a.hop_length).abs(), checked=True)

    @torch.inference_mode()
    def add_magnitudes(self, magnitude: torch.Tensor, *, checked: bool = False) -> None:
        """``(batch, bins, frames)`` linear magnitudes at the model's rate (e.g. estimates)."""
        if not checked:
            # Parseval with a Hann window: mean |X|^2 over the one-sided bins ~ 3/8 n_fft x power.
            a = self.model.config.audio
            power = magnitude.float().pow(2).mean(dim=(-2, -1)) / (0.375 * a.n_fft)
            levels = 10 * torch.log10(power + 1e-12)
            self.loudest_db = max(self.loudest_db, float(levels.max()))
            magnitude = magnitude[levels > self.silence_db]
        if magnitude.shape[0] == 0:
            return
        mu = self.model.encode(magnitude).mu.sum(dim=0)
        self.total = mu if self.total is None else self.total + mu
        self.count += magnitude.shape[0]

    def mean(self, what: str) -> torch.Tensor:
        if self.total is None or self.count == 0:
            level = (
                "no audio"
                if self.loudest_db == -np.inf
                else f"loudest window {self.loudest_db:.1f} dBFS"
            )
            raise QueryError(
                f"{what} is silent ({level}, threshold {self.silence_db:.0f} dBFS): it holds nothing to "
                "look for; use a clip where the instrument plays, or --target CLASS"
            )
        return (self.total / self.count).cpu()


def encode_reader(
    model: QuerySeparator,
    reader: AudioReader,
    *,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    what: str | None = None,
) -> torch.Tensor:
    """Mean latent of a query file or array: encoded window by window, silent windows skipped.

    Windows are the model's training excerpt length; a query shorter than one window is
    zero-padded. ``start``/``stop`` (input samples) restrict the query to a range.
    """
    a = model.config.audio
    stop = reader.frames if stop is None else min(stop, reader.frames)
    if stop <= start:
        raise QueryError(f"query range of {reader.name} is empty")
    win_in = max(1, round(a.segment_samples * reader.sample_rate / a.sample_rate))
    averager = LatentAverager(model)
    batch: list[np.ndarray] = []

    def flush() -> None:
        mono = resample(np.stack(batch), reader.sample_rate, a.sample_rate)
        averager.add_waveforms(torch.from_numpy(mono).to(device))
        batch.clear()

    for s in range(start, stop, win_in):
        block = reader.read(s, min(win_in, stop - s))
        padded = np.zeros(win_in, dtype=np.float32)
        padded[: block.shape[1]] = to_mono(block)
        batch.append(padded)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return averager.mean(what or f"query {reader.name}")


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation (docs/paper.md section 7.3); alpha 0 gives z0 and 1 gives z1.

    z(alpha) = sin((1 - alpha) theta) / sin(theta) z0 + sin(alpha theta) / sin(theta) z1, with
    theta the angle between z0 and z1; falls back to linear interpolation when they are parallel.
    """
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm()).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(theta.sin()) < 1e-6:
        return (1 - alpha) * z0 + alpha * z1
    return (torch.sin((1 - alpha) * theta) * z0 + torch.sin(alpha * theta) * z1) / torch.sin(theta)
