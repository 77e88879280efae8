"""Learning test: a tiny model trained on generated instruments separates them from a mix.

Three synthetic instruments that differ clearly in spectrum and time structure are generated in
the test (seeded) and written as a generic stems folder (no metadata: each stem file's name is
its class). A tiny model is trained for 400 steps on CPU through :func:`aqsep.train.train`, which
also exports it with its class mean latents. Each instrument is then separated from held-out
mixtures of all three through :class:`aqsep.Separator`, (a) with a query clip of that instrument
from another test track and (b) with the class mean latent, and must beat the mixture itself by
at least ``MIN_GAIN_DB`` = 8 dB of SDR (mean over the test tracks). The training loss must fall.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aqsep import Separator
from aqsep.config import AudioConfig, ModelConfig, QueryNetConfig, SeparatorConfig
from aqsep.train import RunSpec, train

SR = 8000
SECONDS = 4.0
INSTRUMENTS = ("bass", "lead", "perc")
TRAIN_TRACKS, VALID_TRACKS, TEST_TRACKS = 8, 1, 3
STEM_RMS = 0.1  # every stem has the same level: the mixture's SDR against each stem is -3 dB
LEAD_TOP = 2400.0  # Hz: lead harmonics stay below this
PERC_BAND = (2600.0, 3900.0)  # Hz: the percussion's noise band
STEPS = 400

# Asserted gain: SDR(estimate) - SDR(mixture) >= 8 dB, mean over the test tracks, for every
# instrument and both query modes. Silence would score +3 dB here (the mixture is at -3 dB), so
# 8 dB means a real estimate (SDR >= +5 dB). Measured: +24.7 to +30.8 dB on this corpus and seed
# (see the test's docstring); over 7 other corpus/training seeds the lowest mean at 400 steps was
# +14.7 dB, while at 300 steps some classes were still near the trivial masks (0 or +3 dB).
MIN_GAIN_DB = 8.0


# ------------------------------------------------------------------------------------ corpus


def _harmonic(f0: np.ndarray, n_harmonics: int, rng: np.random.Generator, top: float) -> np.ndarray:
    """A tone with instantaneous fundamental ``f0`` (Hz, per sample) and 1/k harmonic amplitudes;
    harmonics above ``top`` Hz are left out."""
    phase = 2 * np.pi * np.cumsum(f0) / SR
    out = np.zeros(f0.size)
    for k in range(1, n_harmonics + 1):
        if k == 1 or k * f0.max() < top:
            out += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    return out


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    env = np.minimum(1.0, np.arange(n) / (attack * SR))
    tail = min(n, max(1, int(release * SR)))
    env[-tail:] *= np.linspace(1.0, 0.0, tail)
    return env


def bass(n: int, rng: np.random.Generator) -> np.ndarray:
    """Long low notes without gaps: 60-200 Hz fundamentals, four harmonics (up to 1 kHz)."""
    out = np.zeros(n)
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(0.5, 1.0) * SR), n - pos)
        f0 = np.full(length, rng.uniform(60.0, 200.0))
        out[pos : pos + length] = _envelope(length, 0.02, 0.05) * _harmonic(f0, 4, rng, top=1000.0)
        pos += length
    return out


def lead(n: int, rng: np.random.Generator) -> np.ndarray:
    """Short high notes with vibrato and rests: 600-2000 Hz fundamentals, harmonics below LEAD_TOP."""
    out = np.zeros(n)
    pos = 0
    while pos < n:
        length = min(int(rng.uniform(0.2, 0.5) * SR), n - pos)
        t = np.arange(length) / SR
        vibrato = 1.0 + 0.015 * np.sin(2 * np.pi * rng.uniform(5.0, 7.0) * t)
        f0 = rng.uniform(600.0, 2000.0) * vibrato
        out[pos : pos + length] = _envelope(length, 0.01, 0.03) * _harmonic(
            f0, 3, rng, top=LEAD_TOP
        )
        pos += length + int(rng.uniform(0.0, 0.1) * SR)
    return out


def perc(n: int, rng: np.random.Generator) -> np.ndarray:
    """Short band-passed noise bursts (PERC_BAND) on a 1/8 s grid, each slot hit with probability 0.7."""
    out = np.zeros(n)
    grid = int(0.125 * SR)
    for start in range(0, n, grid):
        if rng.random() >= 0.7:
            continue
        length = min(int(0.1 * SR), n - start)
        spectrum = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1 / SR)
        spectrum[(freqs < PERC_BAND[0]) | (freqs > PERC_BAND[1])] = 0
        decay = np.exp(-np.arange(length) / SR * rng.uniform(30.0, 60.0))
        out[start : start + length] = np.fft.irfft(spectrum, length) * decay
    return out


MAKERS = {"bass": bass, "lead": lead, "perc": perc}


def make_track(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One track: every instrument's stem at STEM_RMS, float32 mono."""
    n = int(SECONDS * SR)
    stems = {}
    for name in INSTRUMENTS:
        x = MAKERS[name](n, rng)
        stems[name] = (STEM_RMS * x / np.sqrt(np.mean(x**2))).astype(np.float32)
    return stems


