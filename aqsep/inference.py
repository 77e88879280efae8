"""The one separation core: chunked overlap-add inference with query latents.

Every entry point (the CLI, :class:`aqsep.api.Separator`, evaluation and the experiments)
separates through :func:`separate_stream`. It reads the input block by block at its own sample
rate and channel count, runs the model on a mono mix at the model's rate, maps the predicted
masks onto the input's own STFT grid (by frequency in Hz and time in seconds, so the output keeps
the input's full band) and applies them to every channel with that channel's phase. Chunks are
cross-faded with a triangular window and the summed weight divided out; finished samples are
yielded as soon as no later chunk touches them, so peak memory depends on ``segment`` and
``batch_size``, never on the length of the input.

**Several targets, one pass.** One call separates any number of targets (each a latent): each
chunk is read, transformed (one STFT at the model's rate, one at the input's) and inverse-
transformed once, and its targets' latents go through the network as one batch. How the targets'
masks are combined is :func:`combine_masks`: as predicted (``"independent"``), or scaled to add up
to one in every time-frequency bin (``"ratio"``), so that the estimates sum to the input; or, from
those ratio masks, a multichannel Wiener filter (``"wiener"``, :func:`wiener_filter`).

**The network seam.** The core works on numpy arrays (its STFT is
:func:`aqsep.transforms.stft_array`) and asks two things of a model, through :class:`Network`: its
configuration and ``mask(magnitude, z)``, the separator's forward pass on a batch of spectrogram
chunks; query encoding (:mod:`aqsep.query`) asks ``latent(magnitude)``. Arrays go in and come
out. A PyTorch :class:`~aqsep.model.QuerySeparator` is wrapped on its device
(:class:`aqsep.torch_network.TorchNetwork`, :func:`as_network`); the onnxruntime graphs of an
export are another network (:class:`aqsep.onnx.OnnxNetwork`). So the chunking, STFT, mask
mapping and overlap-add here serve both backends, and the ONNX path never imports PyTorch.

The core has no modes: a different use is a composition of it. The iterative method separates,
then encodes the estimate as a query (:meth:`aqsep.api.Separator.refine`); evaluation's
ground-truth queries give one latent per chunk (:meth:`ChunkPlan.for_model` says where the chunks
lie).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from aqsep.audio import AudioReader, resample, to_mono
from aqsep.config import AudioConfig, ModelConfig
from aqsep.errors import QueryError, SettingError
from aqsep.transforms import istft_array, stft_array

# A latent for the whole input ``(latent_dim,)``, or one per chunk ``(chunks, latent_dim)`` in the
# order of the chunks' starts (:class:`ChunkPlan`); float32. Where one is taken, a torch tensor
# is accepted too (:func:`as_latent`).
Latent = np.ndarray
Progress = Callable[[dict], None]

# How the masks of the targets of one pass are combined (:func:`combine_masks`).
MASK_RULES = ("ratio", "independent", "wiener")
# Below this a mask value counts as zero when masks are normalised (all targets silent in a bin:
# equal shares, rather than a division by zero).
_TINY_MASK = 1e-8
# Diagonal loading of the spatial covariances in the Wiener filter, relative to their trace.
_LOAD = 1e-6


class Network(Protocol):
    """The network calls of separation: what a runtime must provide, on numpy float32 arrays.

    ``config`` is the model's :class:`~aqsep.config.ModelConfig` (its ``audio`` front-end sets the
    STFT and the excerpt length); magnitudes are linear, at the model's sample rate, with
    ``n_fft // 2 + 1`` bins.
    """

    config: ModelConfig

    def mask(self, magnitude: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The separator: magnitude ``(batch, bins, frames)`` and latents ``(batch, latent_dim)``
        -> mask in [0, 1] of the magnitude's shape."""
        ...

    def latent(self, magnitude: np.ndarray) -> np.ndarray:
        """The Query-net's mean ``mu`` of a magnitude ``(batch, bins, frames)``: ``(batch,
        latent_dim)``."""
        ...

    def stage_share(self, magnitude: np.ndarray) -> np.ndarray:
        """Only where ``config.vocal_stage`` is set: the stage's vocal mask ``r`` of a magnitude
        ``(batch, channels, bins, frames)`` on the stage's front-end, of the same shape."""
        ...

    def side(self, z: np.ndarray) -> np.ndarray:
        """Only where ``config.vocal_stage`` is set: the gate ``g(z)`` ``(batch,)`` in [0, 1]."""
        ...


