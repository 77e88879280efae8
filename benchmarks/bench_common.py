"""What the speed benchmarks share: test signals, machine and process facts, the process runner.

Used by ``benchmarks/separate.py`` (the command) and its parts ``speed_separation.py``,
``speed_training.py`` and ``peer_spleeter.py``. Every figure is measured in a fresh Python process
(``Runner``), so that runs do not share allocator state, warm caches or a peak-memory high-water
mark.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
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


def git_commit() -> str:
    """The repository's short commit, noting uncommitted changes under aqsep/ ("unknown" outside
    a git checkout)."""
    try:
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
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" (aqsep/ modified)" if dirty else "")


def section_markers(section: str) -> tuple[str, str]:
    """The comment lines that open and close a generated ``section`` of a Markdown file."""
    return (
        f"<!-- {section}: generated section, begin -->",
        f"<!-- {section}: generated section, end -->",
    )


def read_section(doc: Path, section: str) -> str:
    """The text between the markers of ``section`` in ``doc``, as :func:`replace_section` put it."""
    begin, end = section_markers(section)
    return doc.read_text().split(begin + "\n", 1)[1].split(end, 1)[0]


def replace_section(doc: Path, section: str, text: str) -> None:
    """Put ``text`` between the markers of ``section`` in the Markdown file ``doc``: in place of the
    previous block, or appended at the end."""
    begin, end = section_markers(section)
    content = doc.read_text()
    block = f"{begin}\n{text}{end}\n"
    if begin in content and end in content:
        head, _, rest = content.partition(begin)
        _, _, tail = rest.partition(end + "\n")
        content = head + block + tail
    else:
        content = content.rstrip("\n") + "\n\n" + block
    doc.write_text(content)


def find_tcmalloc() -> str | None:
    return next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)


def machine_info(threads: int, tcmalloc: str | None) -> dict[str, Any]:
    import torch

    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    commit = git_commit()
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


def set_threads(threads: int) -> None:
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


def separation_figures(
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


# ---------------------------------------------------------------------------------------------
# The runner: fresh processes, idle waits, load accounting
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
    """Runs each measurement as ``python SCRIPT --worker KIND SPEC`` in a fresh process.

    ``SCRIPT`` is the benchmark's command-line entry (``benchmarks/separate.py``), whose worker
    mode prints one ``RESULT {json}`` line; the runner adds the load other processes put on the
    machine meanwhile.
    """

    def __init__(self, args: argparse.Namespace, tcmalloc: str | None, script: Path) -> None:
        self.args, self.tcmalloc, self.script = args, tcmalloc, script
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
            [sys.executable, str(self.script), "--worker", kind, json.dumps(spec)],
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
            print(f"  {describe(record)}", flush=True)
        self.results.append(record)
        return record


def describe(r: dict[str, Any]) -> str:
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


def best_run(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in records if "error" not in r]
    if not ok:
        return None
    key = "excerpts_per_s" if ok[0]["kind"] == "train" else "x_realtime"
    return max(ok, key=lambda r: r[key])


def find_run(records: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    return next((r for r in records if r.get("label") == label and "error" not in r), None)


def mb(x: float) -> str:
    return f"{x:,.0f}"


def fmt_len(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


# ---------------------------------------------------------------------------------------------
# Paths and commands as written into the docs (never absolute machine paths)
# ---------------------------------------------------------------------------------------------
def shown(path: str | Path) -> str:
    """``path`` as the docs write it: relative to the repository root (``../`` outside it)."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    return os.path.relpath(p.resolve(), REPO)


def command_line(script: str, argv: list[str]) -> str:
    """``python SCRIPT ARGS`` as run from the repository root, absolute paths made relative."""
    import shlex

    def arg(a: str) -> str:
        if "=" in a and a.startswith("--"):
            flag, _, value = a.partition("=")
            return f"{flag}={arg(value)}"
        return shown(a) if a.startswith("/") else a

    return shlex.join(["python", script, *(arg(a) for a in argv)])
