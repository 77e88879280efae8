"""The shipped model still gives its stored regression vector (scripts/regression_vector.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "regression_default.json"
REGENERATE = "python scripts/regression_vector.py --write"


def _script():
    spec = importlib.util.spec_from_file_location(
        "regression_vector", ROOT / "scripts" / "regression_vector.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rv = _script()


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(STORED.read_text())


def test_the_vector_belongs_to_the_shipped_model(stored):
    import hashlib

    weights = (rv.DEFAULT_MODEL / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == stored["model_sha256"], (
        f"the shipped model was replaced: if on purpose, run `{REGENERATE}` and commit the JSON"
    )


def test_the_shipped_model_gives_its_stored_vector(stored):
    now = rv.compute(rv.DEFAULT_MODEL, stored["classes"])
    diffs = rv.differences(stored, now)
    assert not diffs, (
        "the shipped model's results changed (if intended, regenerate with "
        f"`{REGENERATE}`):\n" + "\n".join(diffs)
    )


def test_the_comparison_catches_a_change(stored):
    changed = json.loads(json.dumps(stored))
    changed["outputs"]["query"]["rms"][0] *= 1.01
    changed["query_latent"][3] += 0.01
    diffs = rv.differences(stored, changed)
    assert [d.split("[")[0] for d in diffs] == ["query_latent", "query rms"]
    assert rv.differences(stored, stored) == []


def test_the_input_is_deterministic():
    import numpy as np

    np.testing.assert_array_equal(rv.song(), rv.song())
    assert rv.song().shape == (2, 4 * rv.SONG_RATE) and rv.query().shape == (33075,)
    assert 0.05 < float(np.sqrt(np.mean(rv.song() ** 2))) < 0.5