def as_network(model: Any, device: Any = "cpu") -> Network:
    """``model`` as a :class:`Network`: a PyTorch module is wrapped on ``device``
    (:class:`aqsep.torch_network.TorchNetwork`); anything else (an ONNX runtime, a network
    already wrapped) is returned as it is. PyTorch is not imported here: a torch module can only
    exist once it has been."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from aqsep.torch_network import TorchNetwork

        return TorchNetwork(model, device)
    return model  # type: ignore[no-any-return]


def as_latent(latent: Any) -> np.ndarray:
    """A latent (a numpy array, a torch tensor on any device, a list) as a float32 array."""
    if hasattr(latent, "detach"):  # a torch tensor: off its device and out of autograd
        latent = latent.detach().cpu().numpy()
    return np.asarray(latent, dtype=np.float32)


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
        model: Network,
        length: int,
        sample_rate: int,
        segment: float | None = None,
        overlap: float = 0.25,
    ) -> ChunkPlan:
        """The plan :func:`separate_stream` follows for these settings (``segment`` None: the
        model's excerpt length)."""
        seconds = segment if segment is not None else model.config.output_audio.segment_seconds
        return cls.make(length, sample_rate, seconds, overlap)

    @property
    def starts(self) -> list[int]:
        n = 1 + max(0, math.ceil((self.length - self.segment) / self.step))
        return [i * self.step for i in range(n)]


# The most chunks per forward pass: at 30 s chunks each one costs about 0.16 GB (measured with
# the `cpu` preset on 44.1 kHz stereo), so a batch of 32 stays near 5 GB; a larger one only costs
# memory, since one pass over the input does the same work whatever its batches.
MAX_BATCH_SIZE = 32
AUTO_BATCH_SECONDS = 12.0


def auto_batch_size(chunk_seconds: float) -> int:
    """Spectrograms per forward pass when none is asked for: as many chunks as make about
    :data:`AUTO_BATCH_SECONDS` of audio, from 1 to :data:`MAX_BATCH_SIZE`.

    Measured on a 2-core CPU (``docs/benchmarks.md``, *Batch size*): the fast model's 3-s chunks
    run fastest four at a time, the default model's 11.9-s chunks one at a time (0.8x the wall
    time of four, half the memory); a batch of more than about 12 s of audio gains nothing and
    its memory grows with it.
    """
    return min(MAX_BATCH_SIZE, max(1, int(AUTO_BATCH_SECONDS / chunk_seconds + 1e-6)))


def crossfade_window(length: int) -> np.ndarray:
    """Triangular weights, strictly positive, peak 1 in the middle."""
    half = np.arange(1, length // 2 + 1, dtype=np.float32)
    w = np.concatenate([half, np.arange(length - length // 2, 0, -1, dtype=np.float32)])
    return w / w.max()


def map_mask(
    mask: np.ndarray,
    *,
    src_sr: int,
    src_n_fft: int,
    src_hop: int,
    dst_sr: int,
    dst_n_fft: int,
    dst_hop: int,
    dst_frames: int,
) -> np.ndarray:
    """Resample a mask ``(batch, src_bins, src_frames)`` onto another STFT grid.

    Bins are matched by frequency in Hz and frames by time in seconds (linear interpolation,
    :func:`interpolate_mask`); bins above the source's Nyquist frequency reuse its highest bin, so
    the output stays full band. Where the two grids coincide (the same bin spacing in Hz and the
    same hop in seconds, as for every input at twice the model's rate) the mask is taken as it is,
    cropped or extended by its last bin and frame: :func:`interpolate_mask` gives the same values
    up to float rounding of its positions.
    """
    if dst_sr * src_n_fft == src_sr * dst_n_fft and dst_hop * src_sr == src_hop * dst_sr:
        return _extend(_extend(mask, dst_n_fft // 2 + 1, axis=-2), dst_frames, axis=-1)
    return interpolate_mask(
        mask,
        src_sr=src_sr,
        src_n_fft=src_n_fft,
        src_hop=src_hop,
        dst_sr=dst_sr,
        dst_n_fft=dst_n_fft,
        dst_hop=dst_hop,
        dst_frames=dst_frames,
    )


def interpolate_mask(
    mask: np.ndarray,
    *,
    src_sr: int,
    src_n_fft: int,
    src_hop: int,
    dst_sr: int,
    dst_n_fft: int,
    dst_hop: int,
    dst_frames: int,
) -> np.ndarray:
    """:func:`map_mask` by linear interpolation at every position, on any pair of grids."""
    src_bins, src_frames = mask.shape[-2:]
    dst_bins = dst_n_fft // 2 + 1
    f = np.arange(dst_bins, dtype=np.float32) * (dst_sr / dst_n_fft) / (src_sr / src_n_fft)
    t = np.arange(dst_frames, dtype=np.float32) * (dst_hop / dst_sr) / (src_hop / src_sr)
    out = _interp(mask, np.clip(f, 0, src_bins - 1), axis=-2)
    return _interp(out, np.clip(t, 0, src_frames - 1), axis=-1)


def _extend(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``x`` cropped to ``size`` along ``axis``, or extended by repeating its last entry."""
    have = x.shape[axis]
    if size <= have:
        return x.take(np.arange(size), axis=axis) if size < have else x
    last = x.take([have - 1], axis=axis)
    return np.concatenate([x, np.repeat(last, size - have, axis=axis)], axis=axis)


def _interp(x: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (pos - lo).astype(x.dtype).reshape(shape)
    return x.take(lo, axis=axis) * (1 - frac) + x.take(hi, axis=axis) * frac


def native_grid(model: Network, sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop) at ``sample_rate`` covering the same seconds as the STFT the model's masks are
    applied on (``config.output_audio``)."""
    audio = model.config.output_audio
    ratio = sample_rate / audio.sample_rate
    n_fft = max(16, 2 * round(audio.n_fft * ratio / 2))
    hop = max(4, round(audio.hop_length * ratio))
    return n_fft, hop


def combine_masks(masks: np.ndarray, rule: str, *, rest: bool = False) -> np.ndarray:
    """Combine the masks ``(..., targets, bins, frames)`` of the targets of one mixture.

    Rules (:data:`MASK_RULES`):

    * ``"independent"``: each mask as the network predicted it, as if its target were separated
      alone. The estimates need not add up to the mixture: two targets may both claim a bin.
    * ``"ratio"``: normalised ratio masks, ``m_k / sum_j m_j``; they add up to one in every bin, so
      the estimates sum to the mixture. With ``rest``, a rest source shares the bins too, with the
      mask ``max(0, 1 - sum_j m_j)`` (what the targets leave): masks that add up to more than one
      are scaled down to add up to one, others are kept, and targets plus rest sum to the mixture.
    * ``"wiener"``: the ratio masks here; :func:`separate_stream` then refines the estimates
      they give with :func:`wiener_filter` on the input's own channels.

    Where every target's mask is (near) zero, ``"ratio"`` without ``rest`` shares the bin equally.

    Raises:
        SettingError: an unknown rule.
    """
    if rule == "independent":
        return masks
    if rule not in MASK_RULES:
        raise SettingError(f"unknown mask rule {rule!r}; choose one of {', '.join(MASK_RULES)}")
    masks = np.maximum(masks, np.float32(_TINY_MASK))
    total = masks.sum(axis=-3, keepdims=True)
    return masks / (np.maximum(total, np.float32(1.0)) if rest else total)


def wiener_filter(
    spec: np.ndarray, masks: np.ndarray, *, iterations: int = 1, rest: bool = False
) -> np.ndarray:
    """Multichannel Wiener filtering of the estimates ``masks * spec`` (the EM iterations of
    Duong, Vincent and Gribonval 2010, as Open-Unmix's ``--niter`` runs them).

    Each iteration models every source as a local Gaussian: a power ``v(f, t)`` (the mean over
    channels of its estimate's power) and a spatial covariance ``R(f)`` (its estimate's channel
    covariance over the frames, normalised by ``v``), and re-estimates the sources as
    ``v R (sum_j v_j R_j)^-1 x``. The estimates of all sources sum to the mixture ``x`` in every
    bin; with one channel this is ratio masking by power, ``v_k / sum_j v_j``.

    Args:
        spec: the mixture's STFT ``(batch, channels, bins, frames)``, complex.
        masks: ``(batch, targets, bins, frames)``, adding up to one, or to at most one with
            ``rest`` (:func:`combine_masks`); or ``(batch, targets, channels, bins, frames)``,
            one mask per channel.
        rest: a rest source (``1 - sum of masks``) takes part in the filtering; it is not returned.
    Returns:
        ``(batch, targets, channels, bins, frames)``, complex.
    """
    if rest:
        left = np.maximum(1 - masks.sum(axis=1, keepdims=True), 0)
        masks = np.concatenate([masks, left], axis=1)
    per_channel = masks if masks.ndim == 5 else masks[:, :, None]
    y = per_channel * spec[:, None]  # (batch, sources, channels, bins, frames)
    for _ in range(iterations):
        y = _wiener_step(y, spec)
    return y[:, : masks.shape[1] - (1 if rest else 0)]


def _power(y: np.ndarray) -> np.ndarray:
    return y.real**2 + y.imag**2


def _wiener_step(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One EM iteration: sources ``y (b, s, c, f, t)`` of the mixture ``x (b, c, f, t)`` -> new ones."""
    if x.shape[1] == 1:  # R = 1: ratio masks by power
        v = _source_power(y)[0]
        return (v / v.sum(axis=1, keepdims=True))[:, :, None] * x[:, None]
    return (_wiener_step_stereo if x.shape[1] == 2 else _wiener_step_any)(y, x)


def _source_power(y: np.ndarray) -> tuple[np.ndarray, float]:
    """Each source's power ``v (b, s, f, t)`` (mean over channels), divided by ``scale`` (its
    largest value), never zero, and ``scale``."""
    power = _power(y).mean(axis=2)
    scale = float(power.max()) + 1e-30
    return power / scale + np.float32(_TINY_MASK), scale


def _wiener_step_any(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`_wiener_step` for any number of channels, with matrices."""
    channels, frames = x.shape[1], x.shape[-1]
    v, scale = _source_power(y)
    eye = np.eye(channels, dtype=x.dtype)
    weighted = y / (v * scale)[:, :, None]
    cov = np.einsum("bscft,bsdft->bsfcd", weighted, y.conj(), optimize=True) / frames
    load = cov.diagonal(axis1=-2, axis2=-1).real.mean(-1)[..., None, None]
    cov = cov + (_LOAD * load + _TINY_MASK) * eye
    vc = v.astype(cov.dtype)
    total = np.einsum("bsft,bsfcd->bftcd", vc, cov, optimize=True)
    u = np.linalg.solve(total, x.transpose(0, 2, 3, 1)[..., None])[..., 0]
    return np.einsum("bsft,bsfcd,bftd->bscft", vc, cov, u, optimize=True).astype(x.dtype)


def _wiener_step_stereo(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`_wiener_step_any` for two channels, its 2 x 2 Hermitian algebra written out (several
    times faster on a CPU)."""
    v, scale = _source_power(y)
    weighted = y / (v * scale)[:, :, None]
    y1, y2, w1, w2 = y[:, :, 0], y[:, :, 1], weighted[:, :, 0], weighted[:, :, 1]
    r11 = (w1 * y1.conj()).real.mean(-1, keepdims=True)  # R(f) of each source: (b, s, f, 1)
    r22 = (w2 * y2.conj()).real.mean(-1, keepdims=True)
    r12 = (w1 * y2.conj()).mean(-1, keepdims=True)
    diag = _LOAD * (r11 + r22) / 2 + np.float32(_TINY_MASK)
    r11, r22 = r11 + diag, r22 + diag
    a, d, b = (v * r11).sum(1), (v * r22).sum(1), (v * r12).sum(1)  # the mixture's (b, f, t)
    det = a * d - _power(b)
    x1, x2 = x[:, 0], x[:, 1]
    u1 = ((d * x1 - b * x2) / det)[:, None]  # (sum_j v_j R_j)^-1 x
    u2 = ((a * x2 - b.conj() * x1) / det)[:, None]
    return np.stack([v * (r11 * u1 + r12 * u2), v * (r12.conj() * u1 + r22 * u2)], axis=2)


def to_mono_batch(chunks: np.ndarray) -> np.ndarray:
    """``(batch, channels, samples)`` -> ``(batch, samples)``."""
    return np.stack([to_mono(c) for c in chunks])


def separator_input(chunks: np.ndarray, channels: int) -> np.ndarray:
    """The channels a separator of ``channels`` reads from ``chunks (batch, channels_in,
    samples)``: the mono mix for a mono separator; the chunks themselves where they have as many
    channels; else the mono mix on every channel."""
    if channels == 1:
        return to_mono_batch(chunks)
    if chunks.shape[1] == channels:
        return chunks
    mono = to_mono_batch(chunks)[:, None]
    return np.repeat(mono, channels, axis=1)


def patched(
    net: Callable[[np.ndarray, np.ndarray], np.ndarray], spec: np.ndarray, z: np.ndarray, patch: int
) -> np.ndarray:
    """``net(x, z)`` (a mask of ``x``'s shape) on ``spec (batch, ..., bins, frames)`` in patches of
    ``patch`` frames that overlap by half, in one batch, their masks cross-faded (triangular
    weights): a separator that normalises over its input sees inputs as long as those it was
    trained on (a cascade's query model inside the stage's longer chunks). One patch where
    ``frames <= patch``."""
    frames = spec.shape[-1]
    if frames <= patch:
        return net(spec, z)
    hop = patch // 2
    starts = [*range(0, frames - patch, hop), frames - patch]
    pieces = np.concatenate([spec[..., s : s + patch] for s in starts], axis=0)
    masks = np.split(net(pieces, np.tile(z, (len(starts), 1))), len(starts), axis=0)
    ramp = np.arange(1, patch + 1, dtype=np.float32)
    weight = np.minimum(ramp, ramp[::-1])
    out = np.zeros((*masks[0].shape[:-1], frames), dtype=np.float32)
    total = np.zeros(frames, dtype=np.float32)
    for start, m in zip(starts, masks, strict=True):
        out[..., start : start + patch] += m * weight
        total[start : start + patch] += weight
    return out / total


def _separate_chunks(
    network: Network,
    chunks: np.ndarray,
    sample_rate: int,
    z: np.ndarray,
    masks: str,
    rest: bool,
) -> np.ndarray:
    """``chunks (batch, channels, samples)`` at ``sample_rate``, latents ``z (batch, targets,
    latent_dim)`` -> estimates ``(batch, targets, channels, samples)``.

    The masks are predicted on the separator's front-end (``config.separator_audio``): from the
    mono mix for a mono separator, from the channels themselves for a stereo one (one STFT per
    chunk, every target of a chunk in one batch of the network). They are combined
    (:func:`combine_masks`), mapped onto the chunks' own STFT grid and applied to every channel
    (a stereo separator's own mask to each of the input's two channels; the mean of its masks
    to an input of another channel count).
    """
    batch, targets = z.shape[:2]
    n_fft, hop = native_grid(network, sample_rate)
    spec = stft_array(chunks, n_fft, hop)  # (batch, channels, bins, frames)
    flat_z = z.reshape(batch * targets, -1)

    def front_end(audio: AudioConfig, n_ch: int) -> np.ndarray:  # (batch, [ch,] bins, frames)
        wave = resample(separator_input(chunks, n_ch), sample_rate, audio.sample_rate)
        return np.abs(stft_array(wave, audio.n_fft, audio.hop_length))

    def on_native(m: np.ndarray, audio: AudioConfig) -> np.ndarray:  # (..., f, t) -> native
        return map_mask(
            m.reshape(-1, *m.shape[-2:]),
            src_sr=audio.sample_rate,
            src_n_fft=audio.n_fft,
            src_hop=audio.hop_length,
            dst_sr=sample_rate,
            dst_n_fft=n_fft,
            dst_hop=hop,
            dst_frames=spec.shape[-1],
        ).reshape(*m.shape[:-2], *spec.shape[-2:])

    a = network.config.separator_audio
    n_ch = network.config.separator_channels
    stage = network.config.vocal_stage
    spec_in = np.repeat(front_end(a, n_ch), targets, axis=0)
    if stage is None:
        m = network.mask(spec_in, flat_z)
    else:  # chunks as long as the stage's: the query model on patches of its own length
        m = patched(network.mask, spec_in, flat_z, network.config.audio.segment_frames)
    if n_ch > 1:
        m = m if chunks.shape[1] == n_ch else m.mean(axis=1)  # (batch * targets, [ch,] f, t)
    per_channel = m.ndim == 4
    m = m.reshape(batch, targets, -1, *m.shape[-2:])  # (batch, targets, ch, f, t)
    if stage is None:  # one network: its masks combined on its own grid, then mapped
        m = combine_masks(m.swapaxes(1, 2), masks, rest=rest).swapaxes(1, 2)
        native = on_native(m, a)
    else:  # g r + (1 - g) (1 - r) m on the native grid (r: one per chunk), then combined
        r = network.stage_share(front_end(stage.audio, stage.audio_channels))  # (b, ch, f, t)
        if stage.audio_channels > 1 and chunks.shape[1] != stage.audio_channels:
            r = r.mean(axis=1, keepdims=True)
        r = on_native(r, stage.audio)[:, None]  # (batch, 1, ch, bins, frames)
        g = network.side(flat_z).reshape(batch, targets, 1, 1, 1).astype(r.dtype)
        native = g * r + (1 - g) * (1 - r) * on_native(m, a)
        native = combine_masks(native.swapaxes(1, 2), masks, rest=rest).swapaxes(1, 2)
        per_channel = native.shape[2] > 1
    if not per_channel:
        native = native[:, :, 0]  # (batch, targets, bins, frames): one mask for every channel
    if masks == "wiener":
        estimates = wiener_filter(spec, native, rest=rest)
    else:
        estimates = spec[:, None] * (native if per_channel else native[:, :, None])
    return istft_array(estimates, n_fft, hop, length=chunks.shape[-1])


def separate_stream(
    model: Network | Any,
    reader: AudioReader,
    latents: Sequence[Latent | Any],
    *,
    masks: str = "independent",
    rest: bool = False,
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int | None = None,
    device: Any = "cpu",
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Separate ``reader``'s audio into one estimate per latent, in one pass over the input.

    Yields consecutive ``(targets, channels, n)`` blocks, ``targets = len(latents)``, in the order
    of ``latents``; they concatenate to exactly ``reader.frames`` samples at
    ``reader.sample_rate`` with ``reader.channels`` channels.

    Args:
        model: a :class:`Network`, or a PyTorch model in eval mode, run on ``device``
            (:func:`as_network`).
        latents: one entry per target, each ``(latent_dim,)`` for the whole input or
            ``(chunks, latent_dim)``: one per chunk of
            ``ChunkPlan.for_model(model, reader.frames, reader.sample_rate, segment, overlap)``.
        masks, rest: how the targets' masks are combined (:func:`combine_masks`).
        segment: chunk length in seconds (default: the model's training excerpt length).
        overlap: fraction of a chunk shared with the next one, in [0, 1).
        batch_size: spectrograms per forward pass of the network: each batch holds
            ``max(1, batch_size // targets)`` chunks, every target of a chunk in the same batch.
            None: :func:`auto_batch_size` of the chunk length.
        progress: called after each batch with ``{"stage": "separate", "done": chunks done,
            "total": chunks, "seconds": input seconds done}``.

    Raises:
        QueryError: no latent, or a latent with one row per chunk but not as many rows as there
            are chunks.
        SettingError: an unknown mask rule.
    """
    if not latents:
        raise QueryError("no latent given: give at least one target")
    if masks not in MASK_RULES:
        raise SettingError(f"unknown mask rule {masks!r}; choose one of {', '.join(MASK_RULES)}")
    network = as_network(model, device)
    plan = ChunkPlan.for_model(network, reader.frames, reader.sample_rate, segment, overlap)
    window = crossfade_window(plan.segment)
    starts = plan.starts
    rows = [as_latent(z) for z in latents]
    for latent in rows:
        if latent.ndim == 2 and latent.shape[0] != len(starts):
            raise QueryError(
                f"{latent.shape[0]} latents were given for {len(starts)} chunks: give one latent, "
                "or one per chunk"
            )
    # (chunks, targets, latent_dim): the latent of every target in every chunk
    table = np.stack(
        [
            z if z.ndim == 2 else np.broadcast_to(z.reshape(1, -1), (len(starts), z.size))
            for z in rows
        ],
        axis=1,
    )
    targets, channels = len(rows), reader.channels
    if batch_size is None:
        batch_size = auto_batch_size(plan.segment / reader.sample_rate)
    per_batch = max(1, batch_size // targets)
    acc = np.zeros((targets, channels, 0), dtype=np.float32)  # weighted sums from `emitted` on
    wsum = np.zeros(0, dtype=np.float32)
    emitted = 0
    for b in range(0, len(starts), per_batch):
        batch_starts = starts[b : b + per_batch]
        chunks = np.stack([reader.read(s, plan.segment) for s in batch_starts])
        z = table[b : b + len(batch_starts)]
        est = _separate_chunks(network, chunks, reader.sample_rate, z, masks, rest)
        if progress is not None:
            progress(
                {
                    "stage": "separate",
                    "done": b + len(batch_starts),
                    "total": len(starts),
                    "seconds": min(reader.frames, batch_starts[-1] + plan.segment)
                    / reader.sample_rate,
                }
            )
        end = batch_starts[-1] + plan.segment - emitted
        if end > acc.shape[-1]:
            grow = end - acc.shape[-1]
            acc = np.concatenate([acc, np.zeros((targets, channels, grow), np.float32)], axis=-1)
            wsum = np.concatenate([wsum, np.zeros(grow, np.float32)])
        for s, e in zip(batch_starts, est, strict=True):
            o = s - emitted
            acc[..., o : o + plan.segment] += e * window
            wsum[o : o + plan.segment] += window
        next_start = starts[b + per_batch] if b + per_batch < len(starts) else reader.frames
        ready = min(next_start, reader.frames) - emitted
        if ready > 0:
            yield acc[..., :ready] / wsum[:ready]
            acc, wsum = acc[..., ready:], wsum[ready:]
            emitted += ready


def separate_array(
    model: Network | Any, audio: np.ndarray, sample_rate: int, latent: Latent | Any, **kwargs: Any
) -> np.ndarray:
    """One target of an in-memory ``(channels, samples)`` array: :func:`separate_stream` with one
    latent, the estimate ``(channels, samples)``."""
    reader = AudioReader(audio, sample_rate)
    blocks = list(separate_stream(model, reader, [latent], **kwargs))
    return np.concatenate(blocks, axis=-1)[0]
