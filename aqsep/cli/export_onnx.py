"""`aqsep export-onnx`: a released model's Query-net and Separator as ONNX graphs."""

from __future__ import annotations

import argparse
import time

from aqsep.onnx import GRAPHS, STAGE_GRAPHS, VERIFY_TOLERANCE, export_onnx
from aqsep.precision import MAX_LOSS_DB, PRECISIONS

EPILOG = f"""\
OUT_DIR receives {", ".join(GRAPHS)} (and for a cascade such as the bundled default,
{", ".join(STAGE_GRAPHS)}), config.json and classes.json (the model's own, unchanged) and
export.json (the precision). The graphs take and return spectrograms (the STFT stays outside
them); batch and frames are dynamic. Each graph is checked against the model before anything is
written (largest difference at most {VERIFY_TOLERANCE:g}).

--precision fp16 or int8 converts the separator (and a cascade's vocal stage) and keeps it only
if it loses at most {MAX_LOSS_DB:g} dB of SDR on the bundled example against float32; otherwise
nothing is written and the error gives the measured loss.

OUT_DIR is a new or empty folder, an earlier export (replaced), or the model's own folder (the
graphs are added beside its weights).

examples:
  aqsep export-onnx default default-onnx
  aqsep separate song.wav --target vocals --backend onnx --model default-onnx
  aqsep export-onnx fast fast-onnx-fp16 --precision fp16

Needs the onnx extra: pip install "aqsep[onnx]".
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a model as ONNX graphs, for `aqsep separate --backend onnx`",
        description="Export a released model's Query-net and Separator as ONNX graphs, run by "
        "onnxruntime with `aqsep separate --backend onnx` or Separator(..., backend='onnx').",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", metavar="MODEL", help="released model folder or bundled model name (default)"
    )
    parser.add_argument("out", metavar="OUT_DIR", help="folder to write the export to")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="of the separator and vocal-stage graphs (default fp32); fp16 and int8 are kept "
        f"only where they lose at most {MAX_LOSS_DB:g} dB (see below)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    out = export_onnx(args.model, args.out, precision=args.precision)
    if not args.quiet:
        written = ", ".join(sorted(p.name for p in out.iterdir() if p.suffix == ".onnx"))
        print(f"{args.model}: {written} -> {out} ({time.perf_counter() - began:.1f} s)")
    return 0
