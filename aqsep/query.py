"""The one path from audio to a latent: windows, the silence rule, means; blends.

Every latent that aqsep computes from audio (a query clip, a range of a file, the estimate that
the iterative method re-encodes, a ground-truth chunk in evaluation, the class means stored with
a released model) goes through :class:`LatentMeans`:

1. **Windows.** The audio is cut into consecutive windows of the model's excerpt length
   (``segment_samples`` at the model's rate; a last, shorter window is zero-padded), mixed to
   mono and resampled to the model's rate.
2. **The silence rule.** A window whose RMS level is below :data:`SILENCE_DB` (dBFS) is not
   query material and is left out (:func:`aqsep.audio.rms_db`); the same threshold rejects silent training
   targets (:class:`~aqsep.config.TrainConfig`).
3. **Means.** mu of the Query-net (:func:`encode_windows`) is averaged over the windows kept, per
   key (one key for a query; one per class for class means). Audio without a single window
   above the threshold is a :class:`~aqsep.errors.QueryError`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from aqsep.audio import AudioReader, resample, rms_db, to_mono
from aqsep.config import SILENCE_DB
from aqsep.errors import QueryError
from aqsep.inference import Network, as_network
from aqsep.transforms import stft_array

if TYPE_CHECKING:
    import torch

    from aqsep.model import Posterior, QuerySeparator

__all__ = [
    "SILENCE_DB",
    "LatentMeans",
    "encode_blocks",
    "encode_clip",
    "encode_frozen",
    "encode_reader",
    "encode_windows",
    "slerp",
    "window_length",
]


def window_length(model: Network, sample_rate: int) -> int:
    """The model's excerpt length in samples at ``sample_rate`` (one query window)."""
    a = model.config.audio
    return max(1, round(a.segment_samples * sample_rate / a.sample_rate))


def encode_windows(model: Network | Any, windows: np.ndarray, device: Any = "cpu") -> np.ndarray:
    """mu of the Query-net for mono windows ``(batch, samples)`` at the model's rate, with no
    silence rule: ``(batch, latent_dim)`` (a PyTorch model runs on ``device``)."""
    network = as_network(model, device)
    a = network.config.audio
    return network.latent(np.abs(stft_array(windows, a.n_fft, a.hop_length)))


def encode_frozen(model: QuerySeparator, magnitude: torch.Tensor) -> Posterior:
    """``model.encode`` with the Query-net's parameters detached: gradients reach ``magnitude``
    (and whatever produced it) but not the Query-net (training's latent regressor term)."""
    import torch

    query_net = model.query_net
    params = {name: p.detach() for name, p in query_net.named_parameters()}
    params.update(dict(query_net.named_buffers()))
    return torch.func.functional_call(query_net, params, (model.query_input(magnitude),))


K = TypeVar("K", bound=Hashable)


@dataclass
class _Sum:
    total: np.ndarray | None = None
    count: int = 0
    loudest_db: float = -np.inf


@dataclass
class LatentMeans(Generic[K]):
    """Running means of mu, per key, over the non-silent windows added (the module's path).

    Windows are queued and encoded ``batch_size`` at a time, by ``model`` (a :class:`Network`, or
    a PyTorch model run on ``device``).
    """

    model: Network | Any
    device: Any = "cpu"
    batch_size: int = 32
    silence_db: float = SILENCE_DB
    _sums: dict[K, _Sum] = field(default_factory=lambda: defaultdict(_Sum))
    _pending: list[tuple[K, np.ndarray]] = field(default_factory=list)

    def add(self, key: K, window: np.ndarray) -> bool:
        """Queue one mono window ``(samples,)`` at the model's rate; False if it is silent."""
        entry = self._sums[key]
        level = rms_db(window)
        entry.loudest_db = max(entry.loudest_db, level)
        if level < self.silence_db:
            return False
        entry.count += 1
        self._pending.append((key, np.asarray(window, dtype=np.float32)))
        if len(self._pending) >= self.batch_size:
            self.flush()
        return True

    def count(self, key: K) -> int:
        """Windows of ``key`` kept so far (queued ones included)."""
        return self._sums[key].count if key in self._sums else 0

    def flush(self) -> None:
        """Encode the queued windows."""
        if not self._pending:
            return
        windows = np.stack([w for _, w in self._pending])
        mu = encode_windows(self.model, windows, self.device).astype(np.float32)
        for (key, _), m in zip(self._pending, mu, strict=True):
            entry = self._sums[key]
            entry.total = m.copy() if entry.total is None else entry.total + m
        self._pending.clear()

    def mean(self, key: K, what: str = "the query") -> np.ndarray:
        """The mean latent ``(latent_dim,)`` of ``key``.

        Raises:
            QueryError: no window of ``key`` was above the silence threshold.
        """
        self.flush()
        entry = self._sums.get(key, _Sum())
        if entry.total is None or entry.count == 0:
            level = (
                "no audio"
                if entry.loudest_db == -np.inf
                else f"loudest window {entry.loudest_db:.1f} dBFS"
            )
            raise QueryError(
                f"{what} is silent ({level}, threshold {self.silence_db:.0f} dBFS): it holds "
                "nothing to look for; use a clip where the instrument plays, or --target CLASS"
            )
        return entry.total / entry.count

    def means(self) -> dict[K, tuple[np.ndarray, int]]:
        """``{key: (mean latent, windows)}`` of every key with at least one window kept."""
        self.flush()
        return {
            k: (e.total / e.count, e.count)
            for k, e in self._sums.items()
            if e.total is not None and e.count
        }


