"""`aqsep separate`: take sources out of songs, chosen by query clips, time ranges or classes.

Every output of a run (classes, the averaged query, each query clip, the range) is separated in
one pass over each input."""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from aqsep.api import (
    BACKENDS,
    DEFAULT_MASKS,
    Query,
    Separator,
    check_output_names,
    file_plan,
    mask_rule,
    track_outputs,
)
from aqsep.audio import AUDIO_EXTENSIONS, output_format
from aqsep.cli.argtypes import add_chunk_arguments, chunk_options, non_negative_int
from aqsep.errors import (
    AqsepError,
    AudioError,
    ModelError,
    OutputError,
    QueryError,
    SettingError,
)
from aqsep.inference import MASK_RULES

EPILOG = """\
queries (one or more; each gives its own output, all separated in one pass):
  --target CLASS[,CLASS...]  classes the model knows (their stored mean latents), e.g.
  --targets LIST             drums, or vocals,drums,bass,other; "all" is every coarse
                             class of the model (the stems of a whole song)
  --query CLIP [CLIP ...]    audio examples of the sound to extract, averaged in latent
                             space into one output (with --each: one output per clip,
                             named after the clip)
  --query-range RANGE        a time range of each input itself where the sound plays
                             alone (each input gets its own query)

outputs are named after their class, their clip (--each), or --name (default "target") for
--query and --query-range; with both, the range's output is "range". With --residual,
rest.<ext> is the input minus every output.

masks (--masks), when a run has several outputs:
  ratio        the outputs' masks are scaled to add up to one in every time-frequency bin
               (normalised ratio masks), so the outputs sum to the input; with --residual
               the rest shares the bins too, taking what the outputs leave (masks are only
               scaled down where they claim more than the whole). Default for several
               outputs; give every source of the song (--targets all) or add --residual.
  wiener       the ratio masks' estimates refined by a multichannel Wiener filter (one
               EM iteration, as Open-Unmix's --niter 1): the input's channels tell the
               outputs apart too; the outputs still sum to the input. Slower.
  independent  each output as if separated alone (the default for one output and for
               --each, whose clips are alternatives to compare, not parts of the song)

time ranges (--query-range):
  START-END    each side in seconds (65.5) or clock time (1:05.5, 1:02:03)
  START:END    seconds only (65.5:80); a clock time needs the START-END form
  a side may be left empty: "-0:30" or ":30" (from the start), "1:00-" or "60:" (to the end)

examples:
  aqsep separate song.wav --target vocals
  aqsep separate song.wav --targets all                     # every stem, summing to the song
  aqsep separate song.wav --targets vocals,drums --residual
  aqsep separate song.flac --query hihat.wav -o stems/ --residual
  aqsep separate song.flac --query clips/*.wav --each       # one output per clip
  aqsep separate album/ "live/*.mp3" --query-range 1:05-1:20 --name guitar
  aqsep separate song.wav --target drums --blend bass:0.3 --refine 2
  aqsep separate song.wav --query a.wav b.wav --format flac --bits 24 --force

Outputs go to OUTDIR/<track>/<name>.<ext> (and rest.<ext> with --residual) at the input's
sample rate and channel count. Tracks whose outputs exist are skipped unless --force.
Put --query after the inputs, or end its list with "--" (aqsep separate --query a.wav -- song.wav).
"""

_SECONDS = r"\d+(?:\.\d*)?|\.\d+"
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d{2}(?:\.\d*)?)")


@dataclass(frozen=True)
class TimeRange:
    """A range in seconds; ``end`` None means the end of the input."""

    start: float
    end: float | None

    def __str__(self) -> str:
        return f"{self.start}-{'' if self.end is None else self.end}"


@dataclass(frozen=True)
class Blend:
    """Slerp towards ``other`` (a class name or an audio file) by ``alpha`` in [0, 1]."""

    other: str
    alpha: float


def parse_time(text: str, *, clock: bool = True) -> float:
    """Seconds from ``"65.5"``, or (with ``clock``) ``"1:05.5"`` / ``"1:01:05"``."""
    text = text.strip()
    if re.fullmatch(_SECONDS, text):
        return float(text)
    match = _CLOCK.fullmatch(text) if clock else None
    if match is None:
        form = "seconds (65.5) or m:ss / h:mm:ss" if clock else "seconds (65.5)"
        raise argparse.ArgumentTypeError(f"bad time {text!r}: use {form}")
    hours, minutes, seconds = int(match.group(1) or 0), int(match.group(2)), float(match.group(3))
    if seconds >= 60 or (match.group(1) is not None and minutes >= 60):
        raise argparse.ArgumentTypeError(
            f"bad clock time {text!r}: minutes and seconds must be below 60"
        )
    return 3600 * hours + 60 * minutes + seconds


