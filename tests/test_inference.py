"""The separation core: chunked overlap-add, output format, slerp, mask mapping, streaming memory,
several targets in one pass and how their masks combine."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from conftest import make_audio, make_tiny_model

import aqsep.inference
from aqsep.api import Separator
from aqsep.audio import AudioReader
from aqsep.errors import QueryError, SettingError
from aqsep.inference import (
    MAX_BATCH_SIZE,
    ChunkPlan,
    auto_batch_size,
    combine_masks,
    crossfade_window,
    interpolate_mask,
    map_mask,
    native_grid,
    separate_array,
    separate_stream,
    wiener_filter,
)
from aqsep.model import QuerySeparator
from aqsep.query import encode_blocks, encode_clip, slerp

SR = 22050
SEGMENT = make_tiny_model().config.audio.segment_samples  # 4032 samples at 22.05 kHz


@pytest.fixture(scope="module")
def model() -> QuerySeparator:
    return make_tiny_model()


@pytest.fixture
def identity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the network pass the mixture through: every mask value is 1."""
    monkeypatch.setattr(
        QuerySeparator, "mask", lambda self, magnitude, z: torch.ones_like(magnitude)
    )


def noise(channels: int, length: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((channels, length))).astype(
        np.float32
    )


# ---- overlap-add ------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("length", [1, 101, SEGMENT - 1, SEGMENT + 1, 3 * SEGMENT + 777])
def test_identity_mask_gives_the_input_back(model, identity_mask, channels, length):
    audio = noise(channels, length, seed=length)
    before = audio.copy()
    out = separate_array(
        model, audio, SR, torch.zeros(model.latent_dim), overlap=0.25, batch_size=2
    )
    assert out.shape == audio.shape and out.dtype == np.float32
    assert np.abs(out - audio).max() < 1e-4
    np.testing.assert_array_equal(audio, before)  # the caller's array is untouched


@pytest.mark.parametrize("sr", [8000, 44100, 48000, 192000])
def test_identity_mask_at_other_rates_keeps_the_full_band(model, identity_mask, sr):
    # at rates other than the model's the mask is mapped onto the input's own STFT grid; an
    # all-ones mask must still give everything back, including what lies above the model's band
    audio = noise(2, int(0.4 * sr) + 3, seed=sr)
    out = separate_array(model, audio, sr, torch.zeros(model.latent_dim), overlap=0.5, batch_size=3)
    assert np.abs(out - audio).max() < 1e-4


def test_identity_mask_without_overlap(model, identity_mask):
    audio = noise(2, 5 * SEGMENT + 3)
    out = separate_array(model, audio, SR, torch.zeros(model.latent_dim), overlap=0.0, batch_size=1)
    assert np.abs(out - audio).max() < 1e-4


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000])
def test_output_has_the_input_length_rate_and_channels(model, sr):
    audio = make_audio(0.3, sr, channels=2, seed=1)
    z = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(0))
    out = separate_array(model, audio, sr, z)
    assert out.shape == audio.shape
    assert np.isfinite(out).all()
    assert (
        0 < np.abs(out).max() <= np.abs(audio).max() * 1.5
    )  # a mask in [0, 1] never amplifies much


def test_chunk_plan_covers_the_input():
    for length in (1, 99, 1000, 1001, 12345):
        plan = ChunkPlan.make(length, 1000, 0.1, 0.3)
        assert plan.starts[0] == 0 and plan.starts[-1] + plan.segment >= length
        assert all(b - a == plan.step for a, b in zip(plan.starts, plan.starts[1:], strict=False))
    with pytest.raises(ValueError):
        ChunkPlan.make(10, 1000, 0.1, 1.0)


def test_crossfade_window_is_positive_with_peak_one():
    for n in (1, 2, 7, 64):
        w = crossfade_window(n)
        assert w.shape == (n,) and (w > 0).all() and w.max() == 1.0


