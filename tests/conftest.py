"""Shared test fixtures: a tiny random-weight released model and generated audio files.

Everything here is small and made on the fly (no downloads, no shipped weights), so that the
whole suite runs on 2 CPU cores in minutes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from aqsep.config import AudioConfig, ModelConfig, QueryNetConfig, SeparatorConfig
from aqsep.model import QuerySeparator
from aqsep.release import ClassLatent, save_model

TINY_CLASSES = ("bass", "drums", "other", "vocals")

# Tiny models run fastest on one thread, and a second thread only fights other work on a shared
# 2-core machine (a 100x slowdown was seen). Subprocesses get the same through OMP_NUM_THREADS.
TEST_THREADS = int(os.environ.get("AQSEP_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)


def tiny_config() -> ModelConfig:
    """A model small enough to run in milliseconds: 256-point STFT, 64-frame (~0.18 s) segments."""
    return ModelConfig(
        audio=AudioConfig(n_fft=256, hop_length=64, n_bins=128, segment_frames=64),
        query=QueryNetConfig(channels=(4, 4, 8, 8, 8, 8), gru_hidden=8, latent_dim=8),
        separator=SeparatorConfig(channels=(4, 4, 8, 8, 8, 8)),
    )


def make_tiny_model(seed: int = 0) -> QuerySeparator:
    """A :func:`tiny_config` model with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return QuerySeparator(tiny_config()).eval()


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Write a released tiny model (weights, config and one random latent per class) to ``folder``."""
    model = make_tiny_model(seed)
    rng = np.random.default_rng(seed)
    classes = {
        name: ClassLatent(latent=[float(x) for x in rng.standard_normal(model.latent_dim)], count=1)
        for name in TINY_CLASSES
    }
    return save_model(folder, model, classes, metadata={"note": "random weights, for tests"})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A released tiny model folder (read-only by convention: copy it before altering it)."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def make_audio(
    seconds: float, sample_rate: int, channels: int = 2, *, seed: int = 0, level: float = 0.3
) -> np.ndarray:
    """Harmonic tones plus a little noise, ``(channels, samples)`` float32, a different mix per channel."""
    rng = np.random.default_rng(seed)
    n = max(0, round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    out = np.empty((channels, n), dtype=np.float32)
    for c in range(channels):
        f0 = 110.0 * (1 + c) * (1 + 0.1 * seed)
        tone = sum(
            np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3)
        )
        out[c] = level * (0.6 * tone / 1.83 + 0.1 * rng.standard_normal(n))
    return out


def write_file(
    path: Path,
    audio: np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
    fmt: str | None = None,
) -> Path:
    """Write ``(channels, samples)`` with soundfile (independent of aqsep's own writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.ascontiguousarray(audio.T), sample_rate, subtype=subtype, format=fmt)
    return path


AudioFactory = Callable[..., Path]


@pytest.fixture
def audio_file(tmp_path: Path) -> AudioFactory:
    """Factory: ``audio_file("name.wav", seconds=1.0, sr=44100, channels=2, subtype=None, seed=0)``.

    Writes generated audio (see :func:`make_audio`) under the test's ``tmp_path`` and returns its path.
    Relative names are placed under ``tmp_path``; folders are created as needed.
    """

    def make(
        name: str = "song.wav",
        *,
        seconds: float = 1.0,
        sr: int = 44100,
        channels: int = 2,
        subtype: str | None = None,
        seed: int = 0,
        level: float = 0.3,
    ) -> Path:
        path = Path(name) if Path(name).is_absolute() else tmp_path / name
        return write_file(
            path, make_audio(seconds, sr, channels, seed=seed, level=level), sr, subtype
        )

    return make


REPO_ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m aqsep`` in a subprocess on this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(TEST_THREADS))
    env.update(extra)
    return env


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def screen_lines(self) -> list[str]:
        """Non-blank stderr lines as a terminal shows them (a progress bar redraws after ``\\r``)."""
        shown = (line.rsplit("\r", 1)[-1].strip() for line in self.err.split("\n"))
        return [line for line in shown if line]

    def one_line_error(self) -> str:
        """The error line; fails the test unless stderr is exactly one ``aqsep: error:`` line."""
        assert self.code != 0, f"expected a failure, got exit 0: {self.out}"
        lines = self.screen_lines()
        assert len(lines) == 1 and lines[0].startswith("aqsep: error: "), self.err
        return lines[0]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``aqsep ARGS...`` in this process: ``cli("separate", path, "--target", "drums")``."""
    from aqsep.cli import main

    def run(*argv: object) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # --help, usage errors
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(int(code), captured.out, captured.err)

    return run


EVAL_SR = 8000  # their rate: museval's cost grows with the number of samples


# ---- a tiny evaluation model and corpus (evaluate/, experiments/) -----------------------------
def make_model(folder: Path, seed: int = 0) -> Path:
    """A random tiny model at 8 kHz with class latents for the four coarse classes and 'hi-hat'."""
    torch.manual_seed(seed)
    config = ModelConfig(
        audio=AudioConfig(
            sample_rate=EVAL_SR, n_fft=256, hop_length=64, n_bins=128, segment_frames=64
        ),
        query=QueryNetConfig(channels=(4, 4, 8, 8, 8, 8), gru_hidden=8, latent_dim=8),
        separator=SeparatorConfig(channels=(4, 4, 8, 8, 8, 8)),
    )
    model = QuerySeparator(config).eval()
    rng = np.random.default_rng(seed)

    def latent() -> list[float]:
        return [float(x) for x in rng.standard_normal(model.latent_dim)]

    classes = {c: ClassLatent(latent(), count=1) for c in ("vocals", "drums", "bass", "other")}
    classes["hi-hat"] = ClassLatent(latent(), level="fine", count=1)
    return save_model(folder, model, classes, metadata={"note": "random weights, for tests"})


def make_stems(seed: int, seconds: float) -> dict[str, tuple[str, str, np.ndarray]]:
    """stem -> (fine label, coarse class, mono signal): simple sounds with distinct spectra."""
    rng = np.random.default_rng(seed)
    n = round(seconds * EVAL_SR)
    t = np.arange(n) / EVAL_SR

    def env(period: float, decay: float) -> np.ndarray:
        return np.exp(-(t % period) / decay)

    return {
        "kick": ("kick", "drums", 0.5 * np.sin(2 * np.pi * 60 * t) * env(0.5, 0.05)),
        "hi-hat": ("hi-hat", "drums", 0.2 * np.diff(rng.standard_normal(n + 1)) * env(0.25, 0.02)),
        "bass": ("bass", "bass", 0.15 * np.sign(np.sin(2 * np.pi * (55 + 5 * seed) * t))),
        "piano": (
            "piano",
            "other",
            0.2 * np.sin(2 * np.pi * (220 + 20 * seed) * t) * env(1.0, 0.4),
        ),
        "electric_guitar": (
            "electric guitar",
            "other",
            0.15 * np.tanh(3 * np.sin(2 * np.pi * (330 + 10 * seed) * t)),
        ),
        "voice": (
            "voice",
            "vocals",
            0.25 * np.sin(2 * np.pi * (440 + 10 * np.sin(2 * np.pi * 5 * t)) * t),
        ),
    }


def make_corpus(root: Path, n_tracks: int = 2, seconds: float = 2.0) -> Path:
    """``root/test/<track>/<stem>.wav`` + metadata.json, in the corpus builder's layout."""
    for i in range(n_tracks):
        folder = root / "test" / f"track{i}"
        folder.mkdir(parents=True, exist_ok=True)
        meta = {}
        for stem, (fine, coarse, x) in make_stems(i, seconds).items():
            sf.write(folder / f"{stem}.wav", x.astype(np.float32), EVAL_SR, subtype="FLOAT")
            meta[stem] = {"fine": fine, "coarse": coarse}
        (folder / "metadata.json").write_text(json.dumps({"stems": meta}))
    return root


MIR1K_RATE = 16000  # MIR-1K's own rate


def write_mir1k_clip(folder: Path, name: str, seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    """A two-channel MIR-1K clip: a low tone (accompaniment) left, a high tone (voice) right."""
    t = np.arange(int(seconds * MIR1K_RATE)) / MIR1K_RATE
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    right = 0.2 * np.sin(2 * np.pi * 880 * t)
    audio = np.stack([left, right], axis=1).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{name}.wav", audio, MIR1K_RATE, subtype="FLOAT")
    return audio