def parse_range(text: str) -> TimeRange:
    """``START-END`` (seconds or clock times) or ``START:END`` (seconds); either side may be empty."""
    if "-" in text:
        parts, clock = text.split("-"), True
    else:
        parts, clock = text.split(":"), False
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"bad range {text!r}: write START-END (e.g. 1:05-1:20 or 65-80) or START:END in seconds (65:80)"
        )
    if not parts[0].strip() and not parts[1].strip():
        raise argparse.ArgumentTypeError(f"bad range {text!r}: give a START, an END or both")
    if (
        clock
        and not parts[0].strip()
        and ":" in parts[1]
        and not _CLOCK.fullmatch(parts[1].strip())
    ):
        raise argparse.ArgumentTypeError(  # "-1:3": a START:END range with a negative start
            f"bad range {text!r}: times cannot be negative (a range starts at 0 at the earliest)"
        )
    start = parse_time(parts[0], clock=clock) if parts[0].strip() else 0.0
    end = parse_time(parts[1], clock=clock) if parts[1].strip() else None
    if end is not None and end <= start:
        raise argparse.ArgumentTypeError(f"bad range {text!r}: the end must come after the start")
    return TimeRange(start, end)


def parse_blend(text: str) -> Blend:
    """``OTHER:ALPHA``: OTHER is a class name or an audio file, ALPHA in [0, 1]."""
    other, sep, alpha_text = text.rpartition(":")
    if not sep or not other:
        raise argparse.ArgumentTypeError(
            f"bad blend {text!r}: write OTHER:ALPHA, e.g. bass:0.3 or clip.wav:0.5"
        )
    try:
        alpha = float(alpha_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad blend weight {alpha_text!r}: a number in [0, 1]"
        ) from None
    if not 0.0 <= alpha <= 1.0:
        raise argparse.ArgumentTypeError(f"bad blend weight {alpha_text!r}: must be in [0, 1]")
    return Blend(other, alpha)