def encode_blocks(
    model: Network | Any,
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    *,
    batch_size: int = 8,
    device: Any = "cpu",
    what: str = "the query",
) -> np.ndarray:
    """Mean latent of audio given as consecutive blocks ``(channels, n)`` at ``sample_rate``
    (a file read block by block, or an estimate as :func:`aqsep.inference.separate_stream` yields
    it): cut into windows, silent windows left out (see the module docstring).

    Raises:
        QueryError: the audio is empty or silent.
    """
    model = as_network(model, device)
    win = window_length(model, sample_rate)
    means: LatentMeans[None] = LatentMeans(model, batch_size=batch_size)
    rate = model.config.audio.sample_rate
    pending: list[np.ndarray] = []

    def encode(windows: list[np.ndarray]) -> None:
        for w in resample(np.stack(windows), sample_rate, rate):
            means.add(None, w)

    held = np.zeros(0, dtype=np.float32)
    for block in blocks:
        held = np.concatenate([held, to_mono(block)])
        while held.shape[0] >= win:
            pending.append(held[:win])
            held = held[win:]
            if len(pending) == batch_size:
                encode(pending)
                pending = []
    if held.shape[0]:
        pending.append(np.pad(held, (0, win - held.shape[0])))
    if pending:
        encode(pending)
    return means.mean(None, what)


def encode_reader(
    model: Network | Any,
    reader: AudioReader,
    *,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 8,
    device: Any = "cpu",
    what: str | None = None,
) -> np.ndarray:
    """Mean latent of a query file or array (:func:`encode_blocks`); ``start``/``stop`` (input
    samples) restrict the query to a range."""
    stop = reader.frames if stop is None else min(stop, reader.frames)
    if stop <= start:
        raise QueryError(f"query range of {reader.name} is empty")
    win = window_length(model, reader.sample_rate)
    blocks = (reader.read(s, min(win, stop - s)) for s in range(start, stop, win))
    return encode_blocks(
        model,
        blocks,
        reader.sample_rate,
        batch_size=batch_size,
        device=device,
        what=what or f"query {reader.name}",
    )


def encode_clip(
    model: Network | Any,
    audio: np.ndarray,
    sample_rate: int,
    *,
    device: Any = "cpu",
    what: str = "the query",
) -> np.ndarray:
    """Mean latent of an in-memory clip ``(channels, samples)`` (:func:`encode_blocks`)."""
    return encode_blocks(model, [audio], sample_rate, device=device, what=what)


def slerp(z0: np.ndarray, z1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical interpolation (docs/paper.md section 7.3); alpha 0 gives z0 and 1 gives z1.

    z(alpha) = sin((1 - alpha) theta) / sin(theta) z0 + sin(alpha theta) / sin(theta) z1, with
    theta the angle between z0 and z1; falls back to linear interpolation when they are parallel.
    """
    z0, z1 = np.asarray(z0, dtype=np.float32), np.asarray(z1, dtype=np.float32)
    cos = float(np.dot(z0, z1)) / max(float(np.linalg.norm(z0) * np.linalg.norm(z1)), 1e-12)
    theta = math.acos(min(1.0, max(-1.0, cos)))
    if math.sin(theta) < 1e-6:
        return ((1 - alpha) * z0 + alpha * z1).astype(np.float32)
    w0, w1 = math.sin((1 - alpha) * theta), math.sin(alpha * theta)
    return ((w0 * z0 + w1 * z1) / math.sin(theta)).astype(np.float32)