def make_corpus(root: Path, seed: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """Write ``root/<split>/track_<i>/<instrument>.wav`` and return the stems of every split."""
    rng = np.random.default_rng(seed)
    corpus: dict[str, list[dict[str, np.ndarray]]] = {}
    for split, count in (("train", TRAIN_TRACKS), ("valid", VALID_TRACKS), ("test", TEST_TRACKS)):
        corpus[split] = []
        for i in range(count):
            stems = make_track(rng)
            folder = root / split / f"track_{i}"
            folder.mkdir(parents=True)
            for name, x in stems.items():
                sf.write(folder / f"{name}.wav", x, SR, subtype="FLOAT")
            corpus[split].append(stems)
    return corpus


# ------------------------------------------------------------------------------------ training


def learning_config() -> ModelConfig:
    """A tiny model at 8 kHz: 256-point STFT (31 Hz bins), 64-frame (0.5 s) excerpts.

    At these sizes a step costs about the same whatever the widths (per-operation overhead
    dominates), so the separator gets 3x3 kernels and a few more channels than conftest's
    ``tiny_config``, and the latent 16 dimensions: that learned several times more reliably
    across seeds. No dropout: it only slows down a network this small.
    """
    return ModelConfig(
        audio=AudioConfig(sample_rate=SR, n_fft=256, hop_length=64, n_bins=128, segment_frames=64),
        query=QueryNetConfig(channels=(8, 8, 16, 16, 16, 16), gru_hidden=32, latent_dim=16),
        separator=SeparatorConfig(channels=(8, 8, 16, 16, 32, 32), kernel_size=3, dropout=0.0),
    )


# Training settings, tuned for a short run: a high learning rate; every stem kept in every
# mixture (keep_prob=1, so training mixtures look like the test's); a lighter KL weight (with the
# paper's 0.01 the latent carried little information after a few hundred steps).
TRAIN_SETTINGS = dict(
    max_steps=STEPS,
    batch_size=8,
    lr=3e-3,
    lambda_kl=0.001,
    keep_prob=1.0,
    val_every=STEPS,
    checkpoint_every=STEPS,
    valid_excerpts=8,
    num_workers=0,
    seed=0,
)


@dataclass
class Trained:
    corpus: dict[str, list[dict[str, np.ndarray]]]
    run_dir: Path
    model_dir: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One training run for the whole file, exported with its class mean latents."""
    root = tmp_path_factory.mktemp("learning")
    corpus = make_corpus(root / "data")
    spec = RunSpec.create(
        root / "data", preset="cpu", model_config=learning_config(), train_overrides=TRAIN_SETTINGS
    )
    result = train(spec, root / "run", progress=False, log_every=1)
    assert result.steps == STEPS and result.model_dir is not None
    return Trained(corpus, root / "run", result.model_dir)


# ------------------------------------------------------------------------------------ tests


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB: 10 log10(|s|^2 / |s - s_hat|^2)."""
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return float(
        10 * np.log10(np.sum(reference**2) / (np.sum((reference - estimate) ** 2) + 1e-12))
    )


def separation_gains(
    model_dir: Path, tests: list[dict[str, np.ndarray]]
) -> dict[tuple[str, str], list[float]]:
    """SDR(estimate) - SDR(mixture) for every (instrument, mode) and test track."""
    sep = Separator(model_dir, device="cpu")
    assert sep.classes == sorted(INSTRUMENTS)
    gains: dict[tuple[str, str], list[float]] = {}
    for name in INSTRUMENTS:
        for i, stems in enumerate(tests):
            mixture = np.sum([stems[k] for k in INSTRUMENTS], axis=0)
            other = tests[(i + 1) % len(tests)][name]  # the query: this instrument in another track
            latents = {"query": sep.query_latent([(other, SR)]), "class": sep.class_latent(name)}
            for mode, z in latents.items():
                estimate = sep.separate(mixture, SR, z)["target"]
                assert estimate.shape == mixture.shape and np.isfinite(estimate).all()
                gains.setdefault((name, mode), []).append(
                    sdr(stems[name], estimate) - sdr(stems[name], mixture)
                )
    return gains


@pytest.mark.slow
def test_separates_each_instrument_better_than_the_mixture(trained: Trained) -> None:
    """Mean SDR gain over the mixture >= MIN_GAIN_DB = 8 dB for every instrument, with a query
    from another track and with the class mean.

    Measured (mean over the 3 test tracks, query / class mean): bass +25.9 / +25.9 dB,
    lead +24.7 / +25.6 dB, perc +30.7 / +30.8 dB.
    """
    gains = separation_gains(trained.model_dir, trained.corpus["test"])
    means = {key: float(np.mean(v)) for key, v in gains.items()}
    report = ", ".join(f"{n}/{m} {g:+.1f} dB" for (n, m), g in sorted(means.items()))
    assert all(g >= MIN_GAIN_DB for g in means.values()), report


@pytest.mark.slow
def test_loss_curve_decreases(trained: Trained) -> None:
    """The reconstruction loss of the last 50 steps is well below that of the first 50."""
    with open(trained.run_dir / "logs" / "version_0" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/rec")]
    assert [int(r["step"]) for r in rows] == list(range(STEPS))
    rec = np.array([float(r["train/rec"]) for r in rows])
    first, last = float(rec[:50].mean()), float(rec[-50:].mean())
    assert last < 0.5 * first, (first, last)  # measured: 0.230 -> 0.025
