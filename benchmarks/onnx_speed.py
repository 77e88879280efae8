"""Speed and memory of the onnxruntime backend against PyTorch: one target of a stereo 44.1 kHz file.

Run from the repository root (about 8 minutes with the defaults on a 2-core machine):

    python benchmarks/onnx_speed.py                   # 3-min file, 3 rounds, quiet and beside one
                                                      # CPU-bound neighbour; prints, and writes
                                                      # docs/onnx_speed.json and its section of
                                                      # docs/benchmarks.md
    python benchmarks/onnx_speed.py --seconds 30 --rounds 2 --neighbours 0 --no-write

Needs the onnx extra (``pip install -e ".[onnx]"``). The model (the shipped one unless
``--model``) is exported to a temporary folder first (``aqsep.onnx.export_onnx``). Every run is a
fresh process started and timed from here (``process_speed.run_once``: wall time from start to
exit, CPU time and peak RSS from ``wait4``), at the priority this script has, on the first
``--cores`` CPUs of the machine (2 by default; the neighbours share them):

* ``aqsep separate``: ``python -m aqsep separate FILE --target vocals -o OUT --force -q
  --backend B --model M``: what a user types, start-up included;
* ``in-process``: the same separation from a Python process that times its parts: ``import
  aqsep``, loading the model (``Separator(..., backend=B)``), ``Separator.separate_file`` (read,
  separate, write); the real-time factor of the last is the in-process figure;
* ``import torch`` and ``import onnxruntime`` (with numpy, soundfile and soxr): the floors of a
  process that imports PyTorch, and of one that would run the ONNX graphs without it.

Every round runs every (case, neighbours) once in a shuffled order, so that slow phases of a
shared machine fall on all of them alike. Reported: medians over rounds, and the ratio of the
torch run's wall time to the onnx run's within each round (paired), then its median. *Other load*
is the CPU time other processes used meanwhile, in cores: on a machine shared with other jobs
the figures measure the scheduler as much as aqsep; rerun on a quiet machine for absolute ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import (
    REPO,
    command_line,
    cpu_model,
    current_rss_mb,
    git_commit,
    replace_section,
)
from process_speed import median, run_once

SECTION = "benchmarks/onnx_speed.py"
DOC = REPO / "docs" / "benchmarks.md"
JSON_OUT = REPO / "docs" / "onnx_speed.json"
BACKENDS = ("torch", "onnx")
AQSEP = [sys.executable, "-m", "aqsep"]


@dataclass
class Case:
    name: str  # aqsep separate, in-process, import torch, import onnxruntime
    backend: str  # torch, onnx, or "" for the import floors
    argv: list[str]
    runs: list[dict[str, Any]] = field(default_factory=list)


# ---- the worker (run as `python benchmarks/onnx_speed.py --worker BACKEND FILE OUT MODEL`) -------
def work(backend: str, path: str, out_dir: str, model: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    from aqsep.api import Separator

    t1 = time.perf_counter()
    sep = Separator(model or None, device="cpu", backend=backend)
    t2 = time.perf_counter()
    rss_loaded = current_rss_mb()
    sep.separate_file(path, out_dir, sep.class_latent("vocals"), name="vocals", force=True)
    t3 = time.perf_counter()
    return {
        "import_s": t1 - t0,
        "load_s": t2 - t1,
        "separate_s": t3 - t2,
        "rss_after_load_mb": rss_loaded,
    }


# ---- the driver ----------------------------------------------------------------------------------
def build_cases(song: Path, out: Path, model: str, export: Path) -> list[Case]:
    script = str(Path(__file__).resolve())
    cases = []
    for backend in BACKENDS:
        m = str(export) if backend == "onnx" else model
        cli = [*AQSEP, "separate", str(song), "--target", "vocals"]
        cli += ["-o", str(out / f"cli-{backend}"), "--force", "-q", "--backend", backend]
        cli += ["--model", m] if m else []
        worker = [sys.executable, script, "--worker", backend, str(song)]
        worker += [str(out / f"inproc-{backend}"), m]
        cases += [Case("aqsep separate", backend, cli), Case("in-process", backend, worker)]
    cases.append(Case("import torch", "", [sys.executable, "-c", "import torch"]))
    floor = "import onnxruntime, numpy, soundfile, soxr"
    cases.append(Case("import onnxruntime", "", [sys.executable, "-c", floor]))
    return cases


def summarise(cases: list[Case], neighbour_counts: list[int], rounds: int) -> list[dict[str, Any]]:
    """Medians per (case, backend, neighbours); for onnx, the paired speed-up over torch."""
    rows = []
    for case in cases:
        twin = next(
            (c for c in cases if c.name == case.name and c.backend == "torch"), None
        )  # the torch run of the same case
        for n in neighbour_counts:
            runs = [r for r in case.runs if r["neighbours"] == n and "error" not in r]
            ratios = []
            for k in range(rounds):
                mine = [r for r in runs if r["round"] == k]
                ref = [] if twin is None else [r for r in twin.runs if r["round"] == k]
                ref = [r for r in ref if r["neighbours"] == n and "error" not in r]
                if case.backend == "onnx" and mine and ref:
                    key = "separate_s" if case.name == "in-process" else "wall_s"
                    ratios.append(ref[0][key] / mine[0][key])
            row: dict[str, Any] = {
                "case": case.name,
                "backend": case.backend,
                "neighbours": n,
                "runs": len(runs),
                "failed": sum(1 for r in case.runs if r["neighbours"] == n and "error" in r),
                "wall_s": median([r["wall_s"] for r in runs]),
                "cpu_s": median([r.get("cpu_s", float("nan")) for r in runs]),
                "peak_rss_mb": median([r.get("peak_rss_mb", float("nan")) for r in runs]),
                "other_load_cores": median([r["other_load_cores"] for r in runs]),
                "neighbour_cores": median([r["neighbour_cores"] for r in runs]),
                "speedup_over_torch": median(ratios),
                "all_wall_s": [round(r["wall_s"], 3) for r in runs],
            }
            for part in ("import_s", "load_s", "separate_s", "rss_after_load_mb"):
                if runs and part in runs[0]:
                    row[part] = median([r[part] for r in runs])
            rows.append(row)
    return rows


def fmt(x: float, digits: int = 2) -> str:
    return "" if x != x else f"{x:.{digits}f}"  # NaN -> empty


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    seconds = meta["audio_s"]
    nan = float("nan")
    lines = [
        f"## ONNX runtime against PyTorch (`{SECTION}`)",
        "",
        f"Command: `{meta['command']}` (from the repository root; {meta['date']}, commit "
        f"{meta['commit']}; {meta['rounds']} rounds, every case once per round in a shuffled "
        f"order; {meta['elapsed_min']:.1f} min in all).",
        "",
        f"Machine: {meta['cpu']}, the runs on {meta['cores']} of its {meta['machine_cores']} "
        f"cores (torch and onnxruntime threads: {meta['threads']}); load average "
        f"{meta['loadavg_before']} before the run, {meta['loadavg_after']} after; the script "
        f"ran at nice {meta['nice']}. Input: a generated {seconds:g} s stereo 44.1 kHz 16-bit "
        "WAV, one target (`--target vocals`), the shipped model unless `--model` (the `onnx` "
        "runs: its export by `aqsep export-onnx`). *Wall*: the process from start to exit; *x "
        "real time*: audio seconds per wall second (in-process: per second of `separate_file`); "
        "*onnx speed-up*: the torch run's time over the onnx run's within each round (wall; "
        "in-process: `separate_file`), median over rounds. *Neighbours*: CPU-bound processes "
        '(`python -c "while True: pass"`) on the same cores; *other load*: cores used '
        "meanwhile by every other process on the machine.",
        "",
        "| case | backend | neighbours | wall (s) | x real time | CPU (s) | peak RSS (MB) "
        "| RSS after load (MB) | import (s) | load (s) | separate (s) | onnx speed-up "
        "| other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["case"].startswith("import"):
            xrt = nan
        elif r["case"] == "in-process":
            xrt = seconds / r.get("separate_s", nan)
        else:
            xrt = seconds / r["wall_s"]
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['neighbours']} | {fmt(r['wall_s'])} "
            f"| {fmt(xrt, 1)} | {fmt(r['cpu_s'])} | {fmt(r['peak_rss_mb'], 0)} "
            f"| {fmt(r.get('rss_after_load_mb', nan), 0)} | {fmt(r.get('import_s', nan))} "
            f"| {fmt(r.get('load_s', nan))} | {fmt(r.get('separate_s', nan))} "
            f"| {fmt(r['speedup_over_torch'])} | {fmt(r['other_load_cores'])} |"
        )
    lines += ["", f"Every run's wall time is in `{JSON_OUT.relative_to(REPO)}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="input length (default 180)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--neighbours",
        type=int,
        default=1,
        help="CPU-bound neighbours in the busy runs; 0: quiet only",
    )
    parser.add_argument("--cores", type=int, default=2, help="CPUs the runs use (default 2)")
    parser.add_argument("--model", default="", help="released model folder (default: shipped)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--worker", nargs=4, metavar=("BACKEND", "FILE", "OUT", "MODEL"))
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(work(*args.worker)), flush=True)
        return 0

    usable = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, usable[: args.cores])  # inherited by every run and neighbour
    began = time.perf_counter()
    loadavg_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    neighbour_counts = [0] + ([args.neighbours] if args.neighbours > 0 else [])
    with tempfile.TemporaryDirectory(prefix="aqsep-onnx-speed-") as tmp_name:
        tmp = Path(tmp_name)
        # the input, the export and the thread count in processes of their own: this one stays
        # small, since a child's peak RSS (wait4) is never below its parent's size when it starts
        song = tmp / "song.wav"
        write = f"from bench_common import write_test_file as w; w({str(song)!r}, {args.seconds})"
        subprocess.run([sys.executable, "-c", write], cwd=Path(__file__).parent, check=True)
        export = tmp / "export"
        model = args.model or "default"
        subprocess.run([*AQSEP, "export-onnx", model, str(export), "-q"], check=True)
        threads = int(
            subprocess.run(
                [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        cases = build_cases(song, tmp / "out", args.model, export)
        order = random.Random(args.seed)
        for k in range(args.rounds):
            jobs = [(c, n) for c in cases for n in neighbour_counts]
            order.shuffle(jobs)
            for case, n in jobs:
                record = run_once(case.argv, {}, n)
                record.update(round=k, neighbours=n)
                case.runs.append(record)
                what = f"{case.name} {case.backend}".strip()
                status = "FAILED " + " / ".join(record["error"]) if "error" in record else ""
                print(
                    f"round {k + 1}/{args.rounds}: {what}, {n} neighbour(s): "
                    f"{record['wall_s']:.2f} s {status}",
                    flush=True,
                )
    rows = summarise(cases, neighbour_counts, args.rounds)
    meta = {
        "command": command_line(SECTION, sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "rounds": args.rounds,
        "elapsed_min": (time.perf_counter() - began) / 60,
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "machine_cores": os.cpu_count(),
        "threads": threads,
        "loadavg_before": loadavg_before,
        "loadavg_after": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "nice": os.nice(0),
        "audio_s": args.seconds,
    }
    text = markdown(rows, meta)
    print("\n" + text)
    if not args.no_write:
        JSON_OUT.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        replace_section(DOC, SECTION, text)
        print(f"wrote {JSON_OUT.relative_to(REPO)} and its section of {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
