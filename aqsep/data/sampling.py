"""The paper's sampling strategy, and the deterministic excerpt datasets built on it.

For each training example (docs/paper.md section 6): split the stems of an excerpt into Target
and Rest, keep each stem with Bernoulli(``keep_prob``) and scale it by
Uniform(``gain_low``, ``gain_high``); the target is the sum of the kept target stems and the
mixture is target + rest. The query is the target itself. Guards [default]: the Target/Rest split
is a random non-empty proper subset, the keep draws are redone while no target stem is kept, and
an excerpt whose target is silent (RMS below ``silence_db``, or more than ``relative_db`` below the
mixture) is replaced by a new excerpt. With ``require_rest`` (the validation set), an excerpt whose
rest is silent by the same test is replaced too: with four stems about 30 % of draws drop every
rest stem, and such a mixture *is* its target, which says nothing about separation and gives the
mixture an SDR of +inf.

Several data sets mix in one :class:`TrackPool`: a set is drawn by its weight, then a track. With
probability ``remix_prob`` each stem comes from another random track (and offset) of any set that
has a stem of the same name: **cross-source remixing**, so that a real voice of a karaoke data set
is heard over the drums, bass and band of a multitrack corpus, and the other way round. With
probability ``lowpass_prob`` every stem of the excerpt is low-passed at one random cutoff
(**bandwidth augmentation**): a data set recorded at a low rate (MIR-1K stops at 8 kHz) then does
not teach the model that band-limited sound is its class. Both happen before the stems are mixed,
so the mixture is target + rest exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from aqsep.audio import rms_db
from aqsep.config import SamplingConfig
from aqsep.data.stems import Track
from aqsep.errors import DataError

#: The paper's sampling strategy with the project's guards (:class:`aqsep.config.SamplingConfig`).
PAPER_SAMPLING = SamplingConfig()

TRAIN_STREAM = 0
VALID_STREAM = 1


@dataclass
class Mix:
    """One draw of the sampling strategy over the stems of an excerpt."""

    target: np.ndarray  # (samples,) float32
    rest: np.ndarray  # (samples,) float32
    mixture: np.ndarray  # target + rest, exactly
    in_target: np.ndarray  # (stems,) bool: the Target/Rest split
    kept: np.ndarray  # (stems,) bool: alpha
    gains: np.ndarray  # (stems,) float32: beta


@dataclass
class Excerpt(Mix):
    track: str = ""
    start: int = 0
    stems: tuple[str, ...] = ()


def mix_stems(
    stems: np.ndarray,
    rng: np.random.Generator,
    *,
    keep_prob: float = 0.5,
    gain_low: float = 0.25,
    gain_high: float = 1.25,
) -> Mix:
    """The paper's sampling strategy on one excerpt's stems ``(n_stems, samples)``, ``n_stems >= 2``.

    The caller's array is not modified.
    """
    n = stems.shape[0]
    if n < 2:
        raise ValueError(f"the sampling strategy needs at least 2 stems, got {n}")
    while True:  # a random non-empty proper subset: P(redraw) = 2 / 2**n
        in_target = np.asarray(rng.random(n) < 0.5)
        if 0 < in_target.sum() < n:
            break
    while True:  # redraw the alphas while no target stem is kept
        kept = np.asarray(rng.random(n) < keep_prob)
        if (kept & in_target).any():
            break
    gains = np.asarray(rng.uniform(gain_low, gain_high, n), dtype=np.float32)
    weights = (gains * kept).astype(np.float32)
    target = (weights * in_target) @ stems
    rest = (weights * ~in_target) @ stems
    return Mix(
        target=target.astype(np.float32),
        rest=rest.astype(np.float32),
        mixture=(target + rest).astype(np.float32),
        in_target=in_target,
        kept=kept,
        gains=gains,
    )


def is_silent_target(
    target: np.ndarray, mixture: np.ndarray, *, silence_db: float, relative_db: float
) -> bool:
    level = rms_db(target)
    return level < silence_db or level - rms_db(mixture) < relative_db


class TrackPool:
    """Tracks from one or more data sets, each set drawn with probability proportional to its
    weight, then a track uniformly within it.

    A single set draws exactly as a plain list of tracks (one integer draw per track).
    """

    def __init__(
        self, groups: Sequence[Sequence[Track]], weights: Sequence[float] | None = None
    ) -> None:
        weights = [1.0] * len(groups) if weights is None else list(weights)
        if len(weights) != len(groups):
            raise ValueError(f"{len(groups)} track groups but {len(weights)} weights")
        kept = [(list(g), float(w)) for g, w in zip(groups, weights, strict=True) if len(g) > 0]
        if not kept:
            raise DataError("no tracks to draw excerpts from")
        if any(not w > 0 for _, w in kept):
            raise ValueError(f"weights must be > 0, got {weights}")
        self.groups = [g for g, _ in kept]
        total = sum(w for _, w in kept)
        self.probs = np.array([w / total for _, w in kept])

    @classmethod
    def of(cls, tracks: Sequence[Track] | TrackPool) -> TrackPool:
        return tracks if isinstance(tracks, TrackPool) else cls([tracks])

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def _group(self, rng: np.random.Generator, probs: np.ndarray) -> int:
        return 0 if len(probs) == 1 else int(rng.choice(len(probs), p=probs / probs.sum()))

    def draw(self, rng: np.random.Generator) -> Track:
        group = self.groups[self._group(rng, self.probs)]
        return group[int(rng.integers(len(group)))]

    def donor(self, stem: str, track: Track, rng: np.random.Generator) -> Track | None:
        """A random other track that has a stem named ``stem`` (sets drawn by weight)."""
        donors = [[t for t in g if t is not track and stem in t.stems] for g in self.groups]
        probs = np.array([p if d else 0.0 for p, d in zip(self.probs, donors, strict=True)])
        if not probs.any():
            return None
        group = donors[self._group(rng, probs)]
        return group[int(rng.integers(len(group)))]


def lowpass(audio: np.ndarray, cutoff: float, sample_rate: int, width: float = 500.0) -> np.ndarray:
    """Zero-phase low-pass along the last axis: a raised-cosine roll-off from ``cutoff - width``
    to ``cutoff`` Hz, applied in the frequency domain. Linear: filtering stems, then summing them,
    equals filtering the sum."""
    n = audio.shape[-1]
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    ramp = np.clip((cutoff - freqs) / width, 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.fft.irfft(np.fft.rfft(audio, axis=-1) * gain, n=n, axis=-1).astype(np.float32)


def _read_stems(
    pool: TrackPool, length: int, rng: np.random.Generator, remix_prob: float
) -> tuple[Track, np.ndarray, int]:
    track = pool.draw(rng)
    start = int(rng.integers(0, max(track.length - length, 0) + 1))
    stems = track.read(start, length)
    if remix_prob > 0 and len(pool) > 1:
        for k, name in enumerate(track.stems):
            if rng.random() >= remix_prob:
                continue
            other = pool.donor(name, track, rng)
            if other is None:
                continue
            offset = int(rng.integers(0, max(other.length - length, 0) + 1))
            stems[k] = other.read(offset, length, [name])[0]
    return track, stems, start


def sample_excerpt(
    tracks: Sequence[Track] | TrackPool,
    length: int,
    rng: np.random.Generator,
    config: SamplingConfig = PAPER_SAMPLING,
) -> Excerpt:
    """Draw one training example: a random track and offset (stems from other tracks with
    ``config.remix_prob``), the bandwidth augmentation, then :func:`mix_stems`.

    Silent targets are rejected by drawing a new excerpt (up to ``config.max_tries``).

    Raises:
        DataError: no track, or no non-silent target found in ``config.max_tries`` draws.
    """
    if not len(tracks):
        raise DataError("no tracks to draw excerpts from")
    pool = TrackPool.of(tracks)
    for _ in range(config.max_tries):
        track, stems, start = _read_stems(pool, length, rng, config.remix_prob)
        if config.lowpass_prob > 0 and rng.random() < config.lowpass_prob:
            cutoff = rng.uniform(config.lowpass_low, config.lowpass_high)
            stems = lowpass(stems, cutoff, track.sample_rate)
        mix = mix_stems(
            stems,
            rng,
            keep_prob=config.keep_prob,
            gain_low=config.gain_low,
            gain_high=config.gain_high,
        )
        levels = {"silence_db": config.silence_db, "relative_db": config.relative_db}
        if not is_silent_target(mix.target, mix.mixture, **levels) and not (
            config.require_rest and is_silent_target(mix.rest, mix.mixture, **levels)
        ):
            return Excerpt(**vars(mix), track=track.name, start=start, stems=track.stems)
    wanted = "target and rest" if config.require_rest else "target"
    raise DataError(
        f"no excerpt with a non-silent {wanted} (RMS above {config.silence_db:g} dBFS) in "
        f"{config.max_tries} draws: the data is silent or nearly so; check its levels"
    )


class ExcerptDataset(Dataset[dict[str, torch.Tensor]]):
    """Excerpt ``i`` is a deterministic function of ``(seed, stream, i)``.

    Items are ``{"mixture": (samples,), "target": (samples,), "index": ()}`` tensors.
    ``cache=True`` keeps the items in memory (for the fixed validation set).
    """

    def __init__(
        self,
        tracks: Sequence[Track] | TrackPool,
        length: int,
        config: SamplingConfig,
        *,
        seed: int,
        size: int,
        stream: int = TRAIN_STREAM,
        cache: bool = False,
    ) -> None:
        if not len(tracks):
            raise DataError("no tracks to draw excerpts from")
        self.tracks = TrackPool.of(list(tracks) if not isinstance(tracks, TrackPool) else tracks)
        self.length = length
        self.config = config
        self.seed = seed
        self.size = size
        self.stream = stream
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def excerpt(self, index: int) -> Excerpt:
        rng = np.random.default_rng([self.seed, self.stream, index])
        return sample_excerpt(self.tracks, self.length, rng, self.config)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        ex = self.excerpt(int(index))
        item = {
            "mixture": torch.from_numpy(ex.mixture),
            "target": torch.from_numpy(ex.target),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self._cache is not None:
            self._cache[index] = item
        return item


class StepBatchSampler(Sampler[list[int]]):
    """Batches of global sample indices: at step ``s``, process ``rank`` of ``world`` gets
    ``[(s * world + rank) * batch_size + j for j in range(batch_size)]``.

    Iteration starts at ``start_step()`` (read when iteration begins: the trainer's restored step
    on resume) and ends at ``max_steps``.
    """

    def __init__(
        self,
        batch_size: int,
        max_steps: int,
        *,
        start_step: Callable[[], int] | int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size

    def first_index(self, step: int) -> int:
        return (step * self.world_size + self.rank) * self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        start = self.start_step() if callable(self.start_step) else self.start_step
        for step in range(start, self.max_steps):
            base = self.first_index(step)
            yield list(range(base, base + self.batch_size))

    def __len__(self) -> int:
        return self.max_steps