# ---- slerp ------------------------------------------------------------------------------------
def test_slerp_end_points():
    g = np.random.default_rng(0)
    z0, z1 = g.standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(slerp(z0, z1, 0.0), z0, atol=1e-6)
    np.testing.assert_allclose(slerp(z0, z1, 1.0), z1, atol=1e-6)
    assert slerp(z0, z1, 0.5).dtype == np.float32


def test_slerp_stays_on_the_unit_sphere_and_moves_at_constant_angle():
    g = np.random.default_rng(1)
    z0, z1 = g.standard_normal((2, 16))
    z0, z1 = z0 / np.linalg.norm(z0), z1 / np.linalg.norm(z1)
    theta = np.arccos(np.dot(z0, z1))
    for alpha in (0.1, 0.3, 0.5, 0.7, 0.9):
        z = slerp(z0, z1, alpha)
        assert abs(float(np.linalg.norm(z)) - 1.0) < 1e-5
        angle = np.arccos(np.clip(np.dot(z, z0.astype(np.float32)), -1, 1))
        assert abs(float(angle) - alpha * float(theta)) < 1e-4


def test_slerp_of_parallel_vectors_falls_back_to_linear():
    z = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(slerp(z, 2 * z, 0.5), 1.5 * z, rtol=1e-6)


# ---- mask mapping -----------------------------------------------------------------------------
def test_map_mask_keeps_the_full_band():
    # model grid: 22.05 kHz, n_fft 256 (129 bins up to 11.025 kHz); input grid: 48 kHz, n_fft 558
    bins = np.linspace(0.1, 0.9, 129, dtype=np.float32)
    mask = np.ascontiguousarray(np.broadcast_to(bins[None, :, None], (1, 129, 10)))
    out = map_mask(
        mask,
        src_sr=22050,
        src_n_fft=256,
        src_hop=64,
        dst_sr=48000,
        dst_n_fft=558,
        dst_hop=139,
        dst_frames=11,
    )
    assert out.shape == (1, 280, 11)
    freqs = np.arange(280) * 48000 / 558
    above = freqs > 11025
    assert above.any()
    np.testing.assert_allclose(out[:, above], 0.9, rtol=1e-6)  # highest bin reused
    below = out[0, ~above, 0]
    assert (below[1:] >= below[:-1] - 1e-6).all() and abs(float(below[0]) - 0.1) < 1e-6


def test_map_mask_on_the_same_grid_is_the_identity():
    mask = np.random.default_rng(0).random((2, 129, 17), dtype=np.float32)
    out = map_mask(
        mask,
        src_sr=22050,
        src_n_fft=256,
        src_hop=64,
        dst_sr=22050,
        dst_n_fft=256,
        dst_hop=64,
        dst_frames=17,
    )
    np.testing.assert_array_equal(out, mask)


def _grids(sr: int) -> dict:
    """map_mask's keywords from the tiny model's grid to its native grid at ``sr``."""
    a = make_tiny_model().config.audio
    n_fft, hop = native_grid(make_tiny_model(), sr)
    return {
        "src_sr": a.sample_rate,
        "src_n_fft": a.n_fft,
        "src_hop": a.hop_length,
        "dst_sr": sr,
        "dst_n_fft": n_fft,
        "dst_hop": hop,
    }


