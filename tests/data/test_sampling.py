"""The paper's sampling strategy (docs/paper.md section 6) and the deterministic excerpt datasets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqsep.data.sampling import (
    ExcerptDataset,
    SamplingConfig,
    StepBatchSampler,
    TrackPool,
    is_silent_target,
    lowpass,
    mix_stems,
    rms_db,
    sample_excerpt,
)
from aqsep.data.stems import StemLabel, Track
from aqsep.errors import DataError


class ArrayTrack(Track):
    """A track held in memory, for tests."""

    def __init__(self, name: str, stems: dict[str, np.ndarray], sample_rate: int = 8000) -> None:
        self.name = name
        self.stems = tuple(stems)
        self.labels = {k: StemLabel(k, k) for k in stems}
        self.audio = np.stack([np.asarray(v, dtype=np.float32) for v in stems.values()])
        self.sample_rate = sample_rate
        self.length = self.audio.shape[1]

    def read(self, start: int, length: int, stems: Sequence[str] | None = None) -> np.ndarray:
        rows = [self.stems.index(s) for s in (stems or self.stems)]
        out = np.zeros((len(rows), length), dtype=np.float32)
        part = self.audio[rows, start : start + length]
        out[:, : part.shape[1]] = part
        return out


def noise_track(name: str, n_stems: int = 4, seconds: float = 2.0, seed: int = 0) -> ArrayTrack:
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    return ArrayTrack(name, {f"s{k}": 0.1 * rng.standard_normal(n) for k in range(n_stems)})


def test_keep_rate_gains_and_split_statistics() -> None:
    rng = np.random.default_rng(0)
    stems = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    rest_kept, target_kept, rest_total, target_total = 0, 0, 0, 0
    subsets: Counter[tuple[bool, ...]] = Counter()
    gains = []
    draws = 4000
    for _ in range(draws):
        mix = mix_stems(stems, rng)
        rest_kept += int((mix.kept & ~mix.in_target).sum())
        rest_total += int((~mix.in_target).sum())
        target_kept += int((mix.kept & mix.in_target).sum())
        target_total += int(mix.in_target.sum())
        subsets[tuple(mix.in_target)] += 1
        gains.append(mix.gains)
    # Rest stems: plain Bernoulli(0.5). Target stems: Bernoulli(0.5) given at least one kept.
    assert abs(rest_kept / rest_total - 0.5) < 0.03
    assert 0.5 < target_kept / target_total < 0.75
    # Target/Rest: the 14 non-empty proper subsets of 4 stems, drawn uniformly.
    assert len(subsets) == 14 and all(abs(c / draws - 1 / 14) < 0.025 for c in subsets.values())
    g = np.concatenate(gains)
    assert g.min() >= 0.25 and g.max() <= 1.25
    assert abs(g.mean() - 0.75) < 0.02


@settings(max_examples=60, deadline=None)
@given(n_stems=st.integers(2, 8), seed=st.integers(0, 2**32 - 1), keep=st.floats(0.05, 1.0))
def test_mixture_is_target_plus_rest_exactly(n_stems: int, seed: int, keep: float) -> None:
    stems = np.random.default_rng(seed).standard_normal((n_stems, 257)).astype(np.float32)
    before = stems.copy()
    mix = mix_stems(stems, np.random.default_rng(seed), keep_prob=keep)
    assert np.array_equal(mix.mixture, mix.target + mix.rest)
    assert mix.mixture.dtype == np.float32 and mix.mixture.shape == (257,)
    assert 0 < mix.in_target.sum() < n_stems  # a non-empty proper subset
    assert (mix.kept & mix.in_target).any()  # at least one target stem kept
    w = mix.gains * mix.kept
    np.testing.assert_allclose(mix.target, (w * mix.in_target) @ stems, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix.rest, (w * ~mix.in_target) @ stems, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stems, before)  # the caller's array is untouched


def test_mix_needs_two_stems() -> None:
    with pytest.raises(ValueError, match="at least 2 stems"):
        mix_stems(np.zeros((1, 10), np.float32), np.random.default_rng(0))


def test_silent_targets_are_redrawn() -> None:
    # stem s0 is silent in its first half, s1 silent everywhere: many draws would be silent
    n = 16000
    loud = 0.1 * np.random.default_rng(0).standard_normal(n)
    half = loud.copy()
    half[: n // 2] = 0
    track = ArrayTrack("t", {"s0": half, "s1": np.zeros(n), "s2": loud})
    config = SamplingConfig()
    rng = np.random.default_rng(0)
    for _ in range(200):
        ex = sample_excerpt([track], 2000, rng, config)
        assert rms_db(ex.target) >= config.silence_db
        assert not is_silent_target(ex.target, ex.mixture, silence_db=-50, relative_db=-60)
        assert np.array_equal(ex.mixture, ex.target + ex.rest)


def test_require_rest_redraws_excerpts_whose_rest_is_silent() -> None:
    tracks = [noise_track("a", seed=1), noise_track("b", seed=2)]

    def silent_rest_share(config: SamplingConfig) -> float:
        rng = np.random.default_rng(0)
        draws = [sample_excerpt(tracks, 1000, rng, config) for _ in range(400)]
        assert all(np.array_equal(ex.mixture, ex.target + ex.rest) for ex in draws)
        silent = [
            is_silent_target(ex.rest, ex.mixture, silence_db=-50, relative_db=-60) for ex in draws
        ]
        return float(np.mean(silent))

    # four stems: a Target/Rest split with r rest stems drops them all with p = 0.5**r, which
    # is 2/7 over the 14 splits; the training strategy keeps those excerpts, validation does not
    assert abs(silent_rest_share(SamplingConfig()) - 2 / 7) < 0.06
    assert silent_rest_share(SamplingConfig(require_rest=True)) == 0.0
    # a track with a single sounding stem cannot give one
    solo = ArrayTrack("solo", {"a": 0.1 * np.ones(4000), "b": np.zeros(4000)})
    with pytest.raises(DataError, match="non-silent target and rest"):
        sample_excerpt(
            [solo], 1000, np.random.default_rng(0), SamplingConfig(max_tries=20, require_rest=True)
        )


def test_relative_silence() -> None:
    target = np.full(100, 1e-2, np.float32)  # -40 dBFS: loud enough on its own
    assert not is_silent_target(target, target, silence_db=-50, relative_db=-60)
    assert is_silent_target(
        target, target + 20.0, silence_db=-50, relative_db=-60
    )  # > 60 dB below the mix


def test_silent_data_raises() -> None:
    track = ArrayTrack("quiet", {"a": np.zeros(4000), "b": np.zeros(4000)})
    with pytest.raises(DataError, match="non-silent target"):
        sample_excerpt([track], 1000, np.random.default_rng(0), SamplingConfig(max_tries=20))


def test_excerpts_are_a_function_of_seed_and_index() -> None:
    tracks = [noise_track("a", seed=1), noise_track("b", seed=2)]
    make = lambda seed: ExcerptDataset(tracks, 1000, SamplingConfig(), seed=seed, size=100)  # noqa: E731
    one, two, other = make(7), make(7), make(8)
    for i in (0, 5, 99, 12345):
        a, b = one[i], two[i]
        assert int(a["index"]) == i
        assert np.array_equal(a["mixture"].numpy(), b["mixture"].numpy())
        assert np.array_equal(a["target"].numpy(), b["target"].numpy())
    reversed_order = [two[i]["mixture"].numpy() for i in reversed(range(6))][::-1]
    assert all(np.array_equal(one[i]["mixture"].numpy(), m) for i, m in enumerate(reversed_order))
    assert not np.array_equal(one[0]["mixture"].numpy(), one[1]["mixture"].numpy())
    assert not np.array_equal(one[0]["mixture"].numpy(), other[0]["mixture"].numpy())
    valid = ExcerptDataset(tracks, 1000, SamplingConfig(), seed=7, size=4, stream=1)
    assert not np.array_equal(valid[0]["mixture"].numpy(), one[0]["mixture"].numpy())


def test_cross_track_remix() -> None:
    n = 4000
    a = ArrayTrack("a", {"x": np.full(n, 0.1), "y": np.full(n, 0.2)})
    b = ArrayTrack("b", {"x": np.full(n, -0.3), "y": np.full(n, -0.4)})
    ex = sample_excerpt(
        [a, b], 500, np.random.default_rng(0), SamplingConfig(remix_prob=1.0, keep_prob=1.0)
    )
    # every stem came from the other track: the mixture is a gain-weighted sum of its stem values
    source = b if ex.track == "a" else a
    values = source.audio[:, 0]
    np.testing.assert_allclose(ex.mixture, np.full(500, ex.gains @ values, np.float32), rtol=1e-5)


def test_step_batch_sampler_gives_global_sample_indices() -> None:
    ranks = [list(StepBatchSampler(3, 4, start_step=1, rank=r, world_size=2)) for r in (0, 1)]
    assert ranks[0] == [[6, 7, 8], [12, 13, 14], [18, 19, 20]]
    assert ranks[1] == [[9, 10, 11], [15, 16, 17], [21, 22, 23]]
    step = {"now": 3}
    lazy = StepBatchSampler(2, 5, start_step=lambda: step["now"])
    assert list(lazy) == [[6, 7], [8, 9]]


def test_pool_draws_data_sets_by_weight() -> None:
    a = [noise_track(f"a{i}", seed=i) for i in range(5)]
    b = [noise_track(f"b{i}", seed=10 + i) for i in range(2)]
    pool = TrackPool([a, b], [1.0, 3.0])
    rng = np.random.default_rng(0)
    names = Counter(pool.draw(rng).name[0] for _ in range(4000))
    assert abs(names["b"] / 4000 - 0.75) < 0.03  # by weight, not by the number of tracks
    with pytest.raises(DataError):
        TrackPool([[], []])


def test_single_set_pool_draws_as_a_plain_list() -> None:
    tracks = [noise_track(f"t{i}", seed=i) for i in range(4)]
    config = SamplingConfig(remix_prob=0.5)
    plain = sample_excerpt(tracks, 1000, np.random.default_rng(3), config)
    pooled = sample_excerpt(TrackPool([tracks]), 1000, np.random.default_rng(3), config)
    assert plain.track == pooled.track and np.array_equal(plain.mixture, pooled.mixture)


def test_cross_source_remix_keeps_mixture_exact() -> None:
    """A voice of one data set over the band of another: target + rest = mixture, exactly."""
    n = 4000
    karaoke = [
        ArrayTrack(f"k{i}", {"vocals": np.full(n, 0.1 + i), "accompaniment": np.full(n, 0.2)})
        for i in range(3)
    ]
    band = [
        ArrayTrack(
            f"m{i}",
            {"vocals": np.full(n, -1.0), "drums": np.full(n, 0.3), "bass": np.full(n, 0.4)},
        )
        for i in range(3)
    ]
    pool = TrackPool([band, karaoke], [1.0, 1.0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        ex = sample_excerpt(pool, 500, rng, SamplingConfig(remix_prob=1.0))
        np.testing.assert_array_equal(ex.target + ex.rest, ex.mixture)
    # a band track's voice comes from either data set (by weight), never from the track itself;
    # drums have donors in the band set only
    donors = Counter(pool.donor("vocals", band[0], rng).name for _ in range(2000))
    assert "m0" not in donors and set(donors) == {"m1", "m2", "k0", "k1", "k2"}
    assert abs(sum(v for k, v in donors.items() if k[0] == "k") / 2000 - 0.5) < 0.05
    assert {pool.donor("drums", band[0], rng).name for _ in range(50)} == {"m1", "m2"}
    assert pool.donor("accompaniment", karaoke[0], rng).name in {"k1", "k2"}


@pytest.mark.parametrize("cutoff", [2000.0, 3000.0])
def test_lowpass_removes_the_band_above_its_cutoff(cutoff: float) -> None:
    sr, n = 8000, 8000
    t = np.arange(n) / sr
    low, high = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 3500 * t)
    out = lowpass(np.stack([low + high, high]).astype(np.float32), cutoff, sr, width=400)
    np.testing.assert_allclose(out[0], low, atol=1e-4)  # 500 Hz passes, 3500 Hz is gone
    assert rms_db(out[1]) < -80


def test_bandwidth_augmentation_filters_target_and_mixture_alike() -> None:
    sr = 8000
    tracks = [noise_track(f"t{i}", seed=i) for i in range(3)]
    config = SamplingConfig(lowpass_prob=1.0, lowpass_low=1000.0, lowpass_high=1500.0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        ex = sample_excerpt(tracks, 4000, rng, config)
        np.testing.assert_allclose(ex.target + ex.rest, ex.mixture, atol=1e-6)
        for signal in (ex.target, ex.rest, ex.mixture):
            spectrum = np.abs(np.fft.rfft(signal))
            freqs = np.fft.rfftfreq(signal.size, 1 / sr)
            assert spectrum[freqs > 1500].max() < 1e-3 * max(spectrum.max(), 1e-9)
    untouched = sample_excerpt(tracks, 4000, np.random.default_rng(1), SamplingConfig())
    spectrum = np.abs(np.fft.rfft(untouched.mixture))
    assert spectrum[np.fft.rfftfreq(4000, 1 / sr) > 2000].max() > 0.1 * spectrum.max()
