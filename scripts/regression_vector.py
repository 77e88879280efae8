"""The regression vector of the shipped model: what it makes of a fixed, generated input.

A deterministic 4 s stereo "song" (tones, a bass line and clicks, no random generator) is
separated by two stored class latents and by the latent of a generated query clip; the query
latent and statistics of every estimate (level per channel, peak, level over time, projection
on the input) are stored in tests/regression_default.json. tests/test_regression.py recomputes
them and compares within a tolerance, so that a change that alters results is caught.

    python scripts/regression_vector.py            # compare the model with the stored vector
    python scripts/regression_vector.py --write    # store the vector of the model now shipped
    python scripts/regression_vector.py --model DIR --out FILE.json --write

Regenerate (--write) when the shipped model is replaced on purpose, and commit the JSON with it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "aqsep" / "models" / "default"
DEFAULT_OUT = ROOT / "tests" / "regression_default.json"
SONG_RATE, QUERY_RATE = 44100, 22050
BLOCKS = 8  # level over time: RMS of this many equal blocks
RTOL, ATOL = 1e-3, 1e-5  # float32 on other CPUs and thread counts stays well inside this


def _hash_noise(n: int, salt: float) -> np.ndarray:
    """Noise in [-1, 1) from a fixed formula (no random generator, whose streams may change)."""
    k = np.arange(n, dtype=np.float64)
    return 2.0 * np.modf(np.abs(np.sin(k * 12.9898 + salt) * 43758.5453))[0] - 1.0


def song(seconds: float = 4.0, sr: int = SONG_RATE) -> np.ndarray:
    """``(2, samples)`` float32: a chord and a melody on the left, a bass line on the right,
    decaying noise clicks (a hi-hat pattern) on both."""
    n = round(seconds * sr)
    t = np.arange(n) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 3
    melody = np.sin(2 * np.pi * (440.0 + 110.0 * np.floor(t * 2) % 330.0) * t)
    bass = np.sign(np.sin(2 * np.pi * 55.0 * t)) * np.where(np.floor(t * 4) % 2 == 0, 1.0, 0.6)
    phase = (t * 8) % 1.0  # eighth notes at 120 bpm
    clicks = _hash_noise(n, 0.5) * np.exp(-phase * 40.0)
    left = 0.25 * chord + 0.15 * melody + 0.2 * clicks
    right = 0.3 * bass + 0.1 * chord + 0.2 * clicks
    return np.stack([left, right]).astype(np.float32)


def query(seconds: float = 1.5, sr: int = QUERY_RATE) -> np.ndarray:
    """``(samples,)`` float32: high, short noise bursts (a hi-hat clip)."""
    n = round(seconds * sr)
    t = np.arange(n) / sr
    noise = np.diff(_hash_noise(n + 1, 1.5))  # differencing keeps the high frequencies
    return (0.3 * noise * np.exp(-((t * 8) % 1.0) * 30.0)).astype(np.float32)


def _stats(est: np.ndarray, mix: np.ndarray) -> dict[str, list[float]]:
    x = est.astype(np.float64)
    blocks = np.array_split(x.mean(axis=0), BLOCKS)
    return {
        "rms": np.sqrt(np.mean(x**2, axis=1)).tolist(),
        "peak": np.abs(x).max(axis=1).tolist(),
        "block_rms": [float(np.sqrt(np.mean(b**2))) for b in blocks],
        "projection": (
            np.sum(x * mix, axis=1) / np.sum(mix.astype(np.float64) ** 2, axis=1)
        ).tolist(),
    }


def compute(model_dir: Path = DEFAULT_MODEL, classes: list[str] | None = None) -> dict[str, Any]:
    """The vector of the model in ``model_dir`` (``classes``: the class latents to use)."""
    import torch

    from aqsep.api import Separator

    torch.manual_seed(0)  # nothing here is random; this guards against a change that makes it so
    sep = Separator(model_dir, device="cpu")
    if classes is None:
        classes = [c for c in ("vocals", "drums") if c in sep.classes] or sep.classes[:2]
    mix = song()
    z_query = sep.query_latent([(query(), QUERY_RATE)])
    latents = {f"class {c}": sep.class_latent(c) for c in classes} | {"query": z_query}
    outputs = {
        name: _stats(sep.separate(mix, SONG_RATE, z)["target"], mix) for name, z in latents.items()
    }
    weights = (Path(model_dir) / "model.safetensors").read_bytes()
    return {
        "model_sha256": hashlib.sha256(weights).hexdigest(),
        "classes": classes,
        "query_latent": [float(v) for v in z_query],
        "outputs": outputs,
    }


def differences(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs beyond the tolerance, one line per value (empty when they agree)."""
    found = []
    pairs = [("query_latent", stored["query_latent"], now["query_latent"])]
    for name, stats in stored["outputs"].items():
        for key, values in stats.items():
            pairs.append((f"{name} {key}", values, now["outputs"].get(name, {}).get(key)))
    for what, old, new in pairs:
        if new is None or len(old) != len(new):
            found.append(f"{what}: stored {old}, now {new}")
            continue
        a, b = np.asarray(old), np.asarray(new)
        if not np.allclose(b, a, rtol=RTOL, atol=ATOL):
            worst = int(np.argmax(np.abs(b - a) - RTOL * np.abs(a)))
            found.append(f"{what}[{worst}]: stored {a[worst]:.6g}, now {b[worst]:.6g}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="released model folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the stored vector (JSON)")
    parser.add_argument("--write", action="store_true", help="store the vector instead")
    args = parser.parse_args(argv)
    if args.write:
        vector = compute(args.model)
        args.out.write_text(json.dumps(vector, indent=1) + "\n")
        print(f"wrote {args.out} ({', '.join(vector['outputs'])})")
        return 0
    stored = json.loads(args.out.read_text())
    now = compute(args.model, stored["classes"])
    if now["model_sha256"] != stored["model_sha256"]:
        print(f"note: {args.model} is not the model the vector was stored for")
    diffs = differences(stored, now)
    print("\n".join(diffs) if diffs else "the model gives the stored vector")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
