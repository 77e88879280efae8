"""aqsep.query: latents from clips (silent windows skipped), ranges, and slerp."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_audio, make_tiny_model

from aqsep.audio import AudioReader
from aqsep.errors import QueryError
from aqsep.query import encode_reader, slerp

SR = 22050


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


def window(model) -> int:
    """Samples of one query window at SR (the model's excerpt length)."""
    return model.config.audio.segment_samples


def latent(model, audio: np.ndarray, **kwargs) -> np.ndarray:
    return encode_reader(model, AudioReader(audio, SR), **kwargs)


def test_silent_windows_do_not_count(model):
    loud = make_audio(window(model) / SR, SR, 1, seed=2)
    assert loud.shape[1] == window(model)
    with_silence = np.concatenate([loud, np.zeros_like(loud), 1e-5 * loud], axis=1)
    np.testing.assert_allclose(latent(model, with_silence), latent(model, loud), rtol=1e-5)


def test_a_range_is_encoded_like_that_part_alone(model):
    w = window(model)
    audio = np.concatenate([make_audio(w / SR, SR, 1, seed=s) for s in (1, 2, 3)], axis=1)
    part = latent(model, audio, start=w, stop=2 * w)
    np.testing.assert_allclose(part, latent(model, audio[:, w : 2 * w]), rtol=1e-5)
    assert not np.allclose(part, latent(model, audio[:, :w]))


def test_several_windows_are_averaged(model):
    w = window(model)
    a, b = make_audio(w / SR, SR, 1, seed=1), make_audio(w / SR, SR, 1, seed=5)
    both = latent(model, np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(both, (latent(model, a) + latent(model, b)) / 2, rtol=1e-5)


@pytest.mark.parametrize("level", [0.0, 1e-4])
def test_a_silent_query_is_refused(model, level):
    clip = level * make_audio(0.5, SR, 1)
    with pytest.raises(QueryError, match="silent"):
        latent(model, clip)


def test_an_empty_range_is_refused(model):
    with pytest.raises(QueryError, match="empty"):
        latent(model, make_audio(0.5, SR, 1), start=100, stop=100)


def test_slerp_ends_middle_and_parallel_latents():
    z0, z1 = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(slerp(z0, z1, 0.0), z0, atol=1e-7)
    np.testing.assert_allclose(slerp(z0, z1, 1.0), z1, atol=1e-7)
    # on the arc: 30 degrees from z0 at alpha 1/3, unit norm (the chord would be shorter)
    third = slerp(z0, z1, 1 / 3)
    assert float(np.rad2deg(np.arctan2(third[1], third[0]))) == pytest.approx(30.0, abs=1e-4)
    assert float(np.linalg.norm(third)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(slerp(2 * z0, 2 * z1, 0.5), 2 * slerp(z0, z1, 0.5), rtol=1e-6)
    np.testing.assert_allclose(slerp(z0, 3 * z0, 0.5), 2 * z0, rtol=1e-6)  # parallel: linear