@pytest.mark.parametrize("sr", [22050, 44100, 88200])
@pytest.mark.parametrize("frame_change", [-2, 0, 1, 3])
def test_map_mask_on_coinciding_grids_takes_the_mask_as_it_is(monkeypatch, sr, frame_change):
    # every input at the model's rate times 1, 2, 4: the same bin spacing in Hz and the same hop
    # in seconds; the exact path must agree with the interpolating one (whose positions carry
    # float rounding) and must not interpolate
    grids = _grids(sr)
    mask = np.random.default_rng(sr).random((3, 129, 20), dtype=np.float32)
    frames = 20 + frame_change
    expected = interpolate_mask(mask, **grids, dst_frames=frames)
    monkeypatch.setattr(
        "aqsep.inference.interpolate_mask", lambda *a, **k: pytest.fail("interpolated")
    )
    out = map_mask(mask, **grids, dst_frames=frames)
    assert out.shape == expected.shape == (3, grids["dst_n_fft"] // 2 + 1, frames)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(out[:, :129, : min(frames, 20)], mask[:, :, : min(frames, 20)])


@pytest.mark.parametrize("sr", [8000, 32000, 48000])
def test_map_mask_interpolates_when_the_grids_differ(monkeypatch, sr):
    grids = _grids(sr)
    mask = np.random.default_rng(1).random((2, 129, 16), dtype=np.float32)
    calls = []
    real = interpolate_mask

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("aqsep.inference.interpolate_mask", spy)
    map_mask(mask, **grids, dst_frames=16)
    assert calls == [1]


def test_separation_at_twice_the_model_rate_is_unchanged_by_the_exact_path(model, monkeypatch):
    # the whole separation of a 44.1 kHz input through the exact path and through interpolation
    audio = make_audio(1.0, 44100, channels=2, seed=7)
    z = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(2))
    fast = separate_array(model, audio, 44100, z, batch_size=2)
    monkeypatch.setattr("aqsep.inference.map_mask", interpolate_mask)
    slow = separate_array(model, audio, 44100, z, batch_size=2)
    assert np.abs(fast - slow).max() < 1e-4 * np.abs(audio).max()


# ---- several targets in one pass -------------------------------------------------------------
def test_ratio_masks_add_up_to_one_and_keep_their_proportions():
    m = np.random.default_rng(0).random((2, 4, 9, 7), dtype=np.float32)
    m[0, :, 0, 0] = 0.0  # no target claims this bin: equal shares
    r = combine_masks(m, "ratio")
    np.testing.assert_allclose(r.sum(axis=1), np.ones((2, 9, 7)), rtol=1e-6)
    np.testing.assert_allclose(r[0, :, 0, 0], np.full(4, 0.25), rtol=1e-6)
    ratio = r[1, 0] / r[1, 1]
    np.testing.assert_allclose(ratio, m[1, 0] / m[1, 1], rtol=1e-5)
    np.testing.assert_array_equal(combine_masks(m, "independent"), m)
    with pytest.raises(SettingError, match="unknown mask rule 'soft'"):
        combine_masks(m, "soft")


def test_ratio_masks_with_a_rest_only_scale_down_what_claims_more_than_the_whole():
    m = np.array([[0.2, 0.9], [0.3, 0.6]], dtype=np.float32)[:, :, None]  # (targets, bins, frames)
    r = combine_masks(m, "ratio", rest=True)
    np.testing.assert_allclose(r[:, 0], m[:, 0], rtol=1e-6)  # 0.5 in all: kept, the rest 0.5
    np.testing.assert_allclose(r[:, 1], m[:, 1] / 1.5, rtol=1e-6)  # 1.5 in all: scaled to 1
    assert float(r.sum(axis=0).max()) <= 1.0 + 1e-6


def _mixture_and_masks(channels: int, sources: int = 3, seed: int = 0):
    g = np.random.default_rng(seed)
    spec = g.standard_normal((2, channels, 33, 20, 2)).astype(np.float32)
    spec = ((spec[..., 0] + 1j * spec[..., 1]) / np.sqrt(2)).astype(np.complex64)
    return spec, combine_masks(g.random((2, sources, 33, 20), dtype=np.float32), "ratio")


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_wiener_estimates_sum_to_the_mixture(channels):
    spec, masks = _mixture_and_masks(channels)
    y = wiener_filter(spec, masks, iterations=2)
    assert y.shape == (2, 3, channels, 33, 20) and y.dtype == np.complex64
    np.testing.assert_allclose(y.sum(axis=1), spec, rtol=0, atol=1e-5)
    # with a rest, the targets are returned alone and leave it what they do not claim
    y = wiener_filter(spec, masks * 0.5, rest=True)
    assert y.shape == (2, 3, channels, 33, 20)
    assert float(np.abs(y.sum(axis=1) - spec).max()) > 0.1


