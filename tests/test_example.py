"""The bundled example and the shipped default model: present, small, loadable, and working.

The separation test runs the real shipped model on the real example and compares with the
true stem: it is skipped (with the reason) only when no default model is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import aqsep
from aqsep.evaluate import score

EXAMPLES = Path(aqsep.__file__).parent / "examples"
DEFAULT_MODEL = Path(aqsep.__file__).parent / "models" / "default"
MAX_BYTES = 2_000_000

needs_model = pytest.mark.skipif(
    not (DEFAULT_MODEL / "model.safetensors").is_file(),
    reason=f"the shipped default model is not installed in {DEFAULT_MODEL}",
)


def _meta() -> dict:
    return json.loads((EXAMPLES / "metadata.json").read_text())


def _read(name: str) -> tuple[np.ndarray, int]:
    x, sr = sf.read(EXAMPLES / name, dtype="float32", always_2d=True)
    return x.T, sr


def test_example_files_exist_and_are_small() -> None:
    meta = _meta()
    names = [
        "mixture.wav",
        *meta["mixture"]["references"].values(),
        *meta["queries"]["files"].values(),
    ]
    assert set(names) <= set(meta["files"])
    total = 0
    for name in meta["files"]:
        path = EXAMPLES / name
        assert path.is_file(), f"{path} is missing"
        info = sf.info(str(path))
        assert info.subtype == "PCM_16" and info.samplerate == meta["sample_rate"]
        assert info.channels == meta["channels"]
        assert 1.0 <= info.duration <= 12.0
        total += path.stat().st_size
    assert total < MAX_BYTES
    assert meta["mixture"]["split"] == meta["queries"]["split"] == "test"
    assert meta["queries"]["track"] != meta["mixture"]["track"]  # the query is not the answer
    assert meta["queries"]["piece"] != meta["mixture"]["piece"]
    assert any("make_example.py" in cmd for cmd in meta["rebuild"])


def test_references_sum_within_the_mixture() -> None:
    """The true stems are parts of the mixture; 'other' (the remainder) is not empty."""
    meta = _meta()
    mix, _ = _read("mixture.wav")
    parts = [_read(f)[0] for f in meta["mixture"]["references"].values()]
    other = mix - sum(parts)
    for part in parts:
        assert part.shape == mix.shape and np.sqrt(np.mean(part**2)) > 1e-3
    assert np.sqrt(np.mean(other**2)) > 1e-3
    r = meta["query_range"]
    assert 0 <= r["start"] < r["end"] <= mix.shape[1] / meta["sample_rate"]


@needs_model
def test_shipped_model_loads_without_arguments() -> None:
    sep = aqsep.Separator(device="cpu")  # the bundled model: no path, no network
    for cls in ("vocals", "drums", "bass", "other"):
        assert cls in sep.classes
        assert bool(torch.isfinite(sep.class_latent(cls)).all())


@needs_model
@pytest.mark.parametrize("target", ["drums", "vocals"])
def test_separating_the_example_by_class_beats_the_mixture(target: str) -> None:
    meta = _meta()
    mix, sr = _read("mixture.wav")
    true, _ = _read(meta["mixture"]["references"][target])
    sep = aqsep.Separator(device="cpu")
    est = sep.separate(mix, sr, sep.class_latent(target))["target"]
    assert est.shape == mix.shape and np.isfinite(est).all()
    est_sdr = float(np.nanmedian(score(true, mix - true, est, sr)["SDR"]))
    # the mixture as the estimate of every source, as `aqsep evaluate` scores its reference
    mix_sdr = float(np.nanmedian(score(true, mix - true, mix, sr, est_rest=mix)["SDR"]))
    assert est_sdr > mix_sdr + 1.0, (
        f"{target}: estimate {est_sdr:.2f} dB vs mixture {mix_sdr:.2f} dB"
    )
