"""What each ONNX precision costs on real recordings, beside the PyTorch model it was exported from.

Run from the repository root (about 20 minutes on 2 CPU cores for both bundled models):

    python benchmarks/onnx_precision.py                     # default and fast; writes
                                                            # docs/onnx_precision.json and its
                                                            # section of docs/benchmarks.md
    python benchmarks/onnx_precision.py --models fast --quick --no-write

For each model it exports every precision of ``aqsep.precision.PRECISIONS`` that applies to it
(``fp32``; ``fp16`` for a cascade's vocal stage; ``int8``) with the loss bar lifted, so that a
precision the export refuses is measured too, and separates, with the PyTorch model and with
each export:

* ``mir1k``: the held-out singers of MIR-1K (``benchmarks/real.py``'s set a), vocals by the
  class mean: SDR over the whole clip; the figure is the mean over clips, length-weighted;
* ``musdb``: stempeg's MUSDB18 preview clip, each of the four classes by its class mean: SDR
  over the whole clip.

The loss of a precision is the PyTorch model's figure minus the export's, per set and class; the
export keeps a precision where its own check (``aqsep export-onnx``: the bundled example and the
MUSDB clip) finds at most 0.1 dB, and that verdict is printed beside the loss on MIR-1K, which
the check does not see. Speed is ``benchmarks/process_speed.py``'s (whole processes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import REPO, command_line, cpu_model, git_commit, replace_section
from real import VOCALS, mir1k_clips, sdr

SECTION = "benchmarks/onnx_precision.py"
DOC = REPO / "docs" / "benchmarks.md"
JSON_OUT = REPO / "docs" / "onnx_precision.json"
MUSDB_CLASSES = ("vocals", "drums", "bass", "other")


def applicable(model: str) -> list[str]:
    from aqsep.precision import PRECISIONS, converted_graphs
    from aqsep.release import read_config, resolve_model_path

    config, _ = read_config(resolve_model_path(model))
    return [p for p in PRECISIONS if p == "fp32" or converted_graphs(config, p)]


def musdb_clip() -> tuple[np.ndarray, int, dict[str, np.ndarray]]:
    import stempeg

    from aqsep.data.musdb import STEM_IDS

    streams, rate = stempeg.read_stems(stempeg.example_stem_path(), dtype=np.float32)
    stems = {c: np.ascontiguousarray(streams[i].T) for c, i in STEM_IDS.items()}
    return np.sum(list(stems.values()), axis=0), int(rate), stems


def figures(sep: Any, clips: list[Any], musdb: tuple[np.ndarray, int, dict]) -> dict[str, Any]:
    """SDR of every MIR-1K clip (vocals) and of the MUSDB clip's classes, and the seconds spent."""
    began = time.perf_counter()
    z = sep.class_latent(VOCALS)
    per_clip = {
        c.name: sdr(c.voice, sep.separate(c.mixture, c.sample_rate, z)["target"]) for c in clips
    }
    weights = np.array([c.seconds for c in clips])
    mixture, rate, stems = musdb
    classes = {c: sep.class_latent(c) for c in MUSDB_CLASSES if c in sep.classes}
    est = {c: sep.separate(mixture, rate, zc)["target"] for c, zc in classes.items()}
    return {
        "mir1k_vocals_db": float(np.average([per_clip[c.name] for c in clips], weights=weights)),
        "mir1k_per_clip": per_clip,
        "musdb_db": {c: sdr(stems[c], e) for c, e in est.items()},
        "seconds": time.perf_counter() - began,
    }