def test_wiener_with_one_channel_is_ratio_masking_by_power():
    spec, masks = _mixture_and_masks(1)
    expected = masks**2 / (masks**2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        wiener_filter(spec, masks)[:, :, 0], expected * spec, rtol=0, atol=1e-5
    )


def test_wiener_stereo_algebra_equals_the_matrix_form():
    from aqsep.inference import _wiener_step_any, _wiener_step_stereo

    spec, masks = _mixture_and_masks(2, sources=4, seed=3)
    y = masks[:, :, None] * spec[:, None]
    np.testing.assert_allclose(
        _wiener_step_stereo(y, spec), _wiener_step_any(y, spec), rtol=1e-4, atol=1e-5
    )


def test_every_class_sums_to_the_input(tiny_model_dir):
    # the check of the feature: a generated song into every class of a tiny model; the stems
    # add up to the song (error below 1e-4 of full scale) with normalised masks
    sep = Separator(tiny_model_dir, device="cpu")
    assert sep.coarse_classes == ["bass", "drums", "other", "vocals"]
    for sr in (22050, 44100, 48000):
        song = make_audio(1.3, sr, channels=2, seed=sr)
        stems = sep.separate(song, sr, {c: sep.class_latent(c) for c in sep.coarse_classes})
        assert list(stems) == sep.coarse_classes
        total = sum(stems.values())
        assert np.abs(total - song).max() < 1e-4  # full scale is 1.0
        assert all(np.abs(s).max() > 1e-3 for s in stems.values())  # each stem holds something
        # the same pass with independent masks: the estimates do not add up to the song
        free = sep.separate(
            song, sr, {c: sep.class_latent(c) for c in sep.coarse_classes}, masks="independent"
        )
        assert np.abs(sum(free.values()) - song).max() > 1e-2
        wiener = sep.separate(
            song, sr, {c: sep.class_latent(c) for c in sep.coarse_classes}, masks="wiener"
        )
        assert np.abs(sum(wiener.values()) - song).max() < 1e-4


def test_one_pass_of_several_targets_equals_separate_passes(model, monkeypatch):
    audio = make_audio(1.2, 44100, channels=2, seed=8)
    g = torch.Generator().manual_seed(3)
    zs = [torch.randn(model.latent_dim, generator=g) for _ in range(3)]
    alone = [separate_array(model, audio, 44100, z, batch_size=3) for z in zs]
    calls = {"stft": 0, "mask": []}
    real_stft, real_mask = aqsep.inference.stft_array, QuerySeparator.mask

    def count_stft(*args, **kwargs):
        calls["stft"] += 1
        return real_stft(*args, **kwargs)

    def count_mask(self, magnitude, z):
        calls["mask"].append(magnitude.shape[0])
        return real_mask(self, magnitude, z)

    monkeypatch.setattr(aqsep.inference, "stft_array", count_stft)
    monkeypatch.setattr(QuerySeparator, "mask", count_mask)
    with AudioReader(audio, 44100) as reader:
        together = np.concatenate(list(separate_stream(model, reader, zs, batch_size=3)), axis=-1)
    plan = ChunkPlan.for_model(model, audio.shape[1], 44100)
    # one chunk per batch (3 targets in a batch of 3): two STFTs per chunk, one at the model's
    # rate and one at the input's, and one network call holding the chunk's three latents
    assert calls["stft"] == 2 * len(plan.starts)
    assert calls["mask"] == [3] * len(plan.starts)
    assert together.shape == (3, *audio.shape)
    for est, ref in zip(together, alone, strict=True):
        np.testing.assert_allclose(est, ref, atol=1e-5)


