"""The one separation core: chunked overlap-add inference with a query latent.

Every entry point (the CLI, :class:`aqsep.api.Separator`, evaluation and the experiments)
separates through :func:`separate_stream`. It reads the input block by block at its own sample
rate and channel count, runs the model on a mono mix at the model's rate, maps the predicted
mask onto the input's own STFT grid (by frequency in Hz and time in seconds, so the output keeps
the input's full band) and applies it to every channel with that channel's phase. Chunks are
cross-faded with a triangular window and the summed weight divided out; finished samples are
yielded as soon as no later chunk touches them, so peak memory depends on ``segment`` and
``batch_size``, never on the length of the input.

The core has no modes: a different use is a composition of it. The iterative method separates,
then encodes the estimate as a query (:meth:`aqsep.api.Separator.refine`); evaluation's
ground-truth queries give one latent per chunk (:meth:`ChunkPlan.for_model` says where the chunks
lie).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from aqsep.audio import AudioReader, resample, to_mono
from aqsep.errors import QueryError, SettingError
from aqsep.model import QuerySeparator
from aqsep.transforms import istft, stft

# A latent for the whole input ``(latent_dim,)``, or one per chunk ``(chunks, latent_dim)`` in the
# order of the chunks' starts (:class:`ChunkPlan`).
Latent = torch.Tensor
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunks of an input start, in samples of the input."""

    length: int  # input samples
    segment: int  # samples per chunk
    step: int  # samples between chunk starts

    @classmethod
    def make(
        cls, length: int, sample_rate: int, segment_seconds: float, overlap: float
    ) -> ChunkPlan:
        if not 0.0 <= overlap < 1.0:
            raise SettingError(f"overlap must be in [0, 1), got {overlap}")
        if segment_seconds <= 0:
            raise SettingError(f"segment must be positive, got {segment_seconds}")
        segment = max(1, round(segment_seconds * sample_rate))
        step = max(1, round(segment * (1.0 - overlap)))
        return cls(length, segment, step)

    @classmethod
    def for_model(
        cls,
        model: QuerySeparator,
        length: int,
        sample_rate: int,
        segment: float | None = None,
        overlap: float = 0.25,
    ) -> ChunkPlan:
        """The plan :func:`separate_stream` follows for these settings (``segment`` None: the
        model's excerpt length)."""
        seconds = segment if segment is not None else model.config.audio.segment_seconds
        return cls.make(length, sample_rate, seconds, overlap)

    @property
    def starts(self) -> list[int]:
        n = 1 + max(0, math.ceil((self.length - self.segment) / self.step))
        return [i * self.step for i in range(n)]