def measure(model: str, clips: list[Any], musdb: tuple, work: Path, say: Any) -> dict[str, Any]:
    from aqsep.api import Separator
    from aqsep.onnx import export_onnx

    rows: dict[str, Any] = {}
    say(f"{model}: torch")
    rows["torch"] = figures(Separator(model, device="cpu"), clips, musdb)
    for precision in applicable(model):
        say(f"{model}: onnx {precision}")
        out = export_onnx(
            model,
            work / f"{Path(model).name}-{precision}",
            precision=precision,
            max_loss_db=math.inf,
        )
        info = json.loads((out / "export.json").read_text())
        row = figures(Separator(out, backend="onnx"), clips, musdb)
        check = info["check"]
        row["export_check_loss_db"] = None if check is None else check["loss_db"]
        row["kept_by_export"] = check is None or check["loss_db"] <= info["max_loss_db"]
        row["size_mb"] = sum(p.stat().st_size for p in out.glob("*.onnx")) / 1e6
        rows[f"onnx {precision}"] = row
    base = rows["torch"]
    for row in rows.values():
        gaps = [base["mir1k_per_clip"][k] - v for k, v in row["mir1k_per_clip"].items()]
        row["mir1k_loss_db"] = float(base["mir1k_vocals_db"] - row["mir1k_vocals_db"])
        row["mir1k_worst_clip_loss_db"] = float(max(gaps))
        row["musdb_loss_db"] = {c: base["musdb_db"][c] - v for c, v in row["musdb_db"].items()}
    return rows


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"## Precision of ONNX exports on real recordings (`{SECTION}`)",
        "",
        f"Command: `{meta['command']}` ({meta['cpu']}, {meta['cores']} cores, commit "
        f"{meta['commit']}, {meta['date']}). SDR in dB over whole clips, class-mean queries; "
        f"MIR-1K: {meta['mir1k_clips']} held-out clips, vocals, length-weighted mean SDR (the "
        "mixtures are at 0 dB); *worst clip*: the largest loss of one clip; MUSDB: "
        "stempeg's preview clip. *Loss*: the PyTorch model's figure minus the export's "
        "(positive: the export is worse). *Kept*: what `aqsep export-onnx --precision` decides "
        "from its own check (at most 0.1 dB lost on the bundled example and the MUSDB clip).",
        "",
        "| model | backend | kept | MIR-1K vocals | loss | worst clip | MUSDB vocals / drums / bass / other | largest MUSDB loss | graphs MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        for name, r in rows.items():
            musdb = " / ".join(
                f"{r['musdb_db'][c]:.2f}" for c in MUSDB_CLASSES if c in r["musdb_db"]
            )
            worst = max(r["musdb_loss_db"].values())
            kept = "" if name == "torch" else ("yes" if r["kept_by_export"] else "**no**")
            size = f"{r['size_mb']:.0f}" if "size_mb" in r else ""
            lines.append(
                f"| {model} | {name} | {kept} | {r['mir1k_vocals_db']:.2f} | "
                f"{r['mir1k_loss_db']:+.2f} | {r['mir1k_worst_clip_loss_db']:+.2f} | {musdb} | "
                f"{worst:+.2f} | {size} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="default,fast", help="comma-separated (default: both)")
    ap.add_argument("--mir1k", type=Path, default=REPO.parent / "shared" / "data" / "mir1k")
    ap.add_argument("--quick", action="store_true", help="two clips per held-out singer")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument(
        "--render", action="store_true", help="rewrite the section from the saved JSON only"
    )
    args = ap.parse_args(argv)
    if args.render:
        saved = json.loads(JSON_OUT.read_text())
        replace_section(DOC, SECTION, markdown(saved["results"], saved["meta"]))
        return 0
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    clips = mir1k_clips(args.mir1k, args.quick)
    musdb = musdb_clip()
    results = {}
    with tempfile.TemporaryDirectory(prefix="aqsep-precision-") as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            results[model] = measure(model, clips, musdb, Path(tmp), say)
    meta = {
        "command": command_line(
            "benchmarks/onnx_precision.py", sys.argv[1:] if argv is None else argv
        ),
        "date": time.strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": __import__("os").cpu_count(),
        "mir1k_clips": len(clips),
    }
    text = markdown(results, meta)
    print(text)
    if not args.no_write:
        JSON_OUT.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
        replace_section(DOC, SECTION, text)
        print(f"wrote {JSON_OUT.relative_to(REPO)} and its section of {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