def test_several_targets_with_one_latent_per_chunk(model):
    audio = make_audio(1.0, SR, channels=1, seed=9)
    plan = ChunkPlan.for_model(model, audio.shape[1], SR, None, 0.25)
    g = torch.Generator().manual_seed(4)
    per_chunk = torch.randn(len(plan.starts), model.latent_dim, generator=g)
    whole = torch.randn(model.latent_dim, generator=g)
    with AudioReader(audio, SR) as reader:
        both = np.concatenate(list(separate_stream(model, reader, [per_chunk, whole])), axis=-1)
    np.testing.assert_allclose(both[0], separate_array(model, audio, SR, per_chunk), atol=1e-5)
    np.testing.assert_allclose(both[1], separate_array(model, audio, SR, whole), atol=1e-5)
    with AudioReader(audio, SR) as reader, pytest.raises(QueryError, match="latents were given"):
        list(separate_stream(model, reader, [whole, per_chunk[:2]]))
    with AudioReader(audio, SR) as reader, pytest.raises(QueryError, match="no latent"):
        list(separate_stream(model, reader, []))


# ---- streaming: memory does not grow with the input ------------------------------------------
class SyntheticReader:
    """Duck-types :class:`AudioReader`: generates any length on the fly and records what was read."""

    def __init__(self, seconds: float, sample_rate: int = 8000, channels: int = 2) -> None:
        self.sample_rate, self.channels, self.name = sample_rate, channels, "<synthetic>"
        self.frames = round(seconds * sample_rate)
        self.max_end = 0

    def read(self, start: int, length: int) -> np.ndarray:
        self.max_end = max(self.max_end, min(start + length, self.frames))
        t = np.arange(start, start + length) / self.sample_rate
        block = np.stack(
            [0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(self.channels)]
        )
        block[:, max(0, self.frames - start) :] = 0
        return block.astype(np.float32)


def _stream(model, reader, batch_size: int, segment: float) -> tuple[int, int, int]:
    """Run separate_stream; returns (blocks, samples, the most samples read but not yet yielded)."""
    seg = round(segment * reader.sample_rate)
    emitted = blocks = held_max = 0
    for block in separate_stream(
        model,
        reader,
        [torch.zeros(model.latent_dim)],
        segment=segment,
        overlap=0.25,
        batch_size=batch_size,
    ):
        held = reader.max_end - emitted  # read from the input, not yet handed to the caller
        held_max = max(held_max, held)
        assert held <= (batch_size + 1) * seg
        assert block.shape[:2] == (1, reader.channels)
        emitted += block.shape[-1]
        blocks += 1
    return blocks, emitted, held_max


def test_separate_stream_yields_incrementally_with_bounded_buffers(model, identity_mask):
    batch_size, segment = 3, 1.0
    reader = SyntheticReader(seconds=60)
    plan = ChunkPlan.make(reader.frames, reader.sample_rate, segment, 0.25)
    blocks, samples, held = _stream(model, reader, batch_size, segment)
    assert samples == reader.frames
    assert blocks == -(
        -len(plan.starts) // batch_size
    )  # one block per batch, as soon as it is done
    assert held <= (batch_size + 1) * plan.segment