def crossfade_window(length: int) -> np.ndarray:
    """Triangular weights, strictly positive, peak 1 in the middle."""
    half = np.arange(1, length // 2 + 1, dtype=np.float32)
    w = np.concatenate([half, np.arange(length - length // 2, 0, -1, dtype=np.float32)])
    return w / w.max()


def map_mask(
    mask: torch.Tensor,
    *,
    src_sr: int,
    src_n_fft: int,
    src_hop: int,
    dst_sr: int,
    dst_n_fft: int,
    dst_hop: int,
    dst_frames: int,
) -> torch.Tensor:
    """Resample a mask ``(batch, src_bins, src_frames)`` onto another STFT grid.

    Bins are matched by frequency in Hz and frames by time in seconds (linear interpolation);
    bins above the source's Nyquist frequency reuse its highest bin, so the output stays full band.
    """
    src_bins, src_frames = mask.shape[-2:]
    dst_bins = dst_n_fft // 2 + 1
    dev = mask.device
    f = (
        torch.arange(dst_bins, device=dev, dtype=torch.float32)
        * (dst_sr / dst_n_fft)
        / (src_sr / src_n_fft)
    )
    t = (
        torch.arange(dst_frames, device=dev, dtype=torch.float32)
        * (dst_hop / dst_sr)
        / (src_hop / src_sr)
    )
    out = _interp(mask, f.clamp(0, src_bins - 1), dim=-2)
    return _interp(out, t.clamp(0, src_frames - 1), dim=-1)


def _interp(x: torch.Tensor, pos: torch.Tensor, dim: int) -> torch.Tensor:
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=x.shape[dim] - 1)
    frac = (pos - lo).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = -1
    frac = frac.view(shape)
    return x.index_select(dim, lo) * (1 - frac) + x.index_select(dim, hi) * frac


def native_grid(model: QuerySeparator, sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop) at ``sample_rate`` covering the same seconds as the model's STFT."""
    audio = model.config.audio
    ratio = sample_rate / audio.sample_rate
    n_fft = max(16, 2 * round(audio.n_fft * ratio / 2))
    hop = max(4, round(audio.hop_length * ratio))
    return n_fft, hop


@torch.inference_mode()
def _separate_chunks(
    model: QuerySeparator,
    chunks: np.ndarray,
    sample_rate: int,
    z: torch.Tensor,
    device: torch.device,
) -> np.ndarray:
    """``chunks (batch, channels, samples)`` at ``sample_rate`` -> estimate of the same shape.

    The mask is predicted at the model's rate from the mono mix, mapped onto the chunks' own STFT
    grid and applied to every channel.
    """
    a = model.config.audio
    mono = torch.from_numpy(resample(to_mono_batch(chunks), sample_rate, a.sample_rate)).to(device)
    mask = model.mask(stft(mono, a.n_fft, a.hop_length).abs(), z.to(device))
    n_fft, hop = native_grid(model, sample_rate)
    x = torch.from_numpy(chunks).to(device)
    spec = stft(x, n_fft, hop)  # (batch, channels, bins, frames)
    if (n_fft, hop, sample_rate) == (a.n_fft, a.hop_length, a.sample_rate) and spec.shape[
        -1
    ] == mask.shape[-1]:
        native_mask = mask
    else:
        native_mask = map_mask(
            mask,
            src_sr=a.sample_rate,
            src_n_fft=a.n_fft,
            src_hop=a.hop_length,
            dst_sr=sample_rate,
            dst_n_fft=n_fft,
            dst_hop=hop,
            dst_frames=spec.shape[-1],
        )
    est = istft(spec * native_mask[:, None], n_fft, hop, length=chunks.shape[-1])
    return est.float().cpu().numpy()


def to_mono_batch(chunks: np.ndarray) -> np.ndarray:
    """``(batch, channels, samples)`` -> ``(batch, samples)``."""
    return np.stack([to_mono(c) for c in chunks])


def separate_stream(
    model: QuerySeparator,
    reader: AudioReader,
    latent: Latent,
    *,
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Separate ``reader``'s audio, yielding consecutive ``(channels, n)`` blocks of the estimate.

    The blocks concatenate to exactly ``reader.frames`` samples at ``reader.sample_rate`` with
    ``reader.channels`` channels.

    Args:
        model: a model in eval mode on ``device``.
        latent: ``(latent_dim,)`` for the whole input, or ``(chunks, latent_dim)``: one per chunk
            of ``ChunkPlan.for_model(model, reader.frames, reader.sample_rate, segment, overlap)``.
        segment: chunk length in seconds (default: the model's training excerpt length).
        overlap: fraction of a chunk shared with the next one, in [0, 1).
        batch_size: chunks run through the network at once.
        progress: called after each batch with ``{"stage": "separate", "done": chunks done,
            "total": chunks, "seconds": input seconds done}``.

    Raises:
        QueryError: ``latent`` has one row per chunk but not as many rows as there are chunks.
    """
    device = torch.device(device)
    plan = ChunkPlan.for_model(model, reader.frames, reader.sample_rate, segment, overlap)
    window = crossfade_window(plan.segment)
    starts = plan.starts
    per_chunk = latent.dim() == 2
    if per_chunk and latent.shape[0] != len(starts):
        raise QueryError(
            f"{latent.shape[0]} latents were given for {len(starts)} chunks: give one latent, or "
            "one per chunk"
        )
    channels = reader.channels
    acc = np.zeros((channels, 0), dtype=np.float32)  # weighted sum of samples from `emitted` on
    wsum = np.zeros(0, dtype=np.float32)
    emitted = 0
    for b in range(0, len(starts), batch_size):
        batch_starts = starts[b : b + batch_size]
        chunks = np.stack([reader.read(s, plan.segment) for s in batch_starts])
        if per_chunk:
            z = latent[b : b + len(batch_starts)]
        else:
            z = latent.reshape(1, -1).expand(len(batch_starts), -1)
        est = _separate_chunks(model, chunks, reader.sample_rate, z.float(), device)
        if progress is not None:
            done = b + len(batch_starts)
            progress(
                {
                    "stage": "separate",
                    "done": done,
                    "total": len(starts),
                    "seconds": min(reader.frames, batch_starts[-1] + plan.segment)
                    / reader.sample_rate,
                }
            )
        end = batch_starts[-1] + plan.segment - emitted
        if end > acc.shape[1]:
            acc = np.concatenate(
                [acc, np.zeros((channels, end - acc.shape[1]), np.float32)], axis=1
            )
            wsum = np.concatenate([wsum, np.zeros(end - wsum.shape[0], np.float32)])
        for s, e in zip(batch_starts, est, strict=True):
            o = s - emitted
            acc[:, o : o + plan.segment] += e * window
            wsum[o : o + plan.segment] += window
        next_start = starts[b + batch_size] if b + batch_size < len(starts) else reader.frames
        ready = min(next_start, reader.frames) - emitted
        if ready > 0:
            yield acc[:, :ready] / wsum[:ready]
            acc, wsum = acc[:, ready:], wsum[ready:]
            emitted += ready


def separate_array(
    model: QuerySeparator, audio: np.ndarray, sample_rate: int, latent: Latent, **kwargs: object
) -> np.ndarray:
    """:func:`separate_stream` on an in-memory ``(channels, samples)`` array."""
    reader = AudioReader(audio, sample_rate)
    blocks = list(separate_stream(model, reader, latent, **kwargs))  # type: ignore[arg-type]
    return np.concatenate(blocks, axis=1)