def expand_inputs(items: Sequence[str]) -> list[Path]:
    """Files as given; folders as the audio files inside them (sorted); glob patterns expanded.

    The result keeps the order of ``items`` and holds each file once.
    """
    found: list[Path] = []
    for item in items:
        if not item.strip():  # Path("") is the current folder: never separate it by accident
            raise AudioError(
                f"an input is an empty name ({item!r}; an unset shell variable?): give audio "
                "files, folders or glob patterns"
            )
        if glob.has_magic(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise AudioError(f"{item}: no file matches this pattern")
        else:
            matches = [item]
        for match in matches:
            path = Path(match)
            if path.is_dir():
                inside = sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file()
                    and not p.name.startswith(".")
                    and p.suffix.lower() in AUDIO_EXTENSIONS
                )
                if not inside and not glob.has_magic(item):
                    raise AudioError(
                        f"{path}: folder holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
                    )
                found.extend(inside)
            elif path.exists():
                found.append(path)
            else:
                raise AudioError(f"{path}: no such file")
    if not found:
        raise AudioError(f"no audio files found in {', '.join(items)}")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def class_names(text: str) -> list[str]:
    """``CLASS[,CLASS...]`` (or ``all``): class names, stripped, none empty."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"bad class name in {text!r}: give classes the model knows, e.g. vocals or "
            "vocals,drums (or all)"
        )
    return names


def _name(text: str) -> str:
    try:
        check_output_names([text])
    except OutputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "separate",
        help="separate one source out of songs (by query clip, time range or class)",
        description=(
            "Separate one source out of each INPUT: the part that sounds like the query clips,\n"
            "like a time range of the input itself, or like a class the model knows."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="audio files, folders (the audio files inside) or glob patterns",
    )
    parser.add_argument(
        "--target",
        "--targets",
        dest="targets",
        type=class_names,
        action="extend",
        metavar="CLASS[,CLASS...]",
        help="classes the model knows, e.g. drums or vocals,drums,bass,other; 'all': every "
        "coarse class of the model",
    )
    parser.add_argument(
        "--query",
        nargs="+",
        action="extend",
        metavar="CLIP",
        help="audio clip(s) of the sound to extract, averaged in latent space",
    )
    parser.add_argument(
        "--each",
        action="store_true",
        help="one output per --query clip, named after the clip, instead of their average",
    )
    parser.add_argument(
        "--query-range",
        type=parse_range,
        metavar="RANGE",
        help="a time range of each input used as its own query (see below)",
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="released model folder or bundled model name: 'default' (Spleeter 2-stems in front "
        "of the query model, the best on real music) or 'fast' (the query model alone, about 4x "
        "faster); with --backend onnx, the folder written by `aqsep export-onnx`",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="what runs the networks: PyTorch, or onnxruntime on the CPU with an ONNX export of "
        "the model (pip install 'aqsep[onnx]') (default torch)",
    )
    parser.add_argument(
        "--blend",
        type=parse_blend,
        metavar="OTHER:ALPHA",
        help="slerp the query latent towards OTHER (a class or an audio file) by ALPHA in [0, 1]",
    )
    parser.add_argument(
        "--refine",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="iterative refinement: re-encode the estimate as the query N times (default 0)",
    )
    parser.add_argument(
        "--residual",
        action="store_true",
        help="also write rest.<ext> (the input minus every output)",
    )
    parser.add_argument(
        "--masks",
        choices=MASK_RULES,
        help=f"how the masks of several outputs combine (see below; default {DEFAULT_MASKS} for "
        "several outputs, independent for one and for --each)",
    )
    parser.add_argument(
        "-o",
        "--out",
        default="separated",
        metavar="OUTDIR",
        help="output folder (default: ./separated)",
    )
    parser.add_argument(
        "--name",
        type=_name,
        metavar="NAME",
        help="output file name of --query or --query-range (default 'target'), or of the one "
        "output of a run",
    )
    add_chunk_arguments(parser)
    parser.add_argument(
        "--format", choices=("wav", "flac"), default="wav", help="output format (default wav)"
    )
    parser.add_argument(
        "--bits",
        choices=("16", "24", "32f"),
        default="16",
        help="output sample format: 16 or 24-bit integer, or 32-bit float (default 16)",
    )
    parser.add_argument(
        "--force", action="store_true", help="redo tracks whose outputs already exist"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summaries")
    parser.set_defaults(func=run)


class _ProgressBar:
    """One tqdm bar per track, counting chunks over every pass (refinement passes included)."""

    def __init__(self, track: str, passes: int, enabled: bool) -> None:
        self.track, self.passes, self.enabled = track, passes, enabled
        self.bar: tqdm | None = None
        self.offset = self.last = 0
        self.seconds = 0.0

    def __call__(self, info: dict) -> None:
        done, total = int(info["done"]), int(info["total"])
        self.seconds = max(self.seconds, float(info.get("seconds", 0.0)))
        if done <= self.last:  # a new pass over the track (done grows within a pass)
            self.offset += self.last
        self.last = done
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=total * self.passes,
                desc=self.track,
                unit="chunk",
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self.bar.n = self.offset + done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _other_query(other: str) -> Query:
    """The query of ``--blend OTHER:ALPHA``: an audio file, or else a class of the model."""
    path = Path(other)
    if path.is_file():
        return Query(clips=(path,))
    if path.is_dir():
        raise AudioError(f"--blend: {other} is a folder: give an audio file or a class name")
    if path.suffix.lower() in AUDIO_EXTENSIONS or "/" in other or "\\" in other:
        raise AudioError(f"--blend: {other}: no such file")
    return Query(name=other)


@dataclass(frozen=True)
class Output:
    """One output of a run: its file name and where its latent comes from."""

    name: str
    kind: str  # "class", "query" (the clips averaged), "clip" (--each), "range"
    source: str | tuple[Path, ...] = ()

    def query(self, args: argparse.Namespace) -> Query:
        """What the output asks the separator for (without the slide and the refinement)."""
        if self.kind == "class":
            return Query(name=str(self.source))
        if self.kind == "range":
            return Query(start=args.query_range.start, end=args.query_range.end)
        return Query(clips=tuple(self.source))


def plan_outputs(args: argparse.Namespace, coarse: Sequence[str]) -> list[Output]:
    """The outputs the arguments ask for, in order: classes, the query, each clip, the range.

    ``coarse``: the model's coarse classes, for ``all``.
    """
    if not (args.targets or args.query or args.query_range):
        raise QueryError(
            "nothing to separate: give --target(s) CLASS[,CLASS...], --query CLIP... or "
            "--query-range RANGE"
        )
    if args.each and not args.query:
        raise QueryError("--each gives one output per --query clip: give the clips with --query")
    outputs: list[Output] = []
    for cls in args.targets or []:  # a class named twice (or also by "all") gives one output
        wanted = list(coarse) if cls.lower() == "all" else [cls]
        if cls.lower() == "all" and not coarse:
            raise QueryError("--targets all: this model stores no coarse class")
        known = {o.name for o in outputs}
        outputs.extend(Output(c.lower(), "class", c) for c in wanted if c.lower() not in known)
    clips = tuple(Path(q) for q in args.query or [])
    averaged = bool(clips) and not args.each
    if args.each:
        outputs.extend(Output(track_outputs(c, ".")[0], "clip", (c,)) for c in clips)
    elif averaged:
        outputs.append(Output(args.name or "target", "query", clips))
    if args.query_range:
        outputs.append(Output("range" if averaged else args.name or "target", "range"))
    if args.name and not any(o.name == args.name for o in outputs):
        if len(outputs) > 1:
            raise OutputError(
                "--name names the output of --query or --query-range; classes and --each clips "
                "give their outputs their own names"
            )
        outputs = [Output(args.name, outputs[0].kind, outputs[0].source)]
    seen: dict[str, Output] = {}
    for out in outputs:
        if out.name.lower() in seen:
            first = seen[out.name.lower()]
            how = "rename one of the clips" if args.each else "rename a clip, or use --name"
            raise OutputError(
                f"two outputs would be written to {out.name}.<ext> ({_what(first)} and "
                f"{_what(out)}); {how}"
            )
        seen[out.name.lower()] = out
    if args.residual and "rest" in seen:
        raise OutputError(
            f"the output name 'rest' is taken by --residual ({_what(seen['rest'])}); "
            "choose another name"
        )
    return outputs


def _what(out: Output) -> str:
    if out.kind == "class":
        return f"class {out.source}"
    if out.kind == "clip":
        return f"clip {out.source[0]}"
    return "--query-range" if out.kind == "range" else "--query"


def run(args: argparse.Namespace) -> int:
    ext, debug = args.format, getattr(args, "debug", False)
    output_format(ext, args.bits)  # before any work: FLAC cannot hold float samples
    inputs = expand_inputs(args.inputs)
    tracks: dict[str, Path] = {}
    for path in inputs:
        track, _ = track_outputs(path, args.out, ext=ext)
        if track in tracks:
            raise OutputError(
                f"{tracks[track]} and {path} would both be written to {Path(args.out) / track}; "
                "rename one or separate them into different --out folders"
            )
        tracks[track] = path
    if not (args.targets or args.query or args.query_range):
        plan_outputs(args, [])  # says what is missing, before the model loads

    try:
        sep = Separator(args.model, backend=args.backend, **chunk_options(args))
    except ModelError as err:
        if args.model is None:  # the bundled model: say how to give another
            raise ModelError(f"{err} (--model PATH)") from None
        raise
    outputs = plan_outputs(args, sep.coarse_classes)
    names = [o.name for o in outputs]
    try:  # --each's clips are alternatives to compare, not parts of the song
        masks = mask_rule(
            args.masks or ("independent" if args.each else None), len(outputs), args.residual
        )
    except SettingError as err:
        raise SettingError(f"--masks {args.masks}: {err}") from None
    # the queries that are the same for every track are made once (a range is each track's own)
    other = _other_query(args.blend.other) if args.blend else None
    if other is not None:
        other = Query(latent=sep.latent_of(other))
    queries = {}
    for out in outputs:
        query = out.query(args)
        if query.kind != "range":
            query = Query(latent=sep.latent_of(query))
        queries[out.name] = replace(
            query,
            towards=other,
            alpha=args.blend.alpha if args.blend else 0.0,
            refine=args.refine,
        )

    # every file this run reads, so that no track's output replaces one (another track's input
    # included, which may be read after that output is written); refused before any work
    read = [*tracks.values(), *(c for o in outputs if o.kind != "class" for c in o.source)]
    if args.blend and Path(args.blend.other).is_file():
        read.append(Path(args.blend.other))
    write = dict(residual=args.residual, ext=ext, bits=args.bits, force=args.force, protect=read)
    planned = {track: file_plan(path, args.out, names, **write) for track, path in tracks.items()}

    failed = 0
    for track, path in tracks.items():
        plan = planned[track]
        folder = plan.outputs[names[0]].parent
        if plan.skipped:
            if not args.quiet:
                print(
                    f"{track}: skipped, {', '.join(p.name for p in plan.outputs.values())} "
                    f"already in {folder} (--force redoes it)"
                )
            continue
        bar = _ProgressBar(track, passes=1 + args.refine * len(outputs), enabled=not args.quiet)
        began = time.perf_counter()
        try:
            result = sep.separate_file(path, args.out, queries, masks=masks, progress=bar, **write)
        except AqsepError as err:
            bar.close()  # before the message, which would otherwise land on the bar's line
            if len(tracks) == 1:
                raise
            if debug:
                traceback.print_exc()
            print(f"aqsep: error: {err}", file=sys.stderr)
            failed += 1
            continue
        finally:
            bar.close()
        if not args.quiet:
            elapsed = time.perf_counter() - began
            speed = (
                f", {bar.seconds / elapsed:.1f}x real time" if elapsed > 0 and bar.seconds else ""
            )
            clipped = f"; {result.clipped} samples clipped to [-1, 1]" if result.clipped else ""
            written = ", ".join(p.name for p in result.outputs.values())
            print(
                f"{track}: {written} -> {folder} "
                f"({bar.seconds:.1f} s of audio in {elapsed:.1f} s{speed}){clipped}"
            )
    if failed:
        return QueryError.exit_code
    return 0