@pytest.mark.parametrize(("segment", "per_batch"), [(1.0, 12), (3.0, 4), (6.0, 2), (11.9, 1)])
def test_no_batch_size_batches_about_12_seconds_of_chunks(model, identity_mask, segment, per_batch):
    """batch_size None: as many chunks per forward pass as make about 12 s of audio (one block
    yielded per batch), never fewer than one."""
    assert auto_batch_size(segment) == per_batch
    reader = SyntheticReader(seconds=60)
    plan = ChunkPlan.make(reader.frames, reader.sample_rate, segment, 0.25)
    blocks = list(separate_stream(model, reader, [torch.zeros(model.latent_dim)], segment=segment))
    assert len(blocks) == -(-len(plan.starts) // per_batch)
    assert sum(b.shape[-1] for b in blocks) == reader.frames


def test_auto_batch_size_stays_in_range() -> None:
    assert auto_batch_size(0.1) == MAX_BATCH_SIZE  # the shortest segment: capped
    assert auto_batch_size(30.0) == 1  # the longest: one chunk


def test_separate_stream_peak_memory_does_not_grow_with_length(model, identity_mask):
    peaks = []
    for seconds in (20, 200):
        tracemalloc.start()
        _stream(model, SyntheticReader(seconds=seconds), batch_size=2, segment=4.0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_file_reader_streams_blocks(tmp_path, model, identity_mask):
    import soundfile as sf

    audio = noise(2, 5 * SEGMENT + 11)
    sf.write(tmp_path / "a.wav", audio.T, SR, subtype="FLOAT")
    with AudioReader(tmp_path / "a.wav") as reader:
        out = np.concatenate(
            list(separate_stream(model, reader, [torch.zeros(8)], batch_size=1)), axis=-1
        )[0]
    assert np.abs(out - audio).max() < 1e-4


# ---- compositions of the core: one latent per chunk, separate then encode --------------------
def test_one_latent_per_chunk(model):
    audio = make_audio(1.0, SR, channels=2, seed=3)
    plan = ChunkPlan.for_model(model, audio.shape[1], SR, None, 0.25)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(len(plan.starts), model.latent_dim, generator=g)
    out = separate_array(model, audio, SR, z, overlap=0.25, batch_size=3)
    assert out.shape == audio.shape
    # the same latent in every row is the single-latent separation
    same = separate_array(model, audio, SR, z[:1].expand(len(plan.starts), -1), batch_size=3)
    torch.testing.assert_close(
        torch.from_numpy(same), torch.from_numpy(separate_array(model, audio, SR, z[0]))
    )
    assert np.abs(out - same).max() > 1e-4  # and other rows change the chunks they belong to
    with pytest.raises(QueryError, match=f"2 latents were given for {len(plan.starts)} chunks"):
        separate_array(model, audio, SR, z[:2])


def test_refine_is_separate_then_encode_the_estimate(tiny_model_dir):
    sep = Separator(tiny_model_dir, device="cpu")
    song = make_audio(1.5, 44100, channels=2, seed=4)
    z = sep.class_latent("drums")
    estimate = sep.separate(song, 44100, z)["target"]
    expected = encode_clip(sep.model, estimate, 44100)
    torch.testing.assert_close(sep.refine((song, 44100), z, steps=1), expected)
    # encoding the estimate block by block as it streams gives the latent of the whole estimate
    with AudioReader(song, 44100) as reader:
        blocks = (b[0] for b in separate_stream(sep.model, reader, [z], batch_size=1))
        torch.testing.assert_close(encode_blocks(sep.model, blocks, 44100), expected)


def test_progress_is_passed_per_call_with_its_pass(tiny_model_dir):
    sep = Separator(tiny_model_dir, device="cpu")
    song = make_audio(1.0, SR, channels=1, seed=5)
    z = sep.class_latent("bass")
    refine_events: list[dict] = []
    sep.refine((song, SR), z, steps=2, progress=refine_events.append)
    separate_events: list[dict] = []
    sep.separate(song, SR, z, progress=separate_events.append)
    assert not hasattr(sep, "progress")  # a separator holds no callback to overwrite
    total = separate_events[-1]["total"]
    assert [(e["pass"], e["passes"]) for e in refine_events if e["done"] == total] == [
        (1, 2),
        (2, 2),
    ]
    assert {(e["pass"], e["passes"]) for e in separate_events} == {(1, 1)}
    assert [e["done"] for e in separate_events] == sorted(e["done"] for e in separate_events)
